"""The reconstruction network: a small UNet for 2D slices or 3D volumes.

Input (N, in_channels, *spatial) with every spatial size divisible by ``2 ** (len(channels) - 1)``;
output (N, 1, *spatial), linear (a reconstructed, normalised intensity).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _OneDNNAtInference:
    """On CPU without autograd, always run oneDNN's convolution. PyTorch's kernel heuristic counts only the first
    two spatial sides, so a single volume with few channels goes to its reference kernel: flair-3d ran 2× slower
    (``Testing/benchmarks/pass_roofline.py``). Training keeps PyTorch's choice."""

    def _conv_forward(self, x, weight, bias):
        if x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled() \
                and torch.backends.mkldnn.is_available():
            return torch.mkldnn_convolution(x, weight, bias, self.padding, self.stride, self.dilation, self.groups)
        return super()._conv_forward(x, weight, bias)


class Conv2d(_OneDNNAtInference, nn.Conv2d):
    pass


class Conv3d(_OneDNNAtInference, nn.Conv3d):
    pass


def _conv_block(dims: int, cin: int, cout: int) -> nn.Sequential:
    conv = Conv2d if dims == 2 else Conv3d
    # GroupNorm rather than BatchNorm: inference batches (one volume's slices) are unlike training batches.
    return nn.Sequential(
        conv(cin, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU(),
        conv(cout, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU(),
    )


class UNet(nn.Module):
    """Encoder-decoder; ``channels`` lists the width of each resolution level.

    ``skips=False`` drops the skip connections: everything must pass the coarsest level, which makes it the
    compressing autoencoder (AE) baseline on the same backbone.
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...] = (16, 32, 64, 128), spatial_dims: int = 2,
                 skips: bool = True):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError("spatial_dims must be 2 or 3")
        self.spatial_dims, self.skips = spatial_dims, skips
        widths = (in_channels, *channels)
        self.down = nn.ModuleList(_conv_block(spatial_dims, a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.up = nn.ModuleList(
            _conv_block(spatial_dims, channels[i] * skips + channels[i + 1], channels[i])
            for i in range(len(channels) - 1)
        )
        self.head = (Conv2d if spatial_dims == 2 else Conv3d)(channels[0], 1, 1)
        self.levels = len(channels)

    @property
    def divisor(self) -> int:
        """Every spatial size of the input must be a multiple of this."""
        return 2 ** (self.levels - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.max_pool2d if self.spatial_dims == 2 else F.max_pool3d
        features = []
        for level, block in enumerate(self.down):
            x = block(pool(x, 2) if level else x)
            features.append(x)
        for level in reversed(range(self.levels - 1)):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self.up[level](torch.cat([x, features[level]], dim=1) if self.skips else x)
        return self.head(x)
