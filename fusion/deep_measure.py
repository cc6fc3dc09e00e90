"""The UMS-Fusion focus measure: spatial frequency of the network's deep features.

Features are computed on a copy of the slice downscaled to ``feature_width_px`` (the paper
resizes everything to 717x600; we keep the output at full resolution and only look at a
smaller copy), and the measure map is scaled back up to full resolution.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fusion.errors import FusionError

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "ums_unetpp.pt"


class WeightsError(FusionError):
    """Raised when a weights file is missing, corrupt, or made for another network."""


def load_encoder(weights: Path = DEFAULT_WEIGHTS, device: str = "auto"):
    """The trained UNet++ encoder in eval mode, on CUDA when asked or available ("auto")."""
    import torch

    from fusion.network import UNetPlusPlus

    weights = Path(weights)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not weights.is_file():
        raise WeightsError(f"{weights}: no such weights file (train with python -m fusion.train --export PATH)")
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
    except Exception as error:
        raise WeightsError(f"{weights}: not a readable weights file ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{weights}: expected a state_dict, found {type(state).__name__}")
    encoder = UNetPlusPlus()
    try:
        encoder.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (RuntimeError, AttributeError) as error:
        first = str(error).strip().splitlines()[0]
        raise WeightsError(f"{weights}: these weights do not fit the UMS-Fusion UNet++ ({first})") from None
    encoder = encoder.to(device).eval()
    if device == "cpu":
        encoder = encoder.to(memory_format=torch.channels_last)
    return encoder, device


@dataclass
class DeepSpatialFrequency:
    """Focus measure "ums": per channel gradient magnitude of the deep features against the left
    and upper neighbours, summed over the window and over the channels (the published measure)."""

    window_px: int = 31
    weights: Path = DEFAULT_WEIGHTS
    device: str = "auto"
    feature_width_px: int = 480  # 5 MP on 2 CPU cores: 0.63 s per slice (320 px: 0.31 s, 240 px: 0.19 s)
    name: str = "ums"
    _encoder: object = field(default=None, repr=False)
    _scale: float | None = field(default=None, repr=False)

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        import torch

        from fusion.network import feature_spatial_frequency

        if self._encoder is None:
            self._encoder, self.device = load_encoder(self.weights, self.device)
        if self._scale is None:  # one intensity scale for the whole stack, so slices compare
            self._scale = max(float(np.percentile(gray[::4, ::4], 99.9)), 1e-6)
        height, width = gray.shape
        factor = min(1.0, self.feature_width_px / width)
        small = gray if factor == 1.0 else cv2.resize(gray, (round(width * factor), max(8, round(height * factor))),
                                                      interpolation=cv2.INTER_AREA)
        window = max(3, int(round(self.window_px * factor)) | 1)
        tensor = torch.from_numpy(np.clip(small / self._scale, 0, 1.5) * 2 - 1).float()[None, None].to(self.device)
        if self.device == "cpu":
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            measure = feature_spatial_frequency(self._encoder(tensor), window)[0].float().cpu().numpy()
        if factor < 1.0:
            measure = cv2.resize(measure, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(np.maximum(measure, 0), dtype=np.float32)
