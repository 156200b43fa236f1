"""What defines a training run: :class:`TrainConfig`, its defaults per model dimensionality, and the bundle
metadata it describes."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from itermask.errors import ItermaskError
from itermask.metadata import (LAYOUTS, POLICY_FOR_DIMS, Architecture, BundleMetadata, FrequencyFilter, Grid, Method,
                               PolicySettings, SliceMasks, VolumeMasks, check_modality)

# The paper's frequency cut-off in cycles per mm: radius 15 on 128² slices of ≈1.875 mm (2D), on 192³ at 1 mm (3D).
PAPER_CUTOFF_PER_MM = {2: 15 / (128 * 1.875), 3: 15 / 192}


# Sized for a CPU: a 3D pass over a brain at 3 mm (about 48 × 56 × 48 voxels) takes ≈0.2 s on two cores.
DEFAULTS_BY_DIMS = {
    2: {"steps": 1800, "batch_size": 16, "channels": (16, 32, 64, 128), "spacing_mm": 2.0, "size": 96},
    3: {"steps": 1500, "batch_size": 2, "channels": (8, 16, 32, 64), "spacing_mm": 3.0, "size": 48},
}


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in the bundle's ``training`` metadata.

    ``dims`` 2: IterMask² (a first-iteration and a masked network on axial slices); 3: IterMask3D (one unified
    network on whole volumes that also sees fully hidden brains, ``whole_brain_fraction`` of the samples).
    ``size``: the smallest model grid side in voxels (in-plane for 2D; every side for 3D).

    ``method`` ``ae`` or ``dae`` trains an evaluation baseline on the same backbone and data instead: an autoencoder
    (the UNet without skip connections) or a denoising autoencoder that removes coarse noise of ``dae_noise_sd``
    (z-score units; the paper's 0.2 of the image range ≈ 1.2 SD), ``signed`` or hyper-intense only (``positive``).
    ``frequency=False`` is the spatial-only ablation: the masked (unified) network never sees ``x_f``.
    ``augment``: flips, small affine and elastic deformations, bias field, gamma and noise (see :mod:`.augment`).
    ``batch_size`` is the whole step's batch, shared among the processes when several train together.
    ``steps``, ``batch_size``, ``channels``, ``spacing_mm`` and ``size`` not given: the ``dims``' defaults.
    """

    source: str                   # CSV manifest or folder of scans (see data.read_cases)
    output: str
    name: str
    modality: str
    dims: int = 2
    steps: int | None = None      # None (here and below): the dims' default, DEFAULTS_BY_DIMS
    batch_size: int | None = None
    lr: float = 1e-3
    channels: tuple[int, ...] | None = None
    spacing_mm: float | None = None
    size: int | None = None
    mask_coarse_px: float = 7.5   # 2D: paper 10 px on 128²; the same share of the field of view on 96²
    mask_cells_mm: tuple[float, ...] = (2.0, 4.0, 8.0)  # 3D: paper 1/2, 1/4, 1/8 of a 1 mm grid
    whole_brain_fraction: float = 0.25
    method: str = "itermask"
    frequency: bool = True
    dae_noise: str = "positive"
    dae_noise_sd: float = 1.2
    dae_noise_cell_mm: float = 15.0  # paper: 16² noise on 128² slices of ≈1.9 mm
    augment: bool = True
    masked_weight: float = 1.0    # loss weight of hidden voxels; visible voxels get ``visible_weight``
    visible_weight: float = 0.1
    checkpoint_every: int = 200
    seed: int = 0
    init_from: str | None = None  # a bundle to fine-tune (same method, dims and widths) instead of a fresh start
    data: list = field(default_factory=list)

    def __post_init__(self):
        if self.dims not in DEFAULTS_BY_DIMS:
            raise ItermaskError(f"dims must be 2 or 3, got {self.dims!r}")
        for name, default in DEFAULTS_BY_DIMS[self.dims].items():
            if getattr(self, name) is None:
                setattr(self, name, default)
        self.channels, self.mask_cells_mm = tuple(self.channels), tuple(self.mask_cells_mm)

    @property
    def radius(self) -> float:
        """The frequency radius on a ``size`` grid that keeps the paper's physical cut-off (12 on 96² at 2 mm)."""
        return round(PAPER_CUTOFF_PER_MM[self.dims] * self.size * self.spacing_mm, 3)

    def as_json(self, leave_out: tuple[str, ...] = ()) -> dict:
        """The fields as JSON values (tuples as lists), without those named in ``leave_out``."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k not in leave_out}

    def metadata(self) -> BundleMetadata:
        """The metadata of the bundle this run trains, not yet calibrated."""
        noise = (dict(noise=self.dae_noise, noise_sd=self.dae_noise_sd, noise_cell_mm=self.dae_noise_cell_mm)
                 if self.method == "dae" else {})
        method = Method(name=self.method, **noise)  # checks the name before LAYOUTS is looked up with it
        if self.dims == 2:
            min_size = (1, self.size, self.size)
            masks = SliceMasks(coarse_px=self.mask_coarse_px)
        else:
            min_size = (self.size,) * 3
            masks = VolumeMasks(cells_mm=self.mask_cells_mm, whole_brain_fraction=self.whole_brain_fraction)
        return BundleMetadata(
            name=self.name, modality=check_modality(self.modality), dims=self.dims,
            networks=LAYOUTS[method.name][self.dims], method=method,
            architecture=Architecture(channels=self.channels, skips=self.method != "ae"),
            grid=Grid(spacing_mm=self.spacing_mm, min_size=min_size),
            frequency=FrequencyFilter(radius=self.radius, reference_size=self.size, masked_input=self.frequency),
            policy=PolicySettings(default=POLICY_FOR_DIMS[self.dims]), masks=masks)
