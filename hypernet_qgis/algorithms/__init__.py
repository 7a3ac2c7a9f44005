"""The HyperNet Processing algorithms (one per module, all built on base.HyperNetAlgorithm)."""

from __future__ import annotations


def all_algorithms() -> list:
    """Fresh instances of every algorithm of the provider."""
    from .classic import ClassicChangeAlgorithm
    from .detect import DetectChangeAlgorithm
    from .evaluate import EvaluateChangeAlgorithm
    from .inspect_model import InspectModelAlgorithm
    from .series import DetectSeriesAlgorithm
    from .setup_engine import SetupEngineAlgorithm
    from .train import TrainHyperNetAlgorithm

    return [
        TrainHyperNetAlgorithm(),
        DetectChangeAlgorithm(),
        EvaluateChangeAlgorithm(),
        ClassicChangeAlgorithm(),
        InspectModelAlgorithm(),
        DetectSeriesAlgorithm(),
        SetupEngineAlgorithm(),
    ]
