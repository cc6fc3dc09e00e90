"""The tools our users would pick instead, run on the same stacks as our engine.

External peers are command-line programs, never dependencies of the project:
- focusweave and OpenFocus (every algorithm it offers, StackMFF v1-v3 included) from their
  own virtualenv: ``python3 -m venv .peers-venv && .peers-venv/bin/pip install focusweave openfocus``
  (or point ``UMS_PEERS_VENV`` at another one);
- enfuse and focus-stack when they are on the PATH (``apt-get install enfuse``).
Two reference methods run in-process: the 20-line baseline of issue 12 (squared 3x3
Laplacian, Gaussian-smoothed, weights = that energy squared) and a naive per-pixel argmax.

Slices go to the peers as files the way a user would hand them over: PNG for 8-bit,
16-bit TIFF for deeper data (float stacks are scaled to 16 bits and back). What comes back
is converted to the stack's shape and dtype.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from collections.abc import Callable

import numpy as np
import tifffile
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
OPENFOCUS_METHODS = ("stackmffv3", "stackmffv2", "stackmff", "openfocus_a", "openfocus_b", "openfocus_c",
                     "guided_filter", "gfgfgf", "dct", "dtcwt")
PeerRunner = Callable[[list[np.ndarray], bool], np.ndarray]  # (slices, moving) -> fused
# enfuse as its manual says to focus-stack: local contrast only, each pixel from one image.
ENFUSE_FOCUS_OPTIONS = ("--exposure-weight=0", "--saturation-weight=0", "--contrast-weight=1", "--hard-mask",
                        "--contrast-window-size=5")


def peers_bin() -> Path:
    return Path(os.environ.get("UMS_PEERS_VENV", ROOT / ".peers-venv")) / "bin"


def _to_float_scale(dtype: np.dtype) -> float:
    return 65535.0 if np.dtype(dtype).kind == "f" else 1.0


def write_slices(slices: list[np.ndarray], folder: Path) -> None:
    """Slices as numbered image files (natural order = file order)."""
    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    for index, pixels in enumerate(slices):
        if pixels.dtype == np.uint8:
            iio.imwrite(folder / f"slice_{index:04d}.png", pixels)
        else:
            scale = _to_float_scale(pixels.dtype)
            data = np.clip(np.rint(pixels * scale), 0, 65535).astype(np.uint16) if scale != 1.0 else pixels
            tifffile.imwrite(folder / f"slice_{index:04d}.tif", data,
                             photometric="rgb" if data.ndim == 3 else "minisblack")


def read_result(path: Path, like: np.ndarray) -> np.ndarray:
    """A peer's output file as an array shaped and typed like the slices."""
    import imageio.v3 as iio

    image = tifffile.imread(path) if path.suffix.lower() in (".tif", ".tiff") else np.asarray(iio.imread(path))
    image = np.squeeze(image)
    if image.ndim == 3 and image.shape[0] in (3, 4) and image.shape[2] not in (3, 4):
        image = np.moveaxis(image, 0, 2)
    if image.ndim == 3:
        # Grey + alpha (enfuse writes it for mono input) or RGB(A): drop the alpha.
        image = image[:, :, :1] if image.shape[2] == 2 else image[:, :, :3]
        image = image if like.ndim == 3 else image.mean(axis=2)
    elif like.ndim == 3:
        image = np.repeat(image[:, :, None], like.shape[2], axis=2)
    if image.shape != like.shape:
        raise ValueError(f"{path.name}: shape {image.shape}, expected {like.shape}")
    image = image.astype(np.float64) / _to_float_scale(like.dtype)
    if like.dtype.kind in "ui":
        info = np.iinfo(like.dtype)
        return np.clip(np.rint(image), info.min, info.max).astype(like.dtype)
    return image.astype(like.dtype)


def _run(command: list[str], folder: Path) -> None:
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed ({done.returncode}): {done.stderr.strip()[-500:]}")


def _output_name(slices) -> str:
    return "fused.png" if slices[0].dtype == np.uint8 else "fused.tif"


