"""The UMS-Fusion focus measure: spatial frequency of the network's deep features.

Features are computed on a copy of the slice downscaled to ``feature_width_px`` (the paper
resizes everything to 717x600; we keep the output at full resolution and only look at a
smaller copy), and the measure map is scaled back up to full resolution.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fusion.errors import FusionError

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "ums_unetpp.pt"


class WeightsError(FusionError):
    """Raised when a weights file is missing, corrupt, or made for another network."""


class DeviceUnavailableError(FusionError):
    """Raised when the torch device asked for is not there (CUDA or MPS without a GPU that torch can use, a
    CUDA index past the GPUs torch sees)."""


GOOD_WEIGHTS = ("restore the shipped file (git checkout -- fusion/deep/weights/ums_unetpp.pt) "
                "or train new weights (python -m fusion.deep.train --export PATH)")


def weights_record(weights: Path) -> Path:
    """The training record shipped beside a weights file (same name, .json)."""
    return Path(weights).with_suffix(".json")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_weights_digest(weights: Path) -> None:
    """Raise WeightsError when the weights' sha256 differs from the one in their record.

    Weights without a record, or with a record that gives no sha256, are not checked here
    (the engine still refuses NaN or infinite focus maps).
    """
    record_path = weights_record(weights)
    try:
        expected = json.loads(record_path.read_text()).get("sha256") if record_path.is_file() else None
    except (OSError, ValueError, AttributeError):
        raise WeightsError(f"{record_path}: the weights' record is not readable JSON; {GOOD_WEIGHTS}") from None
    if expected is None:
        return
    actual = sha256_of(weights)
    if actual != expected:
        raise WeightsError(f"{weights}: the weights file is damaged (its sha256 is {actual[:12]}..., its record "
                           f"{record_path.name} says {str(expected)[:12]}...); {GOOD_WEIGHTS}")


def usable_device(device: str = "auto") -> str:
    """``device`` as torch will use it ("auto": CUDA when present, else the CPU); DeviceUnavailableError
    where torch cannot use it here (no CUDA GPU, no GPU of that index, no Apple GPU for "mps")."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    wanted = torch.device(device)
    if wanted.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceUnavailableError(f"device {device!r}: torch sees no CUDA GPU here "
                                         "(torch.cuda.is_available() is False); use --device cpu, or auto")
        if wanted.index is not None and wanted.index >= count:
            raise DeviceUnavailableError(f"device {device!r}: torch sees {count} CUDA GPU{'s' if count > 1 else ''} "
                                         f"here (cuda:0 to cuda:{count - 1}); use one of them, --device cpu, or auto")
    elif wanted.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(f"device {device!r}: torch sees no Apple GPU here "
                                     "(torch.backends.mps.is_available() is False); use --device cpu, or auto")
    return device


# The encoder last loaded, by weights file (as it was then: its record too) and device. A session checks that its
# measure can run before it acquires (fusion.engine.check_measure_can_run), then its engine loads the measure
# again, as does each z-stack of a multi-dimensional session and each stack of a batch on a worker: read once.
# One entry: the network holds 3 MB, on the GPU too, for as long as the process lives.
_last_loaded: tuple[tuple, Any] | None = None


def load_encoder(weights: Path = DEFAULT_WEIGHTS, device: str = "auto"):
    """The trained UNet++ encoder in eval mode, on ``device`` (see ``usable_device``), and that device.

    The same weights file, unchanged, onto the same device is read once in a process: the encoder returned
    is then shared, for inference only. A file changed since (or its record) is read and checked again."""
    global _last_loaded

    weights = Path(weights)
    device = usable_device(device)  # first: a device that is not there is no fault of the weights file
    if not weights.is_file():
        raise WeightsError(f"{weights}: no such weights file (train with python -m fusion.deep.train --export PATH)")
    key = (_file_identity(weights), _file_identity(weights_record(weights)), device)
    if _last_loaded is not None and _last_loaded[0] == key:
        return _last_loaded[1], device
    encoder = _read_encoder(weights, device)
    _last_loaded = (key, encoder)
    return encoder, device


