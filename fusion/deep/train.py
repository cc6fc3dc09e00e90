"""Unsupervised training of the UMS-Fusion network: reconstruct the input from its features.

    python -m fusion.deep.train --steps 1500 --out checkpoints/ums_autoencoder.pt \
        --export fusion/deep/weights/ums_unetpp.pt
    python -m fusion.deep.train --steps 500 --resume checkpoints/ums_autoencoder.pt --out checkpoints/more.pt

Loss (as published): 1*MSE + 3*(1-SSIM) + 1*gradient + 2*SF, AdamW (lr 1e-4), random crops
and flips. No labels and no stacks: the images are those installed packages ship
(scikit-image's data), frames of the real stacks in ../shared/data when present, and
synthetic textures; nothing is downloaded. Checkpoints (fusion.deep.checkpoints: model, optimiser,
step, seed, the crops' generator, losses) are written every ``--checkpoint-every`` steps and on
Ctrl-C/SIGTERM; ``--resume`` continues one. ``--device auto``: CUDA when present, else the CPU.
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from fusion.deep.checkpoints import (CheckpointError, ExportRefusedError, check_destination, checkpoint_record,
                                     export_weights, read_checkpoint, save_checkpoint_and_record)
from fusion.deep.deep_measure import DeviceUnavailableError, usable_device
from fusion.deep.network import UMSAutoencoder
from fusion.durations import duration_words
from fusion.engine import TORCH_DEVICE
from fusion.errors import FusionError
from fusion.held_signals import signals_deferred

REPO_ROOT = Path(__file__).resolve().parents[2]  # this file is fusion/deep/train.py
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SKIMAGE_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "gravel", "brick", "grass", "moon", "text", "rocket",
                  "coins", "page", "hubble_deep_field", "retina", "immunohistochemistry", "cell", "horse")
SYNTHETIC_SIGMAS_PX = (0.7, 1.5, 3.0)  # synthetic textures at a few scales
FRAMES_PER_STACK = 4  # about: every (n_slices // 4)th slice, so 4 to 7
MIN_CROP_PX = 16  # four 2x poolings in the UNet++: a smaller crop has no pixel left at its deepest level
CHECKPOINT_EVERY_STEPS = 100


def stack_folders() -> list[Path]:
    """The real stacks in ../shared/data (none where it is missing)."""
    return sorted(p for p in SHARED_DATA.iterdir() if p.is_dir()) if SHARED_DATA.is_dir() else []


def load_training_images_by_source(max_side_px: int = 768,
                                   include_real_stacks: bool = True) -> dict[str, list[np.ndarray]]:
    """Grayscale float32 images in [0, 1], by where they came from: scikit-image's data, frames of each
    real stack in ../shared/data, synthetic textures."""
    import skimage.data
    from scipy import ndimage

    sources: dict[str, list[np.ndarray]] = {"scikit-image data": []}
    for name in SKIMAGE_IMAGES:
        try:
            image = getattr(skimage.data, name)()
        except Exception:  # an image the installed scikit-image would have to download
            continue
        sources["scikit-image data"].append(image)
    if include_real_stacks:
        from fusion.readers import open_stack

        for folder in stack_folders():
            frames = sources[f"frames of ../shared/data/{folder.name}"] = []
            with open_stack(folder) as stack:
                for index in range(0, stack.n_slices, max(1, stack.n_slices // FRAMES_PER_STACK)):
                    frames.append(stack.read_slice(index))
    rng = np.random.default_rng(0)
    sources["synthetic textures"] = [ndimage.gaussian_filter(rng.random((512, 512)), sigma)
                                     for sigma in SYNTHETIC_SIGMAS_PX]
    return {source: [_prepared(image, max_side_px) for image in images] for source, images in sources.items()}


def load_training_images(max_side_px: int = 768, include_real_stacks: bool = True) -> list[np.ndarray]:
    """Grayscale float32 images in [0, 1]: scikit-image's data, real-stack frames, synthetic textures."""
    by_source = load_training_images_by_source(max_side_px, include_real_stacks)
    return [image for images in by_source.values() for image in images]


