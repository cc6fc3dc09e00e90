"""Unsupervised training of the UMS-Fusion network: reconstruct the input from its features.

    python -m fusion.deep.train --steps 1500 --out checkpoints/ums_autoencoder.pt \
        --export fusion/deep/weights/ums_unetpp.pt
    python -m fusion.deep.train --steps 500 --resume checkpoints/ums_autoencoder.pt --out checkpoints/more.pt

Loss (as published): 1*MSE + 3*(1-SSIM) + 1*gradient + 2*SF, AdamW (lr 1e-4), random crops
and flips. No labels and no stacks: the images are those installed packages ship
(scikit-image's data), frames of the real stacks in ../shared/data when present, and
synthetic textures; nothing is downloaded. Checkpoints are state_dicts (model, optimiser,
step); ``--resume`` continues one. Runs on CUDA when present, else the CPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from fusion.deep.deep_measure import sha256_of
from fusion.deep.network import UMSAutoencoder

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SKIMAGE_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "gravel", "brick", "grass", "moon", "text", "rocket",
                  "coins", "page", "hubble_deep_field", "retina", "immunohistochemistry", "cell", "horse")


def load_training_images(max_side_px: int = 768, include_real_stacks: bool = True) -> list[np.ndarray]:
    """Grayscale float32 images in [0, 1]: scikit-image's data, real-stack frames, synthetic textures."""
    import skimage.data
    from scipy import ndimage
    from skimage.color import rgb2gray
    from skimage.transform import rescale

    images = []
    for name in SKIMAGE_IMAGES:
        try:
            image = getattr(skimage.data, name)()
        except Exception:  # an image the installed scikit-image would have to download
            continue
        images.append(image)
    if include_real_stacks and SHARED_DATA.is_dir():
        from fusion.readers import open_stack

        for folder in sorted(p for p in SHARED_DATA.iterdir() if p.is_dir()):
            with open_stack(folder) as stack:
                for index in range(0, stack.n_slices, max(1, stack.n_slices // 4)):
                    images.append(stack.read_slice(index))
    rng = np.random.default_rng(0)
    for sigma in (0.7, 1.5, 3.0):  # synthetic textures at a few scales
        images.append(ndimage.gaussian_filter(rng.random((512, 512)), sigma))
    prepared = []
    for image in images:
        gray = image.astype(np.float32)
        if gray.ndim == 3:
            gray = rgb2gray(gray[..., :3] / (255.0 if image.dtype == np.uint8 else gray.max() or 1.0))
        else:
            gray = gray / (255.0 if image.dtype == np.uint8 else max(float(gray.max()), 1e-6))
        factor = min(1.0, max_side_px / max(gray.shape))
        if factor < 1:
            gray = rescale(gray, factor, anti_aliasing=True)
        prepared.append(np.clip(gray, 0, 1).astype(np.float32))
    return prepared


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


def device_for_training() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(steps: int, out: Path, resume: Path | None = None, batch: int = 8, crop_px: int = 64,
          lr: float = 1e-4, seed: int = 0, true_difference_sf: bool = True, log_every: int = 50,
          images: list[np.ndarray] | None = None) -> dict:
    """Train (or continue) and save the checkpoint and, beside ``out``, a record of the run."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = device_for_training()
    model = UMSAutoencoder().to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    start_step = 0
    if resume is not None:
        checkpoint = torch.load(resume, map_location=device, weights_only=True)
        model.load_state_dict(checkpoint["model"])
        optimiser.load_state_dict(checkpoint["optimiser"])
        start_step = int(checkpoint["step"])
    images = images if images is not None else load_training_images()
    images = [im for im in images if min(im.shape) >= crop_px]
    model.train()
    started, history = time.time(), []
    losses: dict[str, float] = {}
    for step in range(start_step, start_step + steps):
        target = random_batch(images, batch, crop_px, rng).to(device)
        reconstruction, _ = model(target)
        loss, losses = reconstruction_loss(reconstruction, target, true_difference_sf)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if (step + 1) % log_every == 0 or step == start_step + steps - 1:
            history.append({"step": step + 1, **{k: round(v, 5) for k, v in losses.items()}})
            print(f"step {step + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "step": start_step + steps}, out)
    record = {"command": " ".join(["python -m fusion.deep.train", *sys.argv[1:]]), "steps": start_step + steps,
              "batch": batch, "crop_px": crop_px, "lr": lr, "seed": seed, "device": str(device),
              "sf_loss": "true difference" if true_difference_sf else "published (no centre subtracted)",
              "training_images": len(images), "data": "scikit-image data, frames of ../shared/data stacks, "
                                                      "synthetic textures", "seconds": round(time.time() - started, 1),
              "final_losses": {k: round(v, 5) for k, v in losses.items()}, "history": history}
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def export_weights(checkpoint: Path, weights: Path) -> None:
    """The shipped file: the encoder's state_dict in float16 (half the size; features are unaffected),
    with the checkpoint's training record copied beside it."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    encoder = {k[len("encoder."):]: (v.half() if v.is_floating_point() else v) for k, v in state.items()
               if k.startswith("encoder.")}
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(encoder, weights)
    record_path = checkpoint.with_suffix(".json")
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    record["exported_from"] = checkpoint.name
    record["sha256"] = sha256_of(weights)  # checked on load: a damaged file is an error, not NaN scores
    weights.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("checkpoints/ums_autoencoder.pt"), help="checkpoint to write")
    parser.add_argument("--resume", type=Path, help="checkpoint to continue from")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop-px", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--published-sf-loss", action="store_true",
                        help="the paper's SF loss (shifted intensities, no centre subtracted)")
    parser.add_argument("--export", type=Path, help="also write the shipped encoder weights here")
    args = parser.parse_args(argv)
    if args.steps > 0:
        train(args.steps, args.out, args.resume, args.batch, args.crop_px, args.lr,
              true_difference_sf=not args.published_sf_loss)
    elif not args.export:
        parser.error("--steps 0 only makes sense with --export (export an existing checkpoint)")
    if args.export:
        export_weights(args.out, args.export)
        print(f"weights: {args.export}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
