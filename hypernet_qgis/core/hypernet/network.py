"""HyperNet (Hu, Wu, Zhang, IEEE TGRS 2022): the paper's network, number for number.

Two branches read the same image:

* spatial branch: three residual spatial attention blocks (RSAB: 3x3 conv, BN, CBAM channel + spatial attention,
  residual, ReLU), then 5x5 average pooling (stride 1);
* spectral branch: three residual channel attention blocks (RCAB: 1x1 conv, BN, channel attention; residual + ReLU
  when the widths match).

``fuse_spatial`` (1x1 conv + BN) and ``fuse_spectral`` (3x3 conv + BN) map each branch, and their concatenation
``[spatial, spectral]`` is the fused feature used for change detection. The projector and predictor (SimSiam
style) are only used by the training loss.

Channel attention pools avg and max over the *whole* image, which is not local. Every channel attention module
therefore accepts an optional :class:`Pooling` context that can either supply those pooled statistics (computed
elsewhere, e.g. in streaming passes over tiles, see ``tiling.py``) or record the pre-attention features.
The parity with the authors' published code is proved by ``tests/test_network_parity.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

#: Channel-attention reduction ratio of the paper (CBAM's 16).
REDUCTION = 16
#: The smallest default branch width (so that width // REDUCTION >= 1).
MIN_WIDTH = 16


def default_widths(bands: int, width: int | None = None) -> tuple[int, int, int]:
    """(branch width, projector width, predictor hidden width) for ``bands`` input bands.

    The paper's rule: branch width about half the band count, at least 16; projector width twice the branch width
    (the fused feature's width), predictor hidden width equal to the branch width. An explicit ``width`` wins.
    """
    if bands < 1:
        raise ValueError(f"bands must be >= 1, got {bands}")
    if width is None:
        width = max(MIN_WIDTH, (bands + 1) // 2)
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    return width, 2 * width, width


def _hidden(channels: int) -> int:
    """Hidden width of the channel-attention MLP: channels // 16, at least 1 (small widths)."""
    return max(1, channels // REDUCTION)


_Part = TypeVar("_Part", bound=nn.Module)


def part(block: nn.Module, index: int, kind: type[_Part]) -> _Part:
    """Layer ``index`` of the ``nn.Sequential`` ``block``, checked to be a ``kind`` (the fuse blocks, shortcuts)."""
    layer = block[index] if isinstance(block, nn.Sequential) else None
    if not isinstance(layer, kind):
        raise TypeError(f"expected a {kind.__name__} at {index} of {type(block).__name__}")
    return layer


def _kernel(block: nn.Module) -> int:
    """Kernel size of the convolution that opens ``block``."""
    return int(part(block, 0, nn.Conv2d).kernel_size[0])


class _StopForward(Exception):
    """Raised inside a branch once every requested pre-attention feature has been recorded."""


@dataclass
class Pooling:
    """Global pooled statistics for the channel attention modules, by module key (e.g. ``"rsab2"``).

    ``given[key] = (avg, max)``, each (N, C, 1, 1): used instead of pooling the tensor the module sees.
    ``record``: keys whose pre-attention input is stored in ``recorded[key]``; when all are recorded the branch
    stops early (the caller catches it through :func:`run_until_recorded`).
    """

    given: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    record: set[str] = field(default_factory=set)
    recorded: dict[str, torch.Tensor] = field(default_factory=dict)
    stop_when_recorded: bool = True


class ChannelAttention(nn.Module):
    """CBAM channel attention: sigmoid(MLP(avgpool x) + MLP(maxpool x)) * x, pooled over the whole image."""

    def __init__(self, channels: int, key: str = "") -> None:
        super().__init__()
        hidden = _hidden(channels)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)
        self.key = key

    def weights(self, avg: torch.Tensor, mx: torch.Tensor) -> torch.Tensor:
        """Per-channel attention weights (N, C, 1, 1) from the pooled avg and max."""
        return torch.sigmoid(self.fc2(F.relu(self.fc1(avg))) + self.fc2(F.relu(self.fc1(mx))))

    def forward(self, x: torch.Tensor, pooling: Pooling | None = None) -> torch.Tensor:
        if pooling is not None:
            if self.key in pooling.record:
                pooling.recorded[self.key] = x
                if pooling.stop_when_recorded and pooling.record <= pooling.recorded.keys():
                    raise _StopForward
            if self.key in pooling.given:
                avg, mx = pooling.given[self.key]
                return x * self.weights(avg.to(x), mx.to(x))
        avg = x.mean(dim=(2, 3), keepdim=True)
        mx = x.amax(dim=(2, 3), keepdim=True)
        return x * self.weights(avg, mx)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: sigmoid(conv7x7([channel mean, channel max])) * x. Local (radius 3)."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    @property
    def radius(self) -> int:
        return self.conv.kernel_size[0] // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(maps))


class BoxMean(nn.Module):
    """Mean over a k x k window, stride 1, zero padding counted (``nn.AvgPool2d(k, 1, k // 2)`` as published).

    Computed as a depthwise convolution with a constant 1/k^2 kernel: the same numbers up to float rounding,
    about 6x faster than ``avg_pool2d`` forward + backward on the CPU (BENCHMARKS.md). No parameters.
    """

    def __init__(self, kernel_size: int = 5) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, channels = self.kernel_size, x.shape[1]
        kernel = torch.full((channels, 1, k, k), 1.0 / (k * k), dtype=x.dtype, device=x.device)
        return F.conv2d(x, kernel, padding=k // 2, groups=channels)


class RSAB(nn.Module):
    """Residual spatial attention block: conv3x3 -> BN -> channel att. -> spatial att. -> + residual -> ReLU."""

    def __init__(self, in_channels: int, channels: int, key: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.ca = ChannelAttention(channels, key)
        self.sa = SpatialAttention(7)
        self.shortcut: nn.Module
        if in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        else:
            self.shortcut = nn.Identity()

    @property
    def radius(self) -> int:
        """How far (pixels) an output depends on the input, given the pooled statistics."""
        return self.conv.kernel_size[0] // 2 + self.sa.radius

    def forward(self, x: torch.Tensor, pooling: Pooling | None = None) -> torch.Tensor:
        out = self.sa(self.ca(self.bn(self.conv(x)), pooling))
        return F.relu(out + self.shortcut(x))


class RCAB(nn.Module):
    """Residual channel attention block: conv1x1 -> BN -> channel attention (-> + input -> ReLU if widths match)."""

    def __init__(self, in_channels: int, channels: int, key: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.ca = ChannelAttention(channels, key)
        self.residual = in_channels == channels

    def forward(self, x: torch.Tensor, pooling: Pooling | None = None) -> torch.Tensor:
        out = self.ca(self.bn(self.conv(x)), pooling)
        return F.relu(x + out) if self.residual else out


class HyperNet(nn.Module):
    """The paper's HyperNet. ``forward(x)`` returns the fused features (N, 2*width, H, W)."""

    #: Keys of the channel-attention modules, in the order their pooled statistics can be computed.
    SPATIAL_KEYS = ("rsab1", "rsab2", "rsab3")
    SPECTRAL_KEYS = ("rcab1", "rcab2", "rcab3")

    def __init__(self, bands: int, width: int, proj_width: int | None = None, pred_hidden: int | None = None) -> None:
        super().__init__()
        proj_width = 2 * width if proj_width is None else proj_width
        pred_hidden = width if pred_hidden is None else pred_hidden
        self.bands, self.width, self.proj_width, self.pred_hidden = bands, width, proj_width, pred_hidden
        self.rsab1 = RSAB(bands, width, "rsab1")
        self.rsab2 = RSAB(width, width, "rsab2")
        self.rsab3 = RSAB(width, width, "rsab3")
        self.pool = BoxMean(5)  # the published nn.AvgPool2d(5, 1, 2) (count_include_pad=True), faster
        self.rcab1 = RCAB(bands, width, "rcab1")
        self.rcab2 = RCAB(width, width, "rcab2")
        self.rcab3 = RCAB(width, width, "rcab3")
        self.fuse_spatial = nn.Sequential(nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width))
        self.fuse_spectral = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.projector = nn.Sequential(
            nn.Conv2d(2 * width, proj_width, 1, bias=False),
            nn.BatchNorm2d(proj_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(proj_width, proj_width, 1, bias=False),
            nn.BatchNorm2d(proj_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(proj_width, proj_width, 1, bias=True),
            nn.BatchNorm2d(proj_width, affine=False),
        )
        self.predictor = nn.Sequential(
            nn.Conv2d(proj_width, pred_hidden, 1, bias=False),
            nn.BatchNorm2d(pred_hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(pred_hidden, proj_width, 1, bias=False),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The published initialisation: Kaiming-normal (fan_in, ReLU gain) convs, zero biases, BN 1/0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()

    # --- the backbone ---------------------------------------------------------------------------------------
    def spatial_branch(self, x: torch.Tensor, pooling: Pooling | None = None) -> torch.Tensor:
        """Three RSABs then 5x5 average pooling: (N, width, H, W)."""
        h = self.rsab3(self.rsab2(self.rsab1(x, pooling), pooling), pooling)
        return self.pool(h)

    def spectral_branch(self, x: torch.Tensor, pooling: Pooling | None = None) -> torch.Tensor:
        """Three RCABs: (N, width, H, W)."""
        return self.rcab3(self.rcab2(self.rcab1(x, pooling), pooling), pooling)

    def fuse(self, spatial: torch.Tensor, spectral: torch.Tensor) -> torch.Tensor:
        """Concatenate [fuse_spatial(spatial), fuse_spectral(spectral)]: the fused feature (N, 2*width, H, W)."""
        return torch.cat([self.fuse_spatial(spatial), self.fuse_spectral(spectral)], dim=1)

    def forward(self, x: torch.Tensor, pooling: Pooling | None = None) -> torch.Tensor:
        return self.fuse(self.spatial_branch(x, pooling), self.spectral_branch(x, pooling))

    # --- training heads -------------------------------------------------------------------------------------
    def project(self, f: torch.Tensor) -> torch.Tensor:
        """Projector z = g(f) (runs on every pixel)."""
        return self.projector(f)

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """Predictor p = h(z)."""
        return self.predictor(z)

    def features_and_projections(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f, z, p) for one date in one forward pass (BN sees this date's own batch in training mode)."""
        f = self(x)
        z = self.project(f)
        return f, z, self.predict(z)

    # --- geometry for exact tiling --------------------------------------------------------------------------
    def attention_modules(self) -> dict[str, ChannelAttention]:
        """The channel attention modules by key."""
        return {k: getattr(self, k).ca for k in self.SPATIAL_KEYS + self.SPECTRAL_KEYS}

    def halo(self, key: str | None = None) -> int:
        """Receptive-field radius (pixels) of the fused features, or of the pre-attention input of ``key``.

        Exact given the pooled channel statistics: 3x3 convs (1) + 7x7 spatial attention (3) per RSAB, 5x5 pool (2);
        fuse_spectral's 3x3 conv (1) on the spectral branch, whose other layers are 1x1.
        """
        rsabs = [self.rsab1, self.rsab2, self.rsab3]
        if key is None:
            spatial = sum(b.radius for b in rsabs) + self.pool.kernel_size // 2
            spectral = _kernel(self.fuse_spectral) // 2
            return max(spatial + _kernel(self.fuse_spatial) // 2, spectral)
        if key in self.SPECTRAL_KEYS:
            return 0
        k = self.SPATIAL_KEYS.index(key)
        return sum(b.radius for b in rsabs[:k]) + rsabs[k].conv.kernel_size[0] // 2


def run_until_recorded(branch, x: torch.Tensor, pooling: Pooling) -> dict[str, torch.Tensor]:
    """Run ``branch(x, pooling)`` until every key in ``pooling.record`` is recorded; return the recorded inputs."""
    try:
        branch(x, pooling)
    except _StopForward:
        pass
    missing = pooling.record - pooling.recorded.keys()
    if missing:
        raise RuntimeError(f"branch never reached attention module(s) {sorted(missing)}")
    return pooling.recorded


# --- names of the authors' published code (the parity fixture's keys) ---------------------------------------
_BLOCK_RULES: list[tuple[str, str]] = [
    # spatial branch: conv1/conv2/conv3 .0.* -> rsab1/2/3.*
    (r"^conv([123])\.0\.conv1\.", r"rsab\1.conv."),
    (r"^conv([123])\.0\.bn1\.", r"rsab\1.bn."),
    (r"^conv([123])\.0\.cbam\.ca\.", r"rsab\1.ca."),
    (r"^conv([123])\.0\.cbam\.sa\.conv1\.", r"rsab\1.sa.conv."),
    (r"^conv([123])\.0\.downsample\.", r"rsab\1.shortcut."),
    # spectral branch: fc1/fc2/fc3 -> rcab1/2/3
    (r"^fc([123])\.fc\.0\.", r"rcab\1.conv."),
    (r"^fc([123])\.fc\.1\.", r"rcab\1.bn."),
    (r"^fc([123])\.ca\.", r"rcab\1.ca."),
    (r"^fuse1\.", "fuse_spatial."),
    (r"^fuse2\.", "fuse_spectral."),
    (r"^proj\.proj\.", "projector."),
    (r"^pred\.pred\.", "predictor."),
]

#: Reference (authors') name prefix -> our name prefix, as regular-expression rewrite rules (documentation and
#: :func:`reference_to_ours`).
REFERENCE_NAME_MAP: dict[str, str] = dict(_BLOCK_RULES)


def reference_to_ours(name: str) -> str:
    """Map a parameter/buffer name of the authors' code (e.g. ``conv2.0.cbam.sa.conv1.weight``) to ours."""
    for pattern, repl in _BLOCK_RULES:
        new, n = re.subn(pattern, repl, name)
        if n:
            return new
    raise KeyError(f"no mapping for reference name {name!r}")