def _prepared(image: np.ndarray, max_side_px: int) -> np.ndarray:
    from skimage.color import rgb2gray
    from skimage.transform import rescale

    gray = image.astype(np.float32)
    if gray.ndim == 3:
        gray = rgb2gray(gray[..., :3] / (255.0 if image.dtype == np.uint8 else gray.max() or 1.0))
    else:
        gray = gray / (255.0 if image.dtype == np.uint8 else max(float(gray.max()), 1e-6))
    factor = min(1.0, max_side_px / max(gray.shape))
    if factor < 1:
        gray = rescale(gray, factor, anti_aliasing=True)
    return np.clip(gray, 0, 1).astype(np.float32)


def announce_loading() -> None:
    """One line before the ~10 s of loading: what is loaded, and whether the real stacks are there."""
    folders = stack_folders()
    stacks = f", frames of {len(folders)} stacks in {SHARED_DATA}" if folders else ""
    print(f"loading training images: up to {len(SKIMAGE_IMAGES)} from scikit-image{stacks}, "
          f"{len(SYNTHETIC_SIGMAS_PX)} synthetic textures", flush=True)
    if not folders:
        print(f"note: {SHARED_DATA} is missing or holds no stacks: training without frames of real stacks",
              file=sys.stderr, flush=True)


def random_batch(images: list[np.ndarray], batch: int, crop_px: int, rng: np.random.Generator) -> torch.Tensor:
    crops = []
    for _ in range(batch):
        image = images[rng.integers(len(images))]
        y = rng.integers(0, image.shape[0] - crop_px + 1)
        x = rng.integers(0, image.shape[1] - crop_px + 1)
        crop = image[y:y + crop_px, x:x + crop_px]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rng.random() < 0.5:
            crop = crop[::-1, :]
        crops.append(np.ascontiguousarray(crop))
    return torch.from_numpy(np.stack(crops)[:, None] * 2 - 1)  # [-1, 1] as the paper feeds it