def _fuse_with(slices, output_name: str, command) -> np.ndarray:
    """Write the slices into a temporary folder, run ``command(input_folder, slice_paths, output)``
    there, and read what it wrote back as an array like the slices."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_slices(slices, folder / "in")
        out = folder / output_name
        names = sorted(str(p) for p in (folder / "in").iterdir())
        _run(command(folder / "in", names, out), folder)
        return read_result(out, slices[0])


def _focusweave(slices, moving):
    # Still stacks: no alignment (it can only hurt); moving ones: align to the first slice,
    # the frame the truth is in, and keep the size.
    align = ["--reference", "0", "--keep-size"] if moving else ["--no-align"]
    return _fuse_with(slices, _output_name(slices), lambda folder, names, out: [
        str(peers_bin() / "focusweave"), str(folder), "--output", str(out), *align])


def _openfocus(method):
    def run(slices, moving):
        # Its registration crops the frame to the slices' overlap, which cannot be scored
        # against the truth: it runs unaligned, as the command line does.
        return _fuse_with(slices, _output_name(slices), lambda folder, names, out: [
            str(peers_bin() / "openfocus"), "-i", str(folder), "-o", str(out), "-m", method, "--align", "none",
            "--cpu"])
    return run


def _enfuse(slices, moving):
    return _fuse_with(slices, "fused.tif", lambda folder, names, out: [
        "enfuse", *ENFUSE_FOCUS_OPTIONS, "-o", str(out), *names])


def _focus_stack(slices, moving):
    return _fuse_with(slices, "fused.tif", lambda folder, names, out: [
        "focus-stack", *([] if moving else ["--no-align"]), f"--output={out}", *names])


def _gray(pixels: np.ndarray) -> np.ndarray:
    pixels = pixels.astype(np.float32)
    return pixels @ np.array([0.299, 0.587, 0.114], np.float32) if pixels.ndim == 3 else pixels


def _weighted_mean(slices, weights):
    weights = weights / np.maximum(weights.sum(axis=0, keepdims=True), 1e-30)
    stack = np.stack([s.astype(np.float64) for s in slices])
    fused = (stack * (weights[..., None] if stack.ndim == 4 else weights)).sum(axis=0)
    if slices[0].dtype.kind in "ui":
        info = np.iinfo(slices[0].dtype)
        return np.clip(np.rint(fused), info.min, info.max).astype(slices[0].dtype)
    return fused.astype(slices[0].dtype)


def baseline_20_lines(slices, moving=False):
    """Issue 12's baseline: weights = (Gaussian(sigma 2 px) of the squared 3x3 Laplacian)^2."""
    laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)
    energy = np.stack([ndimage.gaussian_filter(ndimage.convolve(_gray(s), laplacian, mode="reflect") ** 2, 2.0)
                       for s in slices]).astype(np.float64)
    return _weighted_mean(slices, energy ** 2 + 1e-30)


def naive_argmax(slices, moving=False):
    """Per pixel, the slice with the largest squared Laplacian: no window, no cleaning."""
    laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)
    energy = np.stack([np.abs(ndimage.convolve(_gray(s), laplacian, mode="reflect")) for s in slices])
    pick = (energy == energy.max(axis=0, keepdims=True)) & (np.cumsum(energy == energy.max(axis=0), axis=0) == 1)
    return _weighted_mean(slices, pick.astype(np.float64))


def available_peers() -> tuple[dict[str, PeerRunner], list[str]]:
    """(name -> runner) for every peer installed here, and a line for each one that is not."""
    peers: dict[str, PeerRunner] = {}
    missing = []
    if (peers_bin() / "focusweave").exists():
        peers["focusweave"] = _focusweave
    else:
        missing.append(f"focusweave: not in {peers_bin()} (python3 -m venv .peers-venv && "
                       ".peers-venv/bin/pip install focusweave openfocus)")
    if (peers_bin() / "openfocus").exists():
        peers.update({f"openfocus {m}": _openfocus(m) for m in OPENFOCUS_METHODS})
    else:
        missing.append(f"openfocus: not in {peers_bin()}")
    if shutil.which("enfuse"):
        peers["enfuse"] = _enfuse
    else:
        missing.append("enfuse: not on PATH (apt-get install enfuse)")
    if shutil.which("focus-stack"):
        peers["focus-stack"] = _focus_stack
    else:
        missing.append("focus-stack: not on PATH (build it from github.com/PetteriAimonen/focus-stack)")
    peers["baseline (issue 12)"] = baseline_20_lines
    peers["naive argmax"] = naive_argmax
    return peers, missing