def _file_identity(path: Path) -> tuple | None:
    """What tells a file from another or from itself rewritten: its device and inode, size and times of change
    (None: no file)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _read_encoder(weights: Path, device: str):
    """``load_encoder`` without its cache: the weights file checked against its record, read, and put on the
    (usable) ``device``."""
    import torch

    from fusion.deep.network import UNetPlusPlus

    check_weights_digest(weights)
    try:  # read on the CPU, so that only the file can fail here; the encoder moves to the device below
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:
        # torch's own message runs to many lines and suggests loading the file unsafely: one line instead.
        raise WeightsError(f"{weights}: not a readable weights file: it is damaged or not a PyTorch state_dict "
                           f"({type(error).__name__}); {GOOD_WEIGHTS}") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{weights}: expected a state_dict, found {type(state).__name__}")
    encoder = UNetPlusPlus()
    try:
        encoder.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (RuntimeError, AttributeError) as error:
        first = str(error).strip().splitlines()[0]
        raise WeightsError(f"{weights}: these weights do not fit the UMS-Fusion UNet++ ({first})") from None
    try:
        encoder = encoder.to(device).eval()
    except RuntimeError as error:  # there, but torch cannot use it (out of memory, a driver fault)
        first = str(error).strip().splitlines()[0]
        raise DeviceUnavailableError(f"device {device!r}: torch cannot put the network there ({first}); "
                                     "use --device cpu") from None
    if device == "cpu":
        encoder = encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it; documented in Module.to
    return encoder


PRECISIONS = ("auto", "float32", "float16", "bfloat16")


@dataclass
class DeepSpatialFrequency:
    """Focus measure "ums": per channel gradient magnitude of the deep features against the left
    and upper neighbours, summed over the window and over the channels (the published measure).

    precision: "auto" runs float16 on CUDA (tensor cores), bfloat16 on CPUs that compute it
    natively, float32 elsewhere. ``measure_batch`` measures several same-sized slices in one pass.
    """

    window_px: int = 31
    weights: Path = DEFAULT_WEIGHTS
    device: str = "auto"
    feature_width_px: int = 480  # 4 MP, 2 CPU cores: 1.65 slices/s float32, 2.97 bfloat16 (320 px: 3.9, 6.2)
    precision: str = "auto"
    name: str = "ums"
    _encoder: Any = field(default=None, repr=False)  # a torch Module, loaded on first use
    _scale: float | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {PRECISIONS}")

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        return self.measure_batch([gray])[0]

    def load(self) -> None:
        """Load the weights onto the device now (else on first use); raises WeightsError or
        DeviceUnavailableError. ``device`` then names the device resolved ("auto": cuda or cpu)."""
        if self._encoder is None:
            self._encoder, self.device = load_encoder(self.weights, self.device)

    def energy(self, gray: np.ndarray) -> np.ndarray:
        """The deep-feature SF per pixel (no window), squared: what the pyramid pools."""
        return self.measure_batch([gray], window_px=1)[0] ** 2

    def measure_batch(self, grays: list[np.ndarray], window_px: int | None = None) -> list[np.ndarray]:
        """The measure maps of same-sized slices, computed in one batch through the network.

        ``window_px`` overrides the summing window (1: the per-pixel response)."""
        import torch

        from fusion.deep.network import feature_spatial_frequency

        self.load()
        if self._scale is None:  # one intensity scale for the whole stack, so slices compare
            self._scale = max(float(np.percentile(grays[0][::4, ::4], 99.9)), 1e-6)
        height, width = grays[0].shape
        factor = min(1.0, self.feature_width_px / width)
        size = (round(width * factor), max(8, round(height * factor)))
        smalls = [g if factor == 1.0 else cv2.resize(g, size, interpolation=cv2.INTER_AREA) for g in grays]
        window_px = self.window_px if window_px is None else window_px
        window = 1 if window_px == 1 else max(3, int(round(window_px * factor)) | 1)
        batch = np.stack([np.clip(small / self._scale, 0, 1.5) * 2 - 1 for small in smalls])[:, None]
        tensor = torch.from_numpy(batch).float().to(self.device)
        if self.device == "cpu":
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        dtype = self._compute_dtype(torch)
        with torch.inference_mode():
            with torch.autocast(device_type=torch.device(self.device).type, dtype=dtype,
                                enabled=dtype != torch.float32):
                features = self._encoder(tensor)
            # The window sums reach 1e4 and more: float16 would overflow, so they are float32.
            measures = feature_spatial_frequency(features.float(), window).cpu().numpy()
        out = []
        for measure in measures:
            if factor < 1.0:
                measure = cv2.resize(measure, (width, height), interpolation=cv2.INTER_LINEAR)
            out.append(np.ascontiguousarray(np.maximum(measure, 0), dtype=np.float32))
        return out

    def _compute_dtype(self, torch):
        if self.precision != "auto":
            return getattr(torch, self.precision)
        if torch.device(self.device).type == "cuda":
            return torch.float16
        # Measured on rendered stacks: bfloat16 gives the same PSNR to 0.01 dB and is 1.8x faster
        # where the CPU computes it natively (AVX512-BF16, AMX); elsewhere it is emulated and slow.
        return torch.bfloat16 if _cpu_has_native_bfloat16(torch) else torch.float32


def _cpu_has_native_bfloat16(torch) -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
