"""How close one network pass comes to what this CPU can do: a roofline figure per bundle.

    python Testing/benchmarks/pass_roofline.py [--models flair-2d flair-3d ...] [--passes 9]

For each bundle, one pass of its masked network over BraTS pat0006 on the bundle's model grid (every brain slice for
a 2D bundle, the volume for a 3D one), run as a segmentation runs it (:class:`itermask.reconstruction.
VolumeReconstructor`). Prints the pass's convolution FLOPs (2·C_in·C_out·kernel voxels per output voxel, counted on
the layers as they run; normalisation, activations, pooling and upsampling are memory-bound and not counted), the
median seconds, the achieved GFLOP/s, and the
share of the pass spent in convolutions (PyTorch's profiler). The peaks are this CPU's, measured in the same torch
build on the same threads: a 2048² float32 matmul, and a wide 3×3 (2D) or 3×3×3 (3D) convolution through the same
oneDNN path as the networks. ``% of peak`` compares a pass to the convolution peak of its own kind.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import itermask
from itermask.io import read_volume
from itermask.networks import Conv2d, Conv3d
from itermask.preprocess import prepare_volume
from itermask.reconstruction import VolumeReconstructor, iteration_noise

CASE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "brats2013" / "brats_2013_pat0006_1"


def median_seconds(run, repeats: int) -> float:
    """Median wall time of ``run()`` over ``repeats`` calls after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.inference_mode()
def conv_peak(dims: int, repeats: int) -> float:
    """GFLOP/s of a wide convolution of this kind (64 channels on 8 × 96² in 2D, 32 channels on 56 × 48 × 56 in 3D),
    in the memory layout the bundles of that kind run in."""
    if dims == 2:
        conv = Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
        x = torch.randn(8, 64, 96, 96).contiguous(memory_format=torch.channels_last)
    else:
        conv = Conv3d(32, 32, 3, padding=1)
        x = torch.randn(1, 32, 56, 48, 56)
    flops = 2 * conv.in_channels * conv.out_channels * conv.weight[0, 0].numel() * x[:, 0].numel()
    return flops / median_seconds(lambda: conv(x), repeats) / 1e9


def matmul_peak(repeats: int) -> float:
    a = torch.randn(2048, 2048)
    return 2 * 2048**3 / median_seconds(lambda: a @ a, repeats) / 1e9


def conv_flops(network: torch.nn.Module, run) -> int:
    """Multiply-add FLOPs (×2) of every convolution in ``network`` during ``run()``."""
    total = 0

    def count(conv, _inputs, output):
        nonlocal total
        total += 2 * conv.in_channels // conv.groups * conv.weight[0, 0].numel() * output.numel()

    hooks = [m.register_forward_hook(count) for m in network.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return total


def pass_figures(name: str, image, affine, brain, repeats: int) -> dict:
    """FLOPs, seconds, GFLOP/s and convolution share of one masked pass of bundle ``name``."""
    bundle = itermask.load_model(name)
    prepared = prepare_volume(image, affine, brain, bundle.metadata.grid, bundle.grid_divisor)
    reconstruct = VolumeReconstructor(bundle, prepared.image, prepared.brain, torch.device("cpu"))
    noise = iteration_noise(prepared.image.shape, 0, 1)
    run = lambda: reconstruct(prepared.brain, noise)  # noqa: E731
    flops = conv_flops(bundle.networks[bundle.masked_role], run)
    seconds = median_seconds(run, repeats)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = prof.key_averages()
    conv_us = sum(e.self_cpu_time_total for e in events if "convolution" in e.key)
    return {"name": name, "dims": bundle.dims, "grid": tuple(prepared.image.shape), "gflop": flops / 1e9,
            "seconds": seconds, "conv_share": conv_us / sum(e.self_cpu_time_total for e in events)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=sorted(itermask.available_models()))
    parser.add_argument("--passes", type=int, default=9, help="timed passes per bundle (median)")
    args = parser.parse_args()
    image, affine = read_volume(CASE / "Flair_subtrMeanDivStd.nii.gz")
    brain = read_volume(CASE / "brainmask.nii.gz")[0]
    peaks = {2: conv_peak(2, args.passes), 3: conv_peak(3, args.passes)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}; "
          f"peaks: matmul 2048² {matmul_peak(args.passes):.0f} GFLOP/s, conv 2D {peaks[2]:.0f}, conv 3D {peaks[3]:.0f}")
    print("| bundle | model grid | conv GFLOP / pass | s / pass | GFLOP/s | % of conv peak | time in convolutions |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        f = pass_figures(name, image, affine, brain, args.passes)
        rate = f["gflop"] / f["seconds"]
        print(f"| {name} | {'×'.join(map(str, f['grid']))} | {f['gflop']:.1f} | {f['seconds']:.3f} | {rate:.0f} | "
              f"{100 * rate / peaks[f['dims']]:.0f} % | {100 * f['conv_share']:.0f} % |", flush=True)


if __name__ == "__main__":
    main()
