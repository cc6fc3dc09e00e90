"""The quality benchmark's ground-truth stacks: many kinds of specimen, optics and camera.

Each stack is rendered by the layered renderer (light spreads across depth edges) with a
point-spread function that is more than a Gaussian (disk + Gaussian, spherical-aberration
asymmetry, axial chromatic offsets), so no method can win by matching the renderer that
the engine's own tests use. Families: macro photographs on smooth and stepped surfaces,
micrographs on folded surfaces, thin fibres and hairs, bright-field transmitted light
(a dark absorbing specimen over a bright glow: the halo case), fluorescence (sparse, bright
on black, few photons), frames of the real stacks in ../shared/data as textures, synthetic
textures, dense and sparse z sampling, a breathing lens.

Rendered stacks are cached under the benchmark's work folder (keyed by their parameters).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable

import numpy as np

from simulators import scenes
from simulators.layered import LayeredSpecimen, render_layered_stack
from simulators.optics import CameraNoise, Optics, RenderedStack, render_stack
from simulators.psf import DefocusPSF
from simulators.specimens import VirtualSpecimen, load_texture, make_height_map

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SpecimenMaker = Callable[[tuple[int, int], np.random.Generator, float], LayeredSpecimen]  # (shape, rng, depth_um)


@dataclass(frozen=True)
class StackSpec:
    name: str
    family: str
    specimen: str                       # key into SPECIMENS
    depth_um: float = 40.0
    step_um: float = 4.0
    psf: DefocusPSF = field(default_factory=DefocusPSF)
    full_well_e: float = 20000.0
    read_noise_e: float = 5.0
    bit_depth: int = 8
    colour: bool = True
    chromatic_um: tuple[float, ...] = ()   # axial focus offset per colour channel
    breathing_per_um: float = 0.0
    seed: int = 0
    renderer: str = "layered"   # or "gaussian": simulators.optics, the engine tests' own renderer

    @property
    def camera(self) -> CameraNoise:
        return CameraNoise(self.full_well_e, self.read_noise_e, self.bit_depth)

    @property
    def full_scale(self) -> float:
        return self.camera.max_value

    def z_um(self) -> np.ndarray:
        return np.arange(-self.step_um, self.depth_um + self.step_um + 1e-6, self.step_um)


def _frame(folder: str, name: str):
    return SHARED_DATA / folder / name


def _texture_on(texture: str, surface: str, colour: bool) -> SpecimenMaker:
    def make(shape, rng, depth_um):
        return scenes.opaque_surface(load_texture(texture, shape, colour),
                                     make_height_map(surface, shape, depth_um, rng))
    return make


def _frame_on(path: Path, surface: str) -> SpecimenMaker:
    def make(shape, rng, depth_um):
        return scenes.opaque_surface(scenes.image_texture(path, shape, True),
                                     make_height_map(surface, shape, depth_um, rng))
    return make


SPECIMENS: dict[str, Callable] = {
    "astronaut/dome": _texture_on("astronaut", "dome", True),
    "chelsea/steps": _texture_on("chelsea", "steps", True),
    "coffee/irregular": _texture_on("coffee", "irregular", True),
    "gravel/plane": _texture_on("gravel", "plane", False),
    "brick/cells": lambda shape, rng, d: scenes.opaque_surface(load_texture("brick", shape, False),
                                                               scenes.cell_heights(shape, rng, 25, d)),
    "ihc/folded": _texture_on("immunohistochemistry", "irregular", True),
    "retina/dome": _texture_on("retina", "dome", True),
    "fibres/rocket": lambda shape, rng, d: scenes.fibres_over_surface(load_texture("rocket", shape, True), rng, d),
    "hairs/fractal": lambda shape, rng, d: scenes.fibres_over_surface(scenes.fractal_texture(shape, rng), rng, d,
                                                                      n_fibres=40),
    "bf-animal/rgb": lambda shape, rng, d: scenes.bright_field_animal(shape, rng, d, colour=True),
    "bf-animal/mono": lambda shape, rng, d: scenes.bright_field_animal(shape, rng, d, colour=False),
    "bf-cells/mono": lambda shape, rng, d: scenes.bright_field_cells(shape, rng, d, colour=False),
    "bf-cells/stained": lambda shape, rng, d: scenes.bright_field_cells(shape, rng, d, colour=True),
    "fluo/filaments": lambda shape, rng, d: scenes.fluorescent_filaments_and_beads(shape, rng, d),
    "fluo/dense": lambda shape, rng, d: scenes.fluorescent_filaments_and_beads(shape, rng, d, n_filaments=30,
                                                                               n_beads=150),
    "hubble/plane": lambda shape, rng, d: LayeredSpecimen(
        "emitting", load_texture("hubble_deep_field", shape, False), make_height_map("plane", shape, d), 0.0),
    "scorpion-frame/dome": _frame_on(_frame("scorpion-microscope", "scorpion_lapse_3.png"), "dome"),
    "pcb-frame/steps": _frame_on(_frame("pcb", "pcb_004.jpg"), "steps"),
    "keyboard-frame/plane": _frame_on(_frame("keyboard-phone", "a15.jpg"), "plane"),
    "fractal/irregular": lambda shape, rng, d: scenes.opaque_surface(scenes.fractal_texture(shape, rng, 2.0),
                                                                     make_height_map("irregular", shape, d, rng)),
    "camera/steps": _texture_on("camera", "steps", False),
    "gravel/steps": _texture_on("gravel", "steps", False),
}

STACKS = [
    StackSpec("astronaut-dome", "photo", "astronaut/dome", psf=DefocusPSF(0.4, 0.7, 0.5, 0.3)),
    StackSpec("chelsea-steps", "photo", "chelsea/steps", step_um=3.0, psf=DefocusPSF(0.5, 1.0, 0.4, 0.0),
              full_well_e=10000),
    StackSpec("coffee-dense-noisy", "photo", "coffee/irregular", step_um=1.5, psf=DefocusPSF(0.3, 0.0, 0.6),
              full_well_e=2000, read_noise_e=8),
    StackSpec("gravel-plane-12bit", "photo", "gravel/plane", psf=DefocusPSF(0.4, 0.5, 0.5, -0.3),
              full_well_e=8000, bit_depth=12, colour=False),
    StackSpec("brick-depth-edges", "depth edges", "brick/cells", step_um=3.0, psf=DefocusPSF(0.5, 0.8, 0.5, 0.2),
              colour=False),
    StackSpec("ihc-folded", "micrograph", "ihc/folded", step_um=2.5, depth_um=30.0,
              psf=DefocusPSF(0.45, 0.7, 0.7, 0.2), full_well_e=6000, chromatic_um=(1.0, 0.0, -1.0)),
    StackSpec("retina-sparse", "micrograph", "retina/dome", step_um=6.0, psf=DefocusPSF(0.35, 0.6, 0.6, 0.3)),
    StackSpec("fibres", "thin", "fibres/rocket", step_um=3.0, psf=DefocusPSF(0.45, 0.7, 0.5, 0.3)),
    StackSpec("hairs-12bit", "thin", "hairs/fractal", step_um=3.0, psf=DefocusPSF(0.5, 0.8, 0.5, -0.2),
              full_well_e=4000, bit_depth=12, colour=False),
    StackSpec("brightfield-animal", "bright-field", "bf-animal/rgb", psf=DefocusPSF(0.4, 0.7, 0.6, 0.4),
              chromatic_um=(1.5, 0.0, -1.5)),
    StackSpec("brightfield-animal-dense-12bit", "bright-field", "bf-animal/mono", step_um=2.0,
              psf=DefocusPSF(0.35, 0.6, 0.6, 0.3), full_well_e=3000, bit_depth=12, colour=False, seed=1),
    StackSpec("brightfield-cells", "bright-field", "bf-cells/mono", step_um=3.0, depth_um=20.0,
              psf=DefocusPSF(0.4, 0.7, 0.6, 0.2), colour=False),
    StackSpec("brightfield-stained", "bright-field", "bf-cells/stained", depth_um=24.0,
              psf=DefocusPSF(0.5, 0.7, 0.5, -0.3), chromatic_um=(0.8, 0.0, -0.8), seed=2),
    StackSpec("fluo-few-photons-16bit", "fluorescence", "fluo/filaments", step_um=2.0, depth_um=24.0,
              psf=DefocusPSF(0.35, 0.6, 0.8, 0.3), full_well_e=400, read_noise_e=2, bit_depth=16, colour=False),
    StackSpec("fluo-dense-12bit", "fluorescence", "fluo/dense", step_um=1.0, depth_um=16.0,
              psf=DefocusPSF(0.3, 0.5, 0.8, 0.2), full_well_e=4000, read_noise_e=3, bit_depth=12, colour=False),
    StackSpec("hubble-plane-16bit", "fluorescence", "hubble/plane", step_um=3.0, depth_um=30.0,
              psf=DefocusPSF(0.4, 0.6, 0.6, 0.0), full_well_e=1500, read_noise_e=3, bit_depth=16, colour=False),
    StackSpec("scorpion-frame-dome", "real frame", "scorpion-frame/dome", psf=DefocusPSF(0.4, 0.7, 0.5, 0.3)),
    StackSpec("pcb-frame-steps", "real frame", "pcb-frame/steps", step_um=3.0, psf=DefocusPSF(0.5, 0.9, 0.5, 0.0)),
    StackSpec("keyboard-frame-plane", "real frame", "keyboard-frame/plane", step_um=5.0,
              psf=DefocusPSF(0.4, 0.7, 0.5, 0.2), full_well_e=5000),
    StackSpec("fractal-float", "synthetic", "fractal/irregular", step_um=2.0, psf=DefocusPSF(0.4, 0.5, 0.5, 0.2),
              full_well_e=50000, bit_depth=0, colour=False),
    StackSpec("camera-steps-16bit", "synthetic", "camera/steps", step_um=4.0, psf=DefocusPSF(0.45, 0.8, 0.5, 0.0),
              full_well_e=30000, read_noise_e=3, bit_depth=16, colour=False),
    StackSpec("coffee-breathing", "breathing lens", "coffee/irregular", step_um=3.0,
              psf=DefocusPSF(0.4, 0.7, 0.5, 0.2), breathing_per_um=0.0006, seed=3),
    # The renderer of the engine's tests (Gaussian blur by each pixel's own height, no spill):
    # kept so that no default is tuned to one model of the optics.
    StackSpec("gaussian-astronaut-dome", "gaussian model", "astronaut/dome", renderer="gaussian",
              psf=DefocusPSF(0.4, 0.0, 0.0)),
    StackSpec("gaussian-gravel-steps-12bit", "gaussian model", "gravel/steps", renderer="gaussian",
              psf=DefocusPSF(0.15, 0.0, 0.0), full_well_e=3000, read_noise_e=8, bit_depth=12, colour=False),
    StackSpec("gaussian-chelsea-steps", "gaussian model", "chelsea/steps", renderer="gaussian",
              psf=DefocusPSF(0.4, 0.0, 0.0)),
]


def available(spec: StackSpec) -> bool:
    """False for stacks made from the real frames when ../shared/data is not there."""
    return not spec.specimen.split("/")[0].endswith("-frame") or SHARED_DATA.is_dir()


def spec_key(spec: StackSpec, shape: tuple[int, int]) -> str:
    fields = asdict(spec)
    if fields["renderer"] == "layered":  # the key of stacks from before there was a choice
        del fields["renderer"]
    # Version 5 for the steps surface: its last column no longer stands on a fifth step (older caches differ).
    version = 5 if spec.specimen.endswith("/steps") else 4
    text = json.dumps({**fields, "shape": list(shape), "version": version}, sort_keys=True, default=str)
    return f"{spec.name}-{shape[0]}x{shape[1]}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def best_focus_truth(spec: StackSpec, truth: np.ndarray) -> np.ndarray:
    """The truth as the optics show it at best focus (float32): blurred by the PSF at zero defocus
    (its base blur: diffraction, residual aberrations), which no slice escapes and no fusion
    should invent away. The Gaussian renderer has no blur at focus: its truth stays as it is."""
    if spec.renderer == "gaussian":
        return truth.astype(np.float32)
    import cv2

    kernel = spec.psf.kernel(0.0).astype(np.float32)
    return cv2.filter2D(truth.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REFLECT)


def render(spec: StackSpec, shape: tuple[int, int], cache: Path | None = None) -> RenderedStack:
    """The stack for ``spec`` at ``shape``, from the cache when it was rendered before."""
    path = None if cache is None else cache / f"{spec_key(spec, shape)}.npz"
    if path is not None and path.is_file():
        data = np.load(path)
        return RenderedStack(list(data["slices"]), list(data["z_um"]), data["truth"], data["height_um"])
    rng = np.random.default_rng(spec.seed)
    specimen = SPECIMENS[spec.specimen](shape, rng, spec.depth_um)
    if spec.renderer == "gaussian":  # Gaussian sigma = the PSF's blur per um
        stack = render_stack(VirtualSpecimen(specimen.content, specimen.height_um), spec.z_um(),
                             Optics(blur_px_per_um=spec.psf.radius_px_per_um), spec.camera, seed=spec.seed)
    else:
        stack = render_layered_stack(specimen, spec.z_um(), spec.psf, spec.camera, spec.chromatic_um,
                                     spec.breathing_per_um, seed=spec.seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")  # two runs may render at once
        np.savez(partial, slices=np.stack(stack.slices), z_um=np.asarray(stack.z_um), truth=stack.truth,
                 height_um=stack.height_um)
        os.replace(partial, path)
    return stack
