"""Running a bundle's network(s) on a whole volume: every slice (2D) or the volume (3D) batched, no slice loop."""
from __future__ import annotations

import torch

from .bundle import ModelBundle
from .frequency import high_frequency


def network_input(role: str, x: torch.Tensor, x_f: torch.Tensor | None, mask: torch.Tensor,
                  noise: torch.Tensor) -> torch.Tensor:
    """The input tensor a network of ``role`` expects, (N, C, *spatial).

    ``x``, ``x_f``, ``noise``: (N, 1, *spatial); ``mask``: same shape, bool, True = hidden. The masked image is
    ``x̂ = ε·m + x·(1−m)``; the ``first`` network sees ``x_f`` alone, a baseline the image alone (a DAE's noise is
    added in training only); ``x_f`` is None for a spatial-only ablation's masked network.
    """
    if role == "first":
        return x_f
    if role in ("autoencoder", "denoiser"):
        return x
    hidden = torch.where(mask, noise, x)
    return hidden if x_f is None else torch.cat([hidden, x_f], dim=1)


# The largest seed: ``seed · 1_000_003 + index`` must stay within the generator's 64-bit seed for any index.
MAX_SEED = 2**32 - 1


def iteration_noise(shape: tuple[int, ...], seed: int, index: int) -> torch.Tensor:
    """The noise ε under the mask of iteration ``index``: drawn from (seed, index), so a run repeats exactly, also
    after stepping back and forth. ``seed``: 0 … :data:`MAX_SEED`."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + index))


# Slices per network call for a 2D bundle: small batches keep each layer's activations in cache (8 slices of 96²
# at 16 channels are 4.7 MB); 64 at once ran 2× slower (``Testing/benchmarks/pass_roofline.py``).
CHUNK_SLICES = 8


class VolumeReconstructor:
    """Reconstructs one prepared volume under any mask; ``x_f`` is computed once.

    ``image``, ``brain``: (z, y, x) on the model grid. A 2D bundle runs the slices that contain brain, in chunks of
    ``chunk`` slices (for speed, not a per-slice loop); a 3D bundle runs the volume at once.

    2D activations are channels-last, which oneDNN runs 20 % faster with the same masks and τ_stop on the benchmark
    scans. 3D ones stay contiguous: channels-last 3D was 27 % faster per pass but moved flair-3d's τ_stop on BraTS
    pat0006 by 5e-4 (relative) and 31 voxels of its mask, since the shrink path amplifies rounding.
    """

    def __init__(self, bundle: ModelBundle, image: torch.Tensor, brain: torch.Tensor, device: torch.device,
                 chunk: int = CHUNK_SLICES):
        self.bundle, self.device, self.chunk = bundle, device, chunk
        freq = bundle.metadata.frequency
        if bundle.dims == 2:
            self.slices = brain.any(dim=(1, 2)).nonzero()[:, 0]
            self.x = image[self.slices][:, None].to(device)
            self.memory_format = torch.channels_last
        else:
            self.slices = None
            self.x = image[None, None].to(device)
            self.memory_format = torch.contiguous_format
        for net in bundle.networks.values():
            net.to(memory_format=self.memory_format)
        self.x_f = high_frequency(self.x, freq.radius, bundle.dims, freq.reference_size)
        self.shape = image.shape

    @torch.inference_mode()
    def __call__(self, mask: torch.Tensor, noise: torch.Tensor, first: bool = False) -> torch.Tensor:
        """Reconstruction (z, y, x) on the model grid (CPU) of the image with ``mask`` (z, y, x) hidden under ``noise``."""
        role = "first" if first and "first" in self.bundle.networks else self.bundle.masked_role
        net = self.bundle.networks[role]
        x_f = self.x_f if role == "first" or self.bundle.uses_frequency else None
        pick = (lambda v: v[self.slices][:, None]) if self.slices is not None else (lambda v: v[None, None])
        m, eps = pick(mask).to(self.device), pick(noise).to(self.device)
        out = torch.cat([
            net(network_input(role, self.x[i:i + self.chunk], None if x_f is None else x_f[i:i + self.chunk],
                              m[i:i + self.chunk], eps[i:i + self.chunk]).contiguous(memory_format=self.memory_format))
            for i in range(0, self.x.shape[0], self.chunk)
        ]).float().cpu()
        if self.slices is None:
            return out[0, 0]
        volume = torch.zeros(self.shape)
        volume[self.slices] = out[:, 0]
        return volume


def one_shot_reconstruction(bundle: ModelBundle, prepared, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    """A single reconstruction (z, y, x) of a :class:`~itermask.preprocess.PreparedVolume` on the model grid.

    For an IterMask bundle it is the first iteration, the whole brain hidden: the frequency-only ablation (with the
    noise a :class:`~itermask.session.Session` of the same seed draws). For a baseline (AE, DAE) it is the
    reconstruction of the image itself.
    """
    noise = iteration_noise(prepared.image.shape, seed, 0)
    reconstruct = VolumeReconstructor(bundle.to(device), prepared.image, prepared.brain, torch.device(device))
    return reconstruct(prepared.brain, noise, first=True)