def ssim(a: torch.Tensor, b: torch.Tensor, window_px: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM with a Gaussian window, for images in [-1, 1] (data range 2)."""
    coords = torch.arange(window_px, dtype=a.dtype, device=a.device) - window_px // 2
    kernel_1d = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    kernel = (kernel_1d[:, None] * kernel_1d[None, :])
    kernel = (kernel / kernel.sum())[None, None]
    blur = lambda t: F.conv2d(t, kernel, padding=window_px // 2)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    return (((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))).mean()


def gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def spatial_frequency(x: torch.Tensor, true_difference: bool = True) -> torch.Tensor:
    """Per-image SF. ``true_difference=False`` is the published variant, which compares the
    shifted intensities themselves (no centre pixel subtracted): it then measures brightness,
    not detail. Measured (benchmarks/quality.py sparse stacks, 1500 steps each, one seed):
    ums blend 36.79 dB trained with the true difference, 36.87 dB with the published variant,
    a difference within run-to-run noise. We keep the true difference: it is the quantity the
    loss is named for, and it asks the reconstruction to keep detail rather than brightness."""
    if true_difference:
        dx, dy = gradients(x)
    else:
        dx, dy = x[..., :, :-1], x[..., :-1, :]
    return torch.sqrt(dx.pow(2).mean((-1, -2)) + dy.pow(2).mean((-1, -2)) + 1e-12)


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor,
                        true_difference_sf: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """1*MSE + 3*(1-SSIM) + 1*gradient + 2*SF, with each term for the record."""
    mse = F.mse_loss(reconstruction, target)
    structural = 1 - ssim(reconstruction, target)
    rx, ry = gradients(reconstruction)
    tx, ty = gradients(target)
    gradient = F.l1_loss(rx, tx) + F.l1_loss(ry, ty)
    sf = F.l1_loss(spatial_frequency(reconstruction, true_difference_sf), spatial_frequency(target, true_difference_sf))
    total = mse + 3 * structural + gradient + 2 * sf
    terms = {"total": total, "mse": mse, "one_minus_ssim": structural, "gradient": gradient, "sf": sf}
    return total, {name: term.detach().item() for name, term in terms.items()}


class TrainingSetupError(FusionError):
    """Raised when the training cannot start as asked (a number out of range, a crop larger than every image)."""


class TrainingDivergedError(FusionError):
    """Raised when the loss stops being finite; the checkpoint last written is kept."""


class TrainingStopped(Exception):
    """Raised after Ctrl-C, SIGTERM or SIGHUP, once the checkpoint is written."""

    def __init__(self, signal_name: str, checkpoint: Path, step: int, last_step: int):
        self.signal_name, self.checkpoint, self.step, self.last_step = signal_name, checkpoint, step, last_step
        super().__init__(f"stopped by {signal_name} at step {step}; checkpoint {checkpoint}")

    @property
    def exit_status(self) -> int:
        return 128 + int(getattr(signal, self.signal_name))


def progress_line(step: int, last_step: int, first_step: int, elapsed_s: float, losses: dict[str, float]) -> str:
    """``step 50 of 1500 (3%), 2 min 10 s so far, ~63 min left: total ...``; the time left at this run's pace."""
    done = step - first_step
    left_s = elapsed_s / done * (last_step - step) if done else 0.0
    return (f"step {step} of {last_step} ({100 * step // max(last_step, 1)}%), {duration_words(elapsed_s)} so far, "
            f"~{duration_words(left_s)} left: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))


def check_training_numbers(steps: int, batch: int, crop_px: int, lr: float, checkpoint_every: int) -> None:
    """TrainingSetupError naming the option whose number cannot train."""
    if steps < 0:
        raise TrainingSetupError(f"--steps {steps}: give 0 or more (0: only --export an existing checkpoint)")
    if batch < 1:
        raise TrainingSetupError(f"--batch {batch}: give 1 or more crops per step")
    if crop_px < MIN_CROP_PX:
        raise TrainingSetupError(f"--crop-px {crop_px}: give {MIN_CROP_PX} or more (the network halves it 4 times)")
    if not (math.isfinite(lr) and lr > 0):
        raise TrainingSetupError(f"--lr {lr}: give a learning rate above 0 (published: 1e-4)")
    if checkpoint_every < 1:
        raise TrainingSetupError(f"--checkpoint-every {checkpoint_every}: give 1 or more steps")


def images_for_crops(by_source: dict[str, list[np.ndarray]], crop_px: int) -> dict[str, list[np.ndarray]]:
    """The images that hold a ``crop_px`` crop, by source; TrainingSetupError when none does."""
    kept = {source: [im for im in images if min(im.shape) >= crop_px] for source, images in by_source.items()}
    if not any(kept.values()):
        largest_px = max((min(im.shape) for images in by_source.values() for im in images), default=0)
        raise TrainingSetupError(f"--crop-px {crop_px}: larger than every training image; the largest crop "
                                 f"they allow is {largest_px} px")
    return kept


def model_and_optimiser(previous: dict, seed: int, lr: float, device: torch.device):
    """The autoencoder, its AdamW and the crops' generator: new from ``seed``, or as the checkpoint ``previous``
    left them."""
    torch.manual_seed(seed)
    model = UMSAutoencoder().to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    if previous:
        model.load_state_dict(previous["model"])
        optimiser.load_state_dict(previous["optimiser"])
        for group in optimiser.param_groups:  # the optimiser's state brings back its old lr: --lr is this run's
            group["lr"] = lr
        if "crop_rng" in previous:  # continue the crops where the run stopped, not from the first run's start
            rng.bit_generator.state = previous["crop_rng"]
    return model, optimiser, rng


def given_or_loaded_images(images: list[np.ndarray] | dict[str, list[np.ndarray]] | None
                           ) -> dict[str, list[np.ndarray]]:
    """The training images by source: those given, or those installed (announced, with the time they took)."""
    if images is not None:
        return images if isinstance(images, dict) else {"given by the caller": list(images)}
    announce_loading()
    loading_started = time.time()
    by_source = load_training_images_by_source()
    print(f"loaded {sum(map(len, by_source.values()))} training images in "
          f"{duration_words(time.time() - loading_started)}", flush=True)
    return by_source


def train(steps: int, out: Path, resume: Path | None = None, batch: int = 8, crop_px: int = 64,
          lr: float = 1e-4, seed: int | None = None, true_difference_sf: bool = True, log_every: int = 50,
          images: list[np.ndarray] | dict[str, list[np.ndarray]] | None = None, device: str = "auto",
          checkpoint_every: int = CHECKPOINT_EVERY_STEPS) -> dict:
    """Train (or continue) for ``steps`` more steps; the checkpoint ``out`` and, beside it, a record of the run
    are written every ``checkpoint_every`` steps, at the end, and on Ctrl-C/SIGTERM/SIGHUP (then TrainingStopped).
    ``seed`` None: the resumed checkpoint's, else 0. Returns the record."""
    check_training_numbers(steps, batch, crop_px, lr, checkpoint_every)
    check_destination(out, "--out")
    torch_device = torch.device(usable_device(device))
    previous = read_checkpoint(resume) if resume is not None else {}
    seed = seed if seed is not None else int(previous.get("seed", 0))
    model, optimiser, rng = model_and_optimiser(previous, seed, lr, torch_device)
    by_source = images_for_crops(given_or_loaded_images(images), crop_px)
    training_images = [image for images_of_source in by_source.values() for image in images_of_source]
    first_step = int(previous.get("step", 0))
    last_step = first_step + steps
    history: list[dict] = list(previous.get("history", []))
    earlier_s = float(previous.get("seconds", 0.0))
    losses: dict[str, float] = dict(previous.get("losses", {}))
    started = time.time()

    def save(step: int, stopped_by: str | None = None) -> dict:
        seconds = earlier_s + time.time() - started
        state = {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "step": step, "seed": seed,
                 "crop_rng": rng.bit_generator.state, "losses": losses, "history": history, "seconds": seconds}
        record = {"command": " ".join(["python -m fusion.deep.train", *sys.argv[1:]]), "steps": step,
                  "batch": batch, "crop_px": crop_px, "lr": lr, "seed": seed, "device": str(torch_device),
                  "sf_loss": "true difference" if true_difference_sf else "published (no centre subtracted)",
                  "training_images": len(training_images),
                  "data": {source: len(images_of_source) for source, images_of_source in by_source.items()},
                  "seconds": round(seconds, 1), "final_losses": {k: round(v, 5) for k, v in losses.items()},
                  "history": history}
        if resume is not None:
            record["resumed_from"] = str(resume)
        if stopped_by:
            record["stopped_by"] = f"{stopped_by} at step {step} of {last_step}"
        return save_checkpoint_and_record(state, out, record)

    model.train()
    record: dict = {}
    notice = "stopping after this step; writing the checkpoint"
    with signals_deferred(notice) as stop_signals:  # a step and a checkpoint are never cut in half
        for step in range(first_step, last_step):
            target = random_batch(training_images, batch, crop_px, rng).to(torch_device)
            reconstruction, _ = model(target)
            loss, step_losses = reconstruction_loss(reconstruction, target, true_difference_sf)
            if not math.isfinite(step_losses["total"]):
                raise TrainingDivergedError(
                    f"the loss became {step_losses['total']} at step {step + 1} (--lr {lr:g}): the training diverged; "
                    f"{out} keeps the checkpoint last written; train again with a lower --lr")
            losses = step_losses
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            done = step + 1
            if done % log_every == 0 or done == last_step:
                history.append({"step": done, **{k: round(v, 5) for k, v in losses.items()}})
                print(progress_line(done, last_step, first_step, time.time() - started, losses), flush=True)
            if stop_signals:
                save(done, stop_signals[0])
                raise TrainingStopped(stop_signals[0], out, done, last_step)
            if done % checkpoint_every == 0 or done == last_step:
                record = save(done)
    return record or save(last_step)


# The options a run is continued with as it was started (the checkpoint keeps its seed and its crops' sequence).
CONTINUED_OPTIONS = ("batch", "crop_px", "lr", "device", "checkpoint_every")


def stopped_line(stop: TrainingStopped, args: argparse.Namespace) -> str:
    """Where the checkpoint is and the command that continues it, with the run's own options."""
    left = stop.last_step - stop.step
    again = f"python -m fusion.deep.train --steps {left} --resume {stop.checkpoint} --out {stop.checkpoint}"
    for name in CONTINUED_OPTIONS:
        again += f" --{name.replace('_', '-')} {getattr(args, name)}"
    if args.export is not None:
        again += f" --export {args.export}"
    return f"stopped by {stop.signal_name} at step {stop.step} of {stop.last_step}: checkpoint {stop.checkpoint}; " \
           f"to go on: {again}"


def check_destinations(args: argparse.Namespace) -> None:
    """CheckpointError before any training where --out or --export cannot be written, or one would overwrite
    the other, the checkpoint resumed, or their records."""
    check_destination(args.out, "--out")
    if args.export is None:
        return
    out, export = args.out.resolve(), args.export.resolve()
    if export == out:
        raise CheckpointError(f"--export {args.export}: is the checkpoint --out; export the weights to another file")
    if args.resume is not None and export == args.resume.resolve():
        raise CheckpointError(f"--export {args.export}: is the checkpoint --resume; export the weights to another file")
    if checkpoint_record(export) == checkpoint_record(out):
        raise CheckpointError(f"--export {args.export}: its record {checkpoint_record(args.export)} would replace the "
                              "checkpoint's; give it another name")
    check_destination(args.export, "--export")


def export_and_say(checkpoint: Path, weights: Path) -> None:
    """``export_weights``, its warnings said as notes (a record that is not the checkpoint's), and where it wrote."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        replaced = export_weights(checkpoint, weights)
    for warning in caught:
        print(f"note: {warning.message}", file=sys.stderr)
    print(f"weights: {weights}" + (f" ({replaced})" if replaced else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusion.deep.train", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps to run (0: only --export)")
    parser.add_argument("--out", type=Path, default=Path("checkpoints/ums_autoencoder.pt"), help="checkpoint to write")
    parser.add_argument("--resume", type=Path, help="checkpoint to continue from")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop-px", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, help="seed of the initial weights and the crops (default: the resumed "
                                                 "checkpoint's, else 0)")
    parser.add_argument("--device", default="auto",
                        help="torch device: auto (CUDA when present), cpu, cuda, cuda:N or mps")
    parser.add_argument("--checkpoint-every", type=int, default=CHECKPOINT_EVERY_STEPS, metavar="STEPS",
                        help=f"write the checkpoint every this many steps (default {CHECKPOINT_EVERY_STEPS})")
    parser.add_argument("--published-sf-loss", action="store_true",
                        help="the paper's SF loss (shifted intensities, no centre subtracted)")
    parser.add_argument("--export", type=Path, help="also write the shipped encoder weights here")
    args = parser.parse_args(argv)
    if args.steps == 0 and not args.export:
        parser.error("--steps 0 only makes sense with --export (export an existing checkpoint)")
    if not TORCH_DEVICE.fullmatch(args.device):
        parser.error(f"--device {args.device}: give auto, cpu, mps, cuda or cuda:N")
    try:
        check_training_numbers(args.steps, args.batch, args.crop_px, args.lr, args.checkpoint_every)
        usable_device(args.device)
        check_destinations(args)
        if args.steps == 0:
            read_checkpoint(args.out, "--out (the checkpoint to export)")
        else:
            if args.resume is None and args.out.exists():
                print(f"note: --out {args.out} exists; this run's checkpoint replaces it", file=sys.stderr)
            train(args.steps, args.out, args.resume, args.batch, args.crop_px, args.lr, args.seed,
                  true_difference_sf=not args.published_sf_loss, device=args.device,
                  checkpoint_every=args.checkpoint_every)
        if args.export:
            export_and_say(args.out, args.export)
    except (ExportRefusedError, TrainingDivergedError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    except (CheckpointError, TrainingSetupError, DeviceUnavailableError) as error:
        parser.error(str(error))
    except TrainingStopped as stop:
        print(stopped_line(stop, args), file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:  # (before the training loop, which holds signals: only the loading can be cut)
        print("stopped before training began: nothing written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
