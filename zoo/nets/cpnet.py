"""A Cellpose-style residual U-Net that predicts flows, cell probability and a style vector.

Layout (for ``channels=(2, 32, 64, 128, 256)``, about 6.6M parameters, Cellpose's width):

- encoder: 4 levels of residual blocks (two residual pairs of pre-activation
  BN → ReLU → 3×3 conv each), 2×2 max-pooling between levels;
- style: the global average pool of the deepest feature map, L2-normalised;
- decoder: 4 residual up blocks; each adds the skip connection of its level and a
  learned linear projection of the style vector to its features, so the style
  conditions every upsampling block; nearest-neighbour ×2 upsampling between them;
- head: BN → ReLU → 1×1 conv to three maps: flow Y, flow X, cell-probability logit.

Spatial sizes must be divisible by ``NetConfig.divisor`` (8 for 4 levels); the
predictor pads to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import InvalidParamsError


@dataclass(frozen=True)
class NetConfig:
    """Architecture hyper-parameters of ``CPNet``.

    Attributes:
        channels: input channels followed by the feature width of each encoder level.
        n_out: output maps (flow Y, flow X, cell-probability logit).
        kernel_size: spatial size of the convolutions.
    """

    channels: tuple[int, ...] = (2, 32, 64, 128, 256)
    n_out: int = 3
    kernel_size: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.channels) < 3 or min(self.channels) < 1:
            raise InvalidParamsError(f"channels needs >= 3 positive entries, got {self.channels}")
        if self.kernel_size % 2 != 1:
            raise InvalidParamsError(f"kernel_size must be odd, got {self.kernel_size}")

    @property
    def in_channels(self) -> int:
        return self.channels[0]

    @property
    def style_dim(self) -> int:
        return self.channels[-1]

    @property
    def divisor(self) -> int:
        """Spatial sizes must be multiples of this (one halving per level after the first)."""
        return 2 ** (len(self.channels) - 2)

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(c_in: int, c_out: int, size: int) -> nn.Sequential:
    """Pre-activation convolution: BN → ReLU → conv."""
    return nn.Sequential(
        nn.BatchNorm2d(c_in, eps=1e-5, momentum=0.05),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, size, padding=size // 2),
    )


def _projection(c_in: int, c_out: int) -> nn.Sequential:
    """Shortcut projection: BN → 1×1 conv (no activation)."""
    return nn.Sequential(nn.BatchNorm2d(c_in, eps=1e-5, momentum=0.05), nn.Conv2d(c_in, c_out, 1))


class ResDown(nn.Module):
    """Encoder block: two residual pairs of pre-activation convolutions."""

    def __init__(self, c_in: int, c_out: int, size: int) -> None:
        super().__init__()
        self.proj = _projection(c_in, c_out)
        self.convs = nn.ModuleList(
            [_conv(c_in if i == 0 else c_out, c_out, size) for i in range(4)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x) + self.convs[1](self.convs[0](x))
        return x + self.convs[3](self.convs[2](x))


class StyleConv(nn.Module):
    """Pre-activation convolution whose input is shifted by a projection of the style."""

    def __init__(self, c_in: int, c_out: int, style_dim: int, size: int) -> None:
        super().__init__()
        self.style = nn.Linear(style_dim, c_in)
        self.conv = _conv(c_in, c_out, size)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.conv(x + self.style(style)[:, :, None, None])


class ResUp(nn.Module):
    """Decoder block: adds the skip connection and conditions on the style vector."""

    def __init__(self, c_in: int, c_out: int, style_dim: int, size: int) -> None:
        super().__init__()
        self.proj = _projection(c_in, c_out)
        self.conv0 = _conv(c_in, c_out, size)
        self.styled = nn.ModuleList([StyleConv(c_out, c_out, style_dim, size) for _ in range(3)])

    def forward(self, x: torch.Tensor, skip: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        x = self.proj(x) + self.styled[0](self.conv0(x) + skip, style)
        return x + self.styled[2](self.styled[1](x, style), style)


class CPNet(nn.Module):
    """Residual U-Net returning ``(outputs, style)``.

    ``forward(x)`` takes ``x`` of shape ``(B, C_in, H, W)`` float32, H and W multiples
    of ``config.divisor``, and returns:

    - ``outputs``: ``(B, 3, H, W)``: flow Y, flow X, cell-probability logit;
    - ``style``: ``(B, style_dim)``, L2-normalised.
    """

    def __init__(self, config: NetConfig | None = None) -> None:
        super().__init__()
        self.config = config or NetConfig()
        widths, size = self.config.channels, self.config.kernel_size
        style_dim = self.config.style_dim
        self.down = nn.ModuleList(
            [ResDown(widths[i], widths[i + 1], size) for i in range(len(widths) - 1)]
        )
        ups = [widths[-1], *reversed(widths[1:])]  # deepest block keeps its width
        self.up = nn.ModuleList(
            [ResUp(ups[i], ups[i + 1], style_dim, size) for i in range(len(ups) - 1)]
        )
        self.head = _conv(widths[1], self.config.n_out, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of every encoder level, shallow to deep."""
        features = []
        for level, block in enumerate(self.down):
            if level > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            features.append(x)
        return features

    @staticmethod
    def style_of(deepest: torch.Tensor) -> torch.Tensor:
        """Global average pool of the deepest map, L2-normalised: ``(B, style_dim)``."""
        style = deepest.mean(dim=(-2, -1))
        return style / torch.sqrt((style**2).sum(dim=1, keepdim=True) + 1e-12)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encode(x)
        style = self.style_of(features[-1])
        y = features[-1]
        for i, block in enumerate(self.up):
            skip = features[-1 - i]
            if i > 0:
                y = F.interpolate(y, scale_factor=2.0, mode="nearest")
            y = block(y, skip, style)
        return self.head(y), style


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
