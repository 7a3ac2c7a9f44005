"""Processing algorithm ``hypernet:trainhypernet``: train a HyperNet model on a pair of images."""

from __future__ import annotations

import os
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterFileDestination,
)

from .base import (
    MODEL_FILTER,
    HyperNetAlgorithm,
    Job,
    Output,
    QgisFeedback,
    check_band_choice,
    check_device,
    check_mask,
    check_pair,
    layer_path,
    parse_band_list,
)


class TrainHyperNetAlgorithm(HyperNetAlgorithm):
    """Self-supervised training of HyperNet on two dates; saves a model file for Detect Change."""

    ALG_ID = "trainhypernet"
    DISPLAY = "Train HyperNet"
    GROUP = "HyperNet (deep learning)"
    GROUP_ID = "hypernetdeep"
    ICON = "train.svg"
    SHORT = "Trains HyperNet on two dates without labels and saves the model for Detect Change."
    TAGS = ("hypernet", "deep learning", "self-supervised", "training", "model", "torch")
    ANCHOR = "train-hypernet"
    HELP = (
        "<p>Trains a <b>HyperNet</b> network (Hu, Wu and Zhang, IEEE TGRS 2022) on two images of the same place "
        "taken at two dates. No labels are needed: the network learns from pixels that a quick classic method "
        "(change vector analysis) finds least changed, or from your own <i>known unchanged</i> mask.</p>"
        "<p><b>Inputs</b>: <i>T1</i> and <i>T2</i>, multi- or hyperspectral rasters on the same grid (size, "
        "pixel size, CRS) with the same bands; optionally a band list (e.g. <code>1-100,120-200</code>) and a mask "
        "of pixels known to be unchanged (non-zero).</p>"
        "<p><b>Outputs</b>: a model file (<code>.hypernet</code>, weights plus how it was trained) to use in "
        "<i>Detect Change</i> on this pair or on other pairs from the same sensor and bands; the final training "
        "loss; optionally an HTML training report.</p>"
        "<p><b>Time</b>: about a minute for a few hundred thousand pixels of ~200 bands on a recent CPU with the "
        "default schedule (20 epochs); several times faster on a CUDA GPU (DEVICE=auto picks it). The log says "
        "which device ran. Cancelling stops within one epoch and writes nothing.</p>"
        "<p>Advanced: <i>paper</i> schedule = 200 full-image steps as published; memory budget bounds the tile "
        "and batch sizes.</p>"
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802
        self.add_pair()
        self.add_bands()
        self.add_training(advanced=False)
        self.add_device()
        self.add_training_advanced()
        self._add(
            QgsProcessingParameterFileDestination("OUTPUT_MODEL", "Model file", MODEL_FILTER),
            help_text="Where to save the model. Left as a temporary file, it is saved next to T1 as "
            "<T1>_<T2>.hypernet.",
        )
        self.add_report("Training report (HTML)")
        self.addOutput(QgsProcessingOutputNumber("FINAL_LOSS", "Final training loss"))
        self.addOutput(QgsProcessingOutputString("DEVICE_USED", "Device that ran the training"))
        self.add_align()
        self.add_band_choice()

    def resolve(self, parameters: dict, context: QgsProcessingContext) -> Job:
        t1 = layer_path(self, parameters, "INPUT_T1", context, "Image T1")
        t2 = layer_path(self, parameters, "INPUT_T2", context, "Image T2")
        bands = parse_band_list(self.parameterAsString(parameters, "BANDS", context))
        aligning = {**self.align_values(parameters, context), **self.band_choice_values(parameters, context)}
        info = check_pair(t1, t2, bands, min_bands=2, align=aligning["align"])
        check_band_choice(t1, t2, bands, aligning)
        mask = layer_path(self, parameters, "UNCHANGED_MASK", context, "Known unchanged pixels", optional=True)
        if mask:
            check_mask(mask, info)
        config = self.training_values(parameters, context)
        check_device(config["device"])
        job = Job(
            {"t1": t1, "t2": t2, "bands": bands, "mask": mask, "config": config, **aligning}, inputs=[t1, t2, mask]
        )
        self.declare_output(job, parameters, context, "OUTPUT_MODEL", "model")
        self.declare_output(job, parameters, context, "OUTPUT_REPORT", "report")
        return job

    def temporary_path(self, out: Output, job: Job) -> str | None:
        """A model is worth keeping: "temporary" saves it next to T1 as <T1>_<T2>.hypernet (never overwriting a
        file; Processing's temporary folder only when T1's folder is not writable)."""
        if out.key != "model":
            return None
        folder = os.path.dirname(job["t1"])
        stem = f"{os.path.splitext(os.path.basename(job['t1']))[0]}_{os.path.splitext(os.path.basename(job['t2']))[0]}"
        for i in range(1, 1000):
            candidate = os.path.join(folder, f"{stem}{'' if i == 1 else f'_{i}'}.hypernet")
            if not os.path.exists(candidate):
                break
        else:
            return None
        return candidate if os.access(folder, os.W_OK) else None

    def run_job(self, job: Job, feedback: QgisFeedback) -> dict[str, Any]:
        """The engine's ``train`` in a child process (engine_process.py): core.pipeline.train_files, as the CLI."""
        from ..engine_process import train_argv

        summary = self.run_engine(train_argv(job.values), feedback)
        final_loss = float(summary["final_loss"])
        feedback.info(
            f"Saved the model to {job['model']} (final loss {final_loss:.6g}, "
            f"{summary['seconds']:.1f} s on {summary['device']})."
        )
        return {
            "OUTPUT_MODEL": job["model"],
            "FINAL_LOSS": final_loss,
            "DEVICE_USED": summary["device"],
            "OUTPUT_REPORT": job["report"],
        }
