"""Does a focus measure trained on rendered stacks beat spatial frequency? (issue 12, deliverable 5)

The renderer knows the truth, so a measure can be trained with it, without labels from anyone:
a tiny network (1.4k weights) maps a grey slice to a focus response, and is trained so that the
single-scale soft fusion it drives (weights = (smoothed energy + noise floor)^4, normalised over
the slices: the pyramid's evidence term) comes closest to the truth. Then it replaces "sf" as the
pyramid's fine evidence on the quality benchmark's stacks, which it has never seen: its training
stacks come from other textures (grass, text, moon, coins, cell, fractals) and other
seeds of the scene generators, at 128x160.

The network is positively homogeneous (no biases, ReLUs) and its first filters sum to zero, so its
energy scales with contrast squared and ignores offsets, as the classical measures do: the noise
floors calibrate the same way.

    python -m benchmarks.trained_measure [--stacks 120] [--epochs 30] [--work DIR]
                                         [--results benchmarks/results/trained_measure.md]

Needs torch (the project's dependency for "ums"). About 2 min to render, 6 min to train, 2 min to
score on this 2-core machine. Not a product feature: see the results file for why.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.quality import fuse_with_engine, show_and_save
from benchmarks.quality_stacks import STACKS, available, render, spec_key
from fusion import FusionSettings, focus_measures
from fusion.focus_measures import to_gray
from fusion.metrics import psnr
from fusion.multiscale import noise_sigma
from simulators import scenes
from simulators.layered import render_layered_stack
from simulators.optics import CameraNoise
from simulators.psf import DefocusPSF
from simulators.specimens import load_texture, make_height_map

TRAINING_TEXTURES = ("grass", "text", "moon", "coins", "cell")  # none is a benchmark texture
SURFACES = ("plane", "dome", "steps", "irregular")
TRAINING_SHAPE = (128, 160)
EVIDENCE_POWER = 4     # of the single-scale fusion it trains through (the pyramid's, when its powers were flat)
NOISE_FLOOR = 4.0
HELD_OUT_SHARE = 0.2


def training_stack(index: int, shape: tuple[int, int] = TRAINING_SHAPE):
    """(slices (K, H, W[, C]) float32, truth, full scale) of the index-th training stack."""
    rng = np.random.default_rng(1000 + index)   # the benchmark's stacks use seeds 0-2
    depth_um = float(rng.uniform(15, 40))
    kind = index % 6
    if kind <= 2:   # opaque textured surfaces, half the time in colour
        texture, surface = TRAINING_TEXTURES[index % len(TRAINING_TEXTURES)], SURFACES[(index // 3) % 4]
        colour = bool(rng.random() < 0.5)
        specimen = scenes.opaque_surface(load_texture(texture, shape, colour),
                                         make_height_map(surface, shape, depth_um, rng))
    elif kind == 3:
        specimen = scenes.bright_field_animal(shape, rng, depth_um, colour=bool(rng.random() < 0.5))
    elif kind == 4:
        specimen = scenes.fluorescent_filaments_and_beads(shape, rng, depth_um)
    else:
        specimen = scenes.fibres_over_surface(scenes.fractal_texture(shape, rng, float(rng.uniform(1.5, 2.5))),
                                              rng, depth_um)
    step_um = float(rng.choice([1.5, 2.0, 3.0, 4.0, 6.0]))
    z_um = np.arange(-step_um, depth_um + step_um + 1e-6, step_um)
    psf = DefocusPSF(float(rng.uniform(0.3, 0.5)), float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.4, 0.8)),
                     float(rng.uniform(-0.3, 0.3)))
    camera = CameraNoise(float(rng.choice([500, 2000, 8000, 20000])), float(rng.uniform(2, 8)), 8)
    stack = render_layered_stack(specimen, z_um, psf, camera, seed=index)
    return np.stack(stack.slices).astype(np.float32), stack.truth.astype(np.float32), camera.max_value


def make_network(width: int = 8):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class FocusNet(nn.Module):
        """5x5 zero-sum filters, CReLU, a dilated 3x3 layer, a 3x3 output; no biases."""

        def __init__(self):
            super().__init__()
            self.first = nn.Conv2d(1, width, 5, bias=False)
            self.middle = nn.Conv2d(2 * width, width, 3, dilation=2, bias=False)
            self.last = nn.Conv2d(width, 1, 3, bias=False)

        def forward(self, gray):   # (N, 1, H, W) -> (N, 1, H, W), >= 0
            kernel = self.first.weight - self.first.weight.mean(dim=(2, 3), keepdim=True)
            x = F.conv2d(F.pad(gray, (2, 2, 2, 2), mode="reflect"), kernel)
            x = torch.cat([F.relu(x), F.relu(-x)], 1)
            x = F.relu(F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.middle.weight, dilation=2))
            return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.last.weight).abs()

    torch.manual_seed(0)
    return FocusNet()


class Trainer:
    """The differentiable single-scale fusion that the network is trained through."""

    def __init__(self, stacks):
        import torch

        self.torch = torch
        kernel = np.exp(-0.5 * np.arange(-2, 3) ** 2)  # the pyramid's evidence smoothing: sigma 1 px
        self.smoothing = torch.tensor(kernel / kernel.sum(), dtype=torch.float32)
        self.stacks = []
        for slices, truth, full_scale in stacks:
            gray = np.stack([to_gray(pixels) for pixels in slices])  # the grey the engine measures
            gray = gray / full_scale
            self.stacks.append((torch.from_numpy(np.ascontiguousarray(gray[:, None])),
                                torch.from_numpy(slices / full_scale), torch.from_numpy(truth / full_scale),
                                max(noise_sigma(gray[0]), 1e-3)))

    def _smooth(self, energy):
        from torch.nn import functional as F

        k = self.smoothing
        energy = F.conv2d(F.pad(energy, (2, 2, 0, 0), mode="reflect"), k.view(1, 1, 1, 5))
        return F.conv2d(F.pad(energy, (0, 0, 2, 2), mode="reflect"), k.view(1, 1, 5, 1))

    def loss(self, energy_of, stack):
        torch = self.torch
        gray, slices, truth, sigma = stack
        energy = self._smooth(energy_of(gray))[:, 0]
        floor = NOISE_FLOOR * energy_of(sigma * torch.randn(1, 1, 64, 64)).mean()
        weights = torch.softmax(EVIDENCE_POWER * torch.log(energy + floor + 1e-12), 0)
        fused = (weights[..., None] * slices).sum(0) if slices.ndim == 4 else (weights * slices).sum(0)
        return torch.mean((fused - truth)[8:-8, 8:-8] ** 2)

    def psnr(self, energy_of, stacks) -> float:
        with self.torch.no_grad():
            return float(np.mean([-10 * np.log10(self.loss(energy_of, s).item()) for s in stacks]))


def sf_energy(gray):
    from torch.nn import functional as F

    dx = F.pad(gray[..., :, 1:] - gray[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(gray[..., 1:, :] - gray[..., :-1, :], (0, 0, 0, 1))
    return dx ** 2 + dy ** 2


def train(network, trainer: Trainer, train_stacks, held_out, epochs: int, log) -> None:
    import torch

    optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for epoch in range(epochs):
        for index in rng.permutation(len(train_stacks)):
            optimiser.zero_grad()
            # The log: every stack counts by its relative error, not by its noise level.
            torch.log(trainer.loss(lambda g: network(g) ** 2, train_stacks[index])).backward()
            optimiser.step()
        if epoch % 5 == 4 or epoch == epochs - 1:
            log(f"  epoch {epoch + 1}: held-out single-scale PSNR "
                f"{trainer.psnr(lambda g: network(g) ** 2, held_out):.2f} dB ({time.perf_counter() - started:.0f} s)")


def register(network) -> None:
    """Make the trained network the measure "trained" for this process (a benchmark's, not the product's)."""
    import torch

    @dataclass(frozen=True)
    class TrainedMeasure:
        window_px: int = focus_measures.DEFAULT_WINDOW_PX
        name: str = "trained"

        def __call__(self, gray):
            raise NotImplementedError("the trained measure feeds the pyramid only")

        def energy(self, gray):
            with torch.no_grad():
                response = network(torch.from_numpy(np.ascontiguousarray(gray, np.float32))[None, None])
            return np.square(response[0, 0].numpy())

    focus_measures.MEASURES["trained"] = TrainedMeasure


def score_benchmark(work: Path, log) -> list[str]:
    """Per quality stack: PSNR of sf and trained in the pyramid, and each's gain over the best cached peer."""
    shape = (384, 512)
    lines = ["| stack | family | sf | trained | trained - sf | best peer | sf gain | trained gain |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    sums: dict[str, list[float]] = {"sf": [], "trained": [], "sf gain": [], "trained gain": []}
    for spec in (s for s in STACKS if available(s)):
        stack = render(spec, shape, work / "stacks")
        scores = {}
        for measure in ("sf", "trained"):
            fused = fuse_with_engine(stack.slices, stack.z_um, FusionSettings(measure=measure),
                                     spec.breathing_per_um != 0)
            scores[measure] = psnr(fused, stack.truth, spec.full_scale)
        peers = [np.load(p) for p in glob.glob(str(work / "peers" / spec_key(spec, shape) / "*.npy"))]
        best = max((psnr(p, stack.truth, spec.full_scale) for p in peers), default=float("nan"))
        sums["sf"].append(scores["sf"])
        sums["trained"].append(scores["trained"])
        sums["sf gain"].append(scores["sf"] - best)
        sums["trained gain"].append(scores["trained"] - best)
        lines.append(f"| {spec.name} | {spec.family} | {scores['sf']:.2f} | {scores['trained']:.2f} | "
                     f"{scores['trained'] - scores['sf']:+.2f} | {best:.2f} | {scores['sf'] - best:+.2f} | "
                     f"{scores['trained'] - best:+.2f} |")
        log(lines[-1])
    mean = {k: float(np.mean(v)) for k, v in sums.items()}
    lines.append(f"| **mean** | | {mean['sf']:.2f} | {mean['trained']:.2f} | {mean['trained'] - mean['sf']:+.2f} | "
                 f"| {mean['sf gain']:+.2f} | {mean['trained gain']:+.2f} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=120, help="training stacks to render (a fifth held out)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ums-fusion-bench/quality"),
                        help="the quality benchmark's work folder: its rendered stacks and peers' outputs")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)

    def log(line: str) -> None:
        print(line, flush=True)

    started = time.perf_counter()
    stacks = [training_stack(i) for i in range(args.stacks)]
    log(f"rendered {len(stacks)} training stacks in {time.perf_counter() - started:.0f} s")
    trainer = Trainer(stacks)
    n_held_out = max(1, round(HELD_OUT_SHARE * len(stacks)))
    train_stacks, held_out = trainer.stacks[:-n_held_out], trainer.stacks[-n_held_out:]
    network = make_network()
    sf_held_out = trainer.psnr(sf_energy, held_out)
    log(f"held-out single-scale PSNR with sf: {sf_held_out:.2f} dB")
    train(network, trainer, train_stacks, held_out, args.epochs, log)
    trained_held_out = trainer.psnr(lambda g: network(g) ** 2, held_out)
    network.eval()
    register(network)
    table = score_benchmark(args.work, log)
    out = ["# A focus measure trained on rendered stacks, against sf", "",
           f"{datetime.date.today()}, {platform.node()} ({os.cpu_count()} cores), "
           f"command: `python -m benchmarks.trained_measure {' '.join(sys.argv[1:])}`", "",
           f"Trained on {len(train_stacks)} rendered stacks, {len(held_out)} held out "
           f"({sum(p.numel() for p in network.parameters())} weights, {args.epochs} epochs, "
           f"{time.perf_counter() - started:.0f} s in all).", "",
           f"Held-out stacks, single-scale soft fusion (what it was trained through): sf {sf_held_out:.2f} dB, "
           f"trained {trained_held_out:.2f} dB.", "",
           "## In the pyramid, on the quality benchmark's stacks (PSNR dB; gains over the best cached peer)", ""]
    text = "\n".join(out + table)
    show_and_save(text, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
