"""The streaming fusion engine: slices in as they arrive, an all-in-focus image out.

Memory is O(H*W) whatever the depth. The engine checks each slice, aligns it, and hands it to
its composition: "pyramid" (the default: ``fusion.pyramid_composition``, per-level weighted
sums of the slices' Laplacian pyramids) or the single-scale "blend" and "pick"
(``fusion.single_scale``); "pick" reads slices back from disk (see ``slice_store``) only where
the final, cleaned decision map differs from the running one.
"""
from __future__ import annotations

import decimal
import json
import math
import numbers
import operator
import os
import re
import threading
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from fusion.align.alignment import AUTO_MIN_MOTION_PX, AlignSettings, SliceAligner, describe, \
    max_displacement_px, warp_mask, warp_to_reference
from fusion.blank_slices import left_out_warning, noise_only, value_step
from fusion.decision import default_mode_filter_px
from fusion.depth_z import as_depth, indistinct_z
from fusion.errors import EmptyStackError, InvalidPixelsError, SliceMismatchError, FrameShapeError, slice_name
from fusion.focus_measures import DEFAULT_WINDOW_PX, even_channel_weights, make_measure, to_gray
from fusion.multiscale import PyramidWeighting
from fusion.no_data import MissingData, filled, missing_pixels
from fusion.overlap import OneAhead, kernels_may_run_concurrently, made_beside
from fusion.pixel_conversion import digits_kept, fused_as
from fusion.pyramid_composition import PyramidComposition
from fusion.single_scale import SingleScaleComposition
from fusion.slice_store import SliceSource, TemporaryTiffStore

COMPOSITIONS = ("pyramid", "blend", "pick")
TORCH_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")  # the deep measure's devices
SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
MAX_SLICES = np.iinfo(np.int16).max  # chosen-slice maps are int16
# Channels of a frame (H, W, C): mono, RGB(A), separate fluorescence channels, a spectral detector's 32. A shape with
# more on its last axis and at most this many on its first reads as a (C, H, W) frame (a channels-first array, as
# tifffile and many libraries give them), refused: fused, it was a frame 3 pixels high with 512 channels. A caller
# who knows its axes says so (``channels_last``): a saved stack's reader does.
PLAUSIBLE_CHANNELS = 32
# cv2's pyramid filters take at most this many channels (129 failed deep in a slice's fold: an assertion of OpenCV's).
PYRAMID_MAX_CHANNELS = 128
# A focus position beyond this (in µm, dpt or mA) is not one: a stage travels centimetres, a lens tens of dioptres
# or hundreds of mA. Garbage (1e300, a saved stack's or a caller's) overflowed the depth map's float32 into NaN
# everywhere. Pushed z and saved stacks' positions (``SavedStack.usable_focus_positions``) are held to it.
FOCUS_POSITION_LIMIT = 1e6
# Widths beyond any frame's side change nothing and only cost time (a feather's cost grows with its sigma:
# 1e4 px on a 320 x 256 frame ran for minutes) or overflow the kernels' integers.
MAX_WIDTH_PX = 1000
# (measure / best) ** 1000 is already 1.7e-9 for a slice 2% less sharp than the best: beyond it, blend is pick.
MAX_SHARPNESS = 1000.0
# The single-scale compositions' settings, each with the compositions that use it (the pyramid uses none of them).
SINGLE_SCALE_SETTINGS = {"window_px": ("blend", "pick"), "sharpness": ("blend",), "feather_px": ("pick",)}


@dataclass(frozen=True)
class FusionSettings:
    """How slices are ranked and composed.

    composition: "pyramid" (default) fuses per level of a Laplacian pyramid with soft weights
        from the measure's finest response (see ``fusion.multiscale``; ``pyramid`` sets how);
        "pick" copies each pixel from its chosen slice (the paper); "blend" weights every slice
        by (windowed measure / best) ** sharpness at full resolution.
    window_px, sharpness, mode_filter_px, feather_px: the single-scale compositions' settings.
    mode_filter_px: width of the majority filter on the decision map; None picks about
        min(H, W) / 20 as the paper does, 0 turns it off. It shapes the depth map, and the
        image too when composing by "pick".
    feather_px: with "pick", blend across decision-map seams with a Gaussian of this sigma.
    align: "off", "on" (register every slice to the first and warp it before measuring and
        composing) or "auto" (warp only slices that moved by more than half a pixel).
    align_model: "similarity", "scale_shift", "affine" or "lens" (tunable lenses: see ``align.lens_breathing``).
    weights: the "ums" measure's UNet++ weights file (``python -m fusion.deep.train --export``); None: the shipped
        ones (``fusion/deep/weights/ums_unetpp.pt``).
    """

    measure: str = "sf"
    window_px: int = DEFAULT_WINDOW_PX
    composition: str = "pyramid"
    pyramid: PyramidWeighting = field(default_factory=PyramidWeighting)
    # Measured on rendered stacks (benchmarks/quality.py): 16-32 beats pick by 1-2 dB on dense,
    # noisy stacks and ties it on sparse ones; only noise-free data prefers pick.
    sharpness: float = 32.0
    mode_filter_px: int | None = None
    feather_px: float = 0.0
    align: str = "off"
    align_model: str = "similarity"
    device: str = "auto"  # torch device for deep measures: "cuda", "cpu", or "auto" (CUDA when present)
    weights: str | None = None  # the deep measure's weights file; None: the shipped ones

    def __post_init__(self):
        self._check_types()
        self._check_weights_path()
        AlignSettings(mode=self.align, model=self.align_model)  # validates both
        make_measure(self.measure, self.window_px)  # validates name and window
        if self.composition not in COMPOSITIONS:
            raise ValueError(f"unknown composition {self.composition!r}; choose one of {COMPOSITIONS}")
        if not 0 < self.sharpness < math.inf:  # NaN too: it gave an all-black image
            raise ValueError(f"sharpness must be a positive number, got {self.sharpness}")
        if self.sharpness > MAX_SHARPNESS:
            raise ValueError(f"sharpness must be at most {MAX_SHARPNESS:g}, got {self.sharpness:g}: beyond it the "
                             "blend weighs only the sharpest slice; compose by pick instead")
        if self.mode_filter_px is not None and self.mode_filter_px < 0:
            raise ValueError(f"mode_filter_px must be 0 (off) or more, got {self.mode_filter_px}")
        if not 0 <= self.feather_px < math.inf:
            raise ValueError(f"feather_px must be 0 (off) or a positive number, got {self.feather_px}")
        for name in ("window_px", "mode_filter_px", "feather_px"):
            width_px = getattr(self, name)
            if width_px is not None and width_px > MAX_WIDTH_PX:
                raise ValueError(f"{name} must be at most {MAX_WIDTH_PX} px, got {width_px}: wider than a "
                                 "frame changes nothing, and costs time")
        if not TORCH_DEVICE.fullmatch(self.device):
            raise ValueError(f"unknown device {self.device!r}; use auto, cpu, cuda, cuda:N or mps")

    def _check_weights_path(self) -> None:
        if isinstance(self.weights, os.PathLike):  # (a Path from Python: kept as text, as a profile gives it)
            object.__setattr__(self, "weights", os.fspath(self.weights))
        if self.weights is not None and (not isinstance(self.weights, str) or not self.weights.strip()):
            raise TypeError(f"fusion setting weights must be a weights file's path, got {self.weights!r}")

    def _check_types(self) -> None:
        """Each setting of the type it needs, said by its name, before any use: a width of 2.5 px reached the numba
        kernels (a TypingError after the whole stack was pushed), text ('7') failed in a comparison, a pyramid of
        None as an AttributeError. Whole numbers come as Python ints, numpy ints or whole floats (7.0: as YAML and
        JSON may give them) and are kept as ints; real numbers as floats."""
        for name in ("measure", "composition", "align", "align_model", "device"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"fusion setting {name} must be a string, got {type(value).__name__} {value!r}")
        for name in ("window_px", "mode_filter_px"):
            value = getattr(self, name)
            if value is not None or name == "window_px":
                object.__setattr__(self, name, _whole_px(name, value))
        for name in ("sharpness", "feather_px"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                raise TypeError(f"fusion setting {name} must be a number, got {type(value).__name__} {value!r}")
            object.__setattr__(self, name, float(value))
        if isinstance(self.pyramid, Mapping):  # as read back from a JSON report or a profile
            object.__setattr__(self, "pyramid", PyramidWeighting(**self.pyramid))
        if not isinstance(self.pyramid, PyramidWeighting):
            raise TypeError("fusion setting pyramid must be a PyramidWeighting or a mapping of its fields, "
                            f"got {type(self.pyramid).__name__} {self.pyramid!r}")

    @classmethod
    def from_mapping(cls, settings: Mapping) -> FusionSettings:
        """Settings from a mapping of their fields (``method`` is taken for ``measure``, as the command line and
        profiles name it); an unknown name is a ValueError listing the known ones."""
        given = dict(settings)
        if "method" in given:
            if "measure" in given:
                raise ValueError("fusion settings: give method or measure (the same setting), not both")
            given["measure"] = given.pop("method")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(name) for name in set(given) - known)
        if unknown:
            raise ValueError(f"unknown fusion setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return cls(**given)

    def to_json(self) -> dict:
        """The settings as a JSON mapping (per-level powers as lists), as reports record them (as asked)."""
        return json.loads(json.dumps(asdict(self)))

    def that_count(self) -> dict:
        """``to_json`` with each setting that changes nothing in the outputs at its default: a single-scale
        composition's setting under another composition (``SINGLE_SCALE_SETTINGS``), ``align_model`` with alignment
        off, ``device`` for a measure without torch. Two settings that fuse alike give the same mapping: ``--resume``
        compares these (an option that the run itself said has no effect fused every stack again)."""
        defaults = FusionSettings()
        unused = [name for name, used_by in SINGLE_SCALE_SETTINGS.items() if self.composition not in used_by]
        unused += ["align_model"] if self.align == "off" else []
        unused += ["device", "weights"] if self.measure != "ums" else []
        return replace(self, **{name: getattr(defaults, name) for name in unused}).to_json()


def _whole_px(name: str, value) -> int:
    """A width in pixels as an int: a Python or numpy integer, or a float that is a whole number (7.0)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"fusion setting {name} must be a whole number of pixels, got {type(value).__name__} "
                        f"{value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if not float(value).is_integer():
        raise ValueError(f"fusion setting {name} must be a whole number of pixels, got {value!r}")
    return int(value)


def check_measure_can_run(settings: FusionSettings) -> None:
    """Load what the settings' focus measure needs (the "ums" measure: its weights, onto its torch device)
    now, as a session starts, not at its first slice: raises the measure's own error (``WeightsError``,
    ``DeviceUnavailableError``). Classical measures need nothing."""
    measure = make_measure(settings.measure, settings.window_px, settings.device, settings.weights)
    load = getattr(measure, "load", None)
    if load is not None:
        load()


@made_beside("decision", "depth")
@dataclass
class FusionResult:
    """What ``finish()`` returns. Arrays are numpy order: (height, width[, channels])."""

    fused: np.ndarray            # the slices' shape and dtype
    # float32 (H, W): z in focus there, or a slice index; NaN: textureless. The pyramid composition makes it after the
    # fused image, which a live session waits for: it may be given as a Future, which reading it waits for
    # (``made_beside``).
    depth: np.ndarray
    depth_unit: str              # the z's unit (StreamingFusion's ``z_unit``) when every slice had a z, else
    #                              "slice index"
    # int16 (H, W): chosen slice per pixel, after cleaning. The pyramid composition makes it after the fused image
    # and depth map (reports and channels that follow another's decision read it, the image does not): it may be
    # given as a Future, which reading it waits for (``made_beside``).
    decision: np.ndarray
    focus_scores: list[float]    # per slice: mean focus measure over the frame
    z_positions: list[float | None]
    seconds: dict[str, float] = field(default_factory=dict)
    alignment: list[dict] | None = None  # per slice: scale, rotation, shift, matrix, warped
    measure_device: str | None = None    # the torch device a deep measure ran on ("cpu", "cuda"); None: no torch
    channel_weights: list[float] | None = None  # separate channels: each one's weight in the grey that was measured

    def with_depth(self) -> FusionResult:
        """This result once its depth map, which may be made beside the image, is made: a failure there is raised
        here, where the caller says that fusion failed, not where the depth map is next read (its writing)."""
        _ = self.depth  # (reading waits for it: ``made_beside``)
        return self

    def chosen_fraction(self) -> list[float]:
        """Per slice, the share of pixels that chose it, counted where the depth is defined: where
        no slice is sharper than another (textureless areas, NaN depth) the choice is noise."""
        decision = self.decision
        defined = np.isfinite(self.depth)
        if defined.shape == decision.shape and defined.any():
            decision = decision[defined]
        counts = np.bincount(decision.ravel(), minlength=len(self.focus_scores))
        return (counts / max(int(counts.sum()), 1)).round(5).tolist()


class StreamingFusion:
    """Fuses a focus stack slice by slice.

    ``source`` gives slices back by index when the final composition needs them (a saved
    stack or the session's buffer); without one, and when composing by "pick", pushed
    slices go to a temporary TIFF.
    ``channels_are_colour``: whether a slice's channels (H, W, C) are one colour picture's samples (a camera's
    RGB: the focus measure sees their luminance) or separate images (fluorescence channels, as a stack's reader
    tells: ``SavedStack.channels_are_colour``), which it sees evenly, each scaled by its own light
    (``even_channel_weights``, from the first slice with more than noise), so that a dim channel steers the focus as a
    bright one does.
    ``z_unit``: the unit of the z pushed with the slices, and so of the depth map (a tunable lens's "dpt").
    ``channels_last``: whether a 3-D ``shape`` is (H, W, C). None (unknown): it is, unless it reads as channels first
    (at most ``PLAUSIBLE_CHANNELS`` on its first axis and more on its last), which is refused; True: it is, whatever
    its sizes (a frame 16 pixels high with 40 channels); False: it is (C, H, W), which the engine does not take.
    """

    def __init__(self, shape: tuple[int, ...], dtype, settings: FusionSettings | None = None,
                 source: SliceSource | None = None, name: str = "pushed stack", channels_are_colour: bool = True,
                 z_unit: str = "um", channels_last: bool | None = None):
        self.shape = _frame_shape(shape, name, channels_last)
        # A big-endian TIFF's pixels, as some readers give them, are fused as the same values in native order.
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self.settings = settings or FusionSettings()
        self.name = name
        self.z_unit = z_unit
        channels = self.shape[2] if len(self.shape) == 3 else 1
        if self.settings.composition == "pyramid" and channels > PYRAMID_MAX_CHANNELS:
            raise FrameShapeError(f"{name}: a frame of {channels} channels; the pyramid composition takes at most "
                                  f"{PYRAMID_MAX_CHANNELS} (OpenCV's filters): fuse it with composition 'blend' (or "
                                  "'pick'), or fuse its channels in groups")
        if self.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"{name}: unsupported pixel type {self.dtype}; use one of "
                             f"{[str(d) for d in SUPPORTED_DTYPES]}{_how_to_convert(self.dtype)}")
        self._measure = make_measure(self.settings.measure, self.settings.window_px, self.settings.device,
                                     self.settings.weights)
        self._even_channels = len(self.shape) == 3 and not channels_are_colour
        # (from the first slice that shows more than noise: every slice's grey after it alike)
        self._channel_weights: np.ndarray | None = None
        self._weighed_on_detail = False
        # Only "pick" reads slices back; blending keeps all it needs in its running sums.
        needs_slices_back = self.settings.composition == "pick"
        self._own_store = TemporaryTiffStore() if source is None and needs_slices_back else None
        self._source: SliceSource | None = source if source is not None else self._own_store
        if source is not None and self.dtype.kind == "f":  # read back as pushed: NaN filled (fusion/no_data.py)
            self._source = _FilledSource(source)
        self._missing = MissingData()
        self._aligner = None
        self._warped: list[bool] = []
        if self.settings.align != "off":
            self._aligner = SliceAligner(self.shape[:2], AlignSettings(self.settings.align, self.settings.align_model),
                                         name=name, label=getattr(source, "slice_label", None),  # a file's name
                                         value_step=value_step(self.dtype))
            if self._source is not None:
                self._source = _AlignedSource(self._source, self)
        mode_filter_px = self.settings.mode_filter_px
        if mode_filter_px is None:
            mode_filter_px = default_mode_filter_px(self.shape)
        if self.settings.composition == "pyramid":
            self._composition = PyramidComposition(self.shape, self.dtype, self._measure, self.settings.measure,
                                                   self.settings.pyramid, mode_filter_px, name)
        else:
            self._composition = SingleScaleComposition(
                self.shape, self.dtype, self._measure, self.settings.measure, self.settings.composition == "blend",
                self.settings.sharpness, mode_filter_px, self.settings.feather_px, name)
        self._focus_scores: list[float] = []
        self._z_positions: list[float | None] = []
        # The z pushed so far, by the depth map's value of each: a z that rounds to another's there is refused.
        self._z_by_depth: dict[float, tuple[int, float]] = {}  # (the first slice at each: its index and z)
        self._seconds = {"measure": 0.0, "store": 0.0}
        self._finished = False
        self._result: FusionResult | None = None   # what finish() gave: given again by a second call
        self._pushed = 0
        # Held while a slice is folded into the composition (and its score and z recorded), and while result() and
        # preview() read it: a reader on another thread (a live view) sees the engine between slices, never halfway
        # through one, whatever the composition.
        self._lock = threading.RLock()
        # Held through a whole push (checks, the store of a "pick", alignment, the fold) and through finish(): pushes
        # from several threads go in one at a time, and finish() waits for one under way. Never taken under
        # ``_lock``: result() and preview() take only that, so they read between two slices even mid-push.
        self._push_lock = threading.RLock()
        self._compose_error: BaseException | None = None   # a slice composed on another thread that failed
        # Aligning, the next slice is registered while the last one is composed (both cores busy).
        self._overlap = OneAhead("compose") if self._aligner is not None and kernels_may_run_concurrently() else None

    @property
    def n_slices(self) -> int:
        """Slices fused so far."""
        self._settle()
        return len(self._focus_scores)

    def push(self, pixels: np.ndarray, z: float | None = None) -> None:
        """Fold in the next slice. ``z`` is its focus position (e.g. micrometres), if known.

        Safe from several threads: pushes are taken one at a time, in the order they get in (``_push_lock``), so
        slices pushed from several threads are fused in that order, each once; ``finish()`` waits for a push under
        way."""
        with self._push_lock:
            self._push(pixels, z)

    def _push(self, pixels: np.ndarray, z: float | None) -> None:
        if self._finished:
            raise RuntimeError(f"{self.name}: push() after finish()")
        self._raise_compose_error()
        self._check(pixels)
        if isinstance(pixels, np.ma.MaskedArray):  # (one that masks nothing: ``_check``)
            pixels = pixels.data
        if pixels.dtype != self.dtype:  # (the same type in the other byte order: ``_check``)
            pixels = pixels.astype(self.dtype)
        self._check_z(z)
        if self._pushed >= MAX_SLICES:
            raise ValueError(f"{self.name}: more than {MAX_SLICES} slices in one stack")
        given = pixels
        pixels, missing = self._with_missing_filled(pixels)
        if self._own_store is not None:
            started = time.perf_counter()
            self._own_store.append(pixels)
            self._seconds["store"] += time.perf_counter() - started
        started = time.perf_counter()
        gray = self._gray(pixels)
        covered = None
        if self._aligner is not None:
            align_started = time.perf_counter()
            transform = self._warp_needed(gray, z)
            if transform is not None:
                del gray  # before the warp: the warped slice's grey replaces it (20 MB at 5 MP)
                warped, covered = warp_to_reference(pixels, transform)
                pixels = warped.reshape(self.shape)
                gray = None  # made where the slice is composed: this thread, which aligns, is the slower one
                missing = _moved(missing, transform)
            self._seconds["align"] = self._seconds.get("align", 0.0) + time.perf_counter() - align_started
        covered = _with_data(covered, missing)
        self._missing.add(self._pushed, missing)  # (in the reference frame, where the slice moved)
        self._seconds["measure"] += time.perf_counter() - started
        z = None if z is None else float(z) + 0.0  # (+ 0.0: never -0.0)
        if z is not None:
            self._z_by_depth.setdefault(as_depth(z), (self._pushed, z))
        self._pushed += 1
        if self._overlap is None:
            self._compose(pixels, gray, covered, self._pushed - 1, z)
            return
        # Composed on another thread after push() returns: the caller may fill its array with the next frame
        # meanwhile (a camera's ring buffer does), so the job keeps nothing of it.
        pixels, gray = (None if a is None else a.copy() if np.may_share_memory(a, given) else a for a in (pixels, gray))
        # (returns when the previous slice is composed, raising its error, if it failed)
        self._overlap.submit(self._compose_beside, pixels, gray, covered, self._pushed - 1, z)

    def _gray(self, pixels: np.ndarray) -> np.ndarray:
        """The pushed slice's grey; for separate channels, under weights from the first slice with more than noise:
        a dark frame's (a camera started before the light) are its noise's, even, and a dim channel lost its say
        (7 dB where two came first), so they are weighed again on each slice until one shows more."""
        if not self._even_channels or self._weighed_on_detail:
            return to_gray(pixels, self._channel_weights)
        self._channel_weights = even_channel_weights(pixels)
        gray = to_gray(pixels, self._channel_weights)
        self._weighed_on_detail = not noise_only(gray, value_step(self.dtype))
        return gray

    def _with_missing_filled(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The slice with its pixels without data (NaN) filled, and where they are (None: it has data throughout:
        fusion/no_data.py)."""
        missing = missing_pixels(pixels, self.name, self._pushed) if self.dtype.kind == "f" else None
        return (pixels, None) if missing is None else (filled(pixels, missing), missing)

    def _compose(self, pixels, gray: np.ndarray | None, covered, index: int, z: float | None) -> None:
        """Fold the slice into the composition and record its score and z, together (``_lock``)."""
        started = time.perf_counter()
        if gray is None:  # a warped slice's
            gray = to_gray(pixels, self._channel_weights)
        with self._lock:
            score = self._composition.add(pixels, gray, covered, index, z)  # (the pyramid's depth is a mean z)
            self._focus_scores.append(score)
            self._z_positions.append(z)
            self._seconds["measure"] += time.perf_counter() - started

    def _compose_beside(self, *args) -> None:
        """``_compose`` on the overlap's thread, its error kept for the pushing thread: a reader on another
        thread that waited for the slice (``_settle``) must not be the only one to hear of it."""
        try:
            self._compose(*args)
        except BaseException as error:
            self._compose_error = error
            raise

    def _raise_compose_error(self) -> None:
        if self._compose_error is not None:
            raise self._compose_error

    def _settle(self) -> None:
        """Wait for the slice in flight, if any: what follows reads the composition."""
        if self._overlap is not None:
            self._overlap.wait()

    @property
    def focus_scores(self) -> list[float]:
        self._settle()
        return list(self._focus_scores)

    def z_positions_so_far(self) -> list[float]:
        """Each fused slice's z (its index where z is unknown)."""
        self._settle()
        return self._z_or_index()

    def _z_or_index(self) -> list[float]:
        """``z_positions_so_far`` without waiting for a slice in flight (a caller holding ``_lock`` must not: the
        slice's composing takes it)."""
        return [p if p is not None else i for i, p in enumerate(self._z_positions)]

    def preview(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(fused so far, depth so far) for a live view; None before the first slice. Safe from another thread
        while slices are pushed: both are of the same slices."""
        self._settle()
        with self._lock:
            if not self._focus_scores:
                return None
            fused = self._composition.fused().reshape(self.shape)
            return fused, self._composition.depth_so_far(self._z_or_index())

    def result(self) -> np.ndarray:
        """The fused image so far (before cleaning), in the slices' shape and dtype; once ``finish()`` has
        returned, its fused image (a fresh array each time). Safe from another thread while slices are pushed."""
        self._settle()
        with self._lock:
            if not self._focus_scores:
                raise EmptyStackError(f"{self.name}: no slices pushed yet", None)
            return self._composition.fused().reshape(self.shape)

    def finish(self) -> FusionResult:
        """Clean the decision map, compose, and return the result, after the last slice. A second call
        returns the same ``FusionResult`` again, whatever the composition. Called while another thread pushes, it
        waits for the push under way and fuses the slices pushed so far; a push after it is an error."""
        with self._push_lock:
            return self._finish_pushed()

    def _finish_pushed(self) -> FusionResult:
        if self._result is not None:
            return self._result
        try:
            self._settle()
        finally:
            if self._overlap is not None:
                self._overlap.close()
        self._raise_compose_error()
        with self._lock:  # (a reader on another thread waits for the finished image)
            self._result = self._finish()
        return self._result

    def _finish(self) -> FusionResult:
        if self.n_slices == 0:
            raise EmptyStackError(f"{self.name}: no slices to fuse")
        self._finished = True
        started = time.perf_counter()
        if self.n_slices == 1:
            warnings.warn(f"{self.name}: only one slice; it is returned as it is", stacklevel=4)
        if self._aligner is not None:
            self._aligner.finish()
        try:
            # Depth in z where every slice has one, else in slice indices.
            z_or_index = list(range(self.n_slices)) if None in self._z_positions else self.z_positions_so_far()
            fused, decision, depth = self._composition.finish(z_or_index, self._source)
            nowhere = self._missing.nowhere()
            if nowhere is not None:  # no slice had data there: neither has the fused image, nor the depth map
                fused = fused.reshape(self.shape)
                fused[nowhere] = np.nan
                depth = depth.result() if isinstance(depth, Future) else depth  # (made beside the image)
                depth[nowhere] = np.nan
            if self._missing.slices:
                warnings.warn(self._missing.warning(self.name), stacklevel=4)
            if self._composition.left_out:
                warnings.warn(left_out_warning(self.name, self._composition.left_out), stacklevel=4)
        finally:
            if self._own_store is not None:
                self._own_store.close()
        self._seconds["compose"] = time.perf_counter() - started
        return FusionResult(
            fused=fused.reshape(self.shape),
            depth=depth,
            depth_unit=self.z_unit if None not in self._z_positions else "slice index",
            decision=decision,  # type: ignore[arg-type]  # (a Future: made_beside, waited for where it is read)
            focus_scores=list(self._focus_scores),
            z_positions=list(self._z_positions),
            seconds=dict(self._seconds),
            alignment=self._alignment_report(),
            # A deep measure resolves its device ("auto": CUDA when present) as it loads; classical ones have none.
            measure_device=getattr(self._measure, "device", None),
            channel_weights=None if self._channel_weights is None else [round(float(w), 5)
                                                                        for w in self._channel_weights],
        )

    def _warp_needed(self, gray: np.ndarray, z: float | None) -> np.ndarray | None:
        """Register this slice; the transform to warp it into the reference frame by, or None where it
        stays as it is (it did not move, or align is "auto" and it moved too little to matter)."""
        transform = self._aligner.add(gray, z)
        moved = max_displacement_px(transform, self.shape[:2]) >= AUTO_MIN_MOTION_PX
        # An identity transform (the reference slice, frames too small to align) has nothing to warp.
        warp = not np.array_equal(transform, np.eye(3)) and (self.settings.align == "on" or moved)
        self._warped.append(bool(warp))
        return transform if warp else None

    def warped_slice(self, index: int, pixels: np.ndarray) -> np.ndarray:
        """Slice ``index`` as read back from disk, moved into the reference frame as it was when pushed."""
        if self._aligner is None or not self._warped[index]:
            return pixels
        return warp_to_reference(pixels, self._aligner.transforms[index])[0].reshape(self.shape)

    def _alignment_report(self) -> list[dict] | None:
        if self._aligner is None:
            return None
        return [{**describe(t), "warped": w, "fallback": i in self._aligner.fallbacks}
                for i, (t, w) in enumerate(zip(self._aligner.transforms, self._warped))]

    def _check_z(self, z) -> None:
        """A focus position is a finite number within ``FOCUS_POSITION_LIMIT``, or None where it is not known: NaN,
        infinity or 1e300 made the whole depth map NaN, and text or a bool was taken for a number; and one the depth
        map tells apart from those pushed before it (``fusion.depth_z``): a step of 1e-300 made it 0 everywhere."""
        if z is None:
            return
        if isinstance(z, (bool, np.bool_)) or not isinstance(z, numbers.Real):
            raise TypeError(f"{self.name}: the z of {slice_name(self._pushed)} must be a number or None, "
                            f"got {type(z).__name__} {z!r}")
        try:
            value = float(z)
        except OverflowError:  # a Python int beyond any float (10**400)
            value = None
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{self.name}: the z of {slice_name(self._pushed)} is {z}; give a finite number, or "
                             "None where it is not known (the depth map then counts slices)")
        if value is None or abs(value) > FOCUS_POSITION_LIMIT:
            said = format(decimal.Decimal(int(z)), ".3g") if value is None else past_limit_words(value)
            raise ValueError(f"{self.name}: the z of {slice_name(self._pushed)} is {said} {self.z_unit}, beyond any "
                             f"focus drive's travel (±{FOCUS_POSITION_LIMIT:g}); give its focus position, or None "
                             "where it is not known (the depth map then counts slices)")
        index, earlier = self._z_by_depth.get(as_depth(value), (None, None))
        said = None if earlier is None else indistinct_z([earlier, value], self.z_unit)
        if said is not None:
            raise ValueError(f"{self.name}: {slice_name(self._pushed)} and slice {index}: their {said}; push z "
                             "nearer 0 (from the stack's first position, say), or None for every slice (the depth map "
                             "then counts slices)")

    def _check(self, pixels: np.ndarray) -> None:
        if not isinstance(pixels, np.ndarray):
            raise TypeError(f"{self.name}: a slice must be a numpy array, got {type(pixels).__name__}")
        if np.ma.is_masked(pixels):
            masked = np.ma.count_masked(pixels)
            raise InvalidPixelsError(f"{self.name}: {slice_name(self._pushed)} is a masked array with {masked} masked "
                                     f"value{'' if masked == 1 else 's'}, and the engine reads no mask: "
                                     f"{_how_to_fill(pixels.dtype)}")
        if pixels.shape != self.shape or pixels.dtype.newbyteorder("=") != self.dtype:
            advice = ""
            if pixels.shape == self.shape and self.dtype.kind == "f" and pixels.dtype.kind in "biuf":
                advice = f": push pixels.astype(np.{self.dtype})"
            elif pixels.shape == self.shape and pixels.dtype.kind in "biuf":
                advice = (f": push pixels.astype(np.{self.dtype}) where its values fit, or make the engine "
                          f"StreamingFusion(shape, np.float32) and push every slice as pixels.astype(np.float32)")
            raise SliceMismatchError(
                f"{self.name}: {slice_name(self._pushed)} is {pixels.shape} {pixels.dtype}, "
                f"but the stack is {self.shape} {self.dtype}{advice}")


def past_limit_words(value: float) -> str:
    """A position beyond ``FOCUS_POSITION_LIMIT`` in as few digits as show it beyond (1e+06 read as the limit)."""
    for digits in range(6, 18):
        said = f"{value:.{digits}g}"
        if abs(float(said)) > FOCUS_POSITION_LIMIT:
            return said
    return repr(value)


def _frame_shape(shape, name: str, channels_last: bool | None = None) -> tuple[int, ...]:
    """A frame's shape as ints, each a whole number of at least 1: (H, W) or (H, W, C). A 3-D shape said to be
    channels first (``channels_last`` False), or that reads as channels first where nothing is said
    (``_channels_first``), is refused."""
    try:
        sizes = tuple(operator.index(n) for n in shape)
    except TypeError:
        raise ValueError(f"{name}: frame shape must be (H, W) or (H, W, C) in whole numbers, got {shape!r}") from None
    if len(sizes) not in (2, 3) or min(sizes) < 1:
        raise ValueError(f"{name}: frame shape must be (H, W) or (H, W, C), each at least 1, got {sizes}")
    if len(sizes) == 3 and channels_last is False:
        raise FrameShapeError(f"{name}: frame shape {sizes} is channels first (C, H, W); the engine takes (H, W, C): "
                              f"make it for shape {sizes[1:] + sizes[:1]} and push np.moveaxis(pixels, 0, -1)")
    if channels_last is None and _channels_first(sizes):
        raise FrameShapeError(f"{name}: frame shape {sizes} reads as channels first (C, H, W): {sizes[0]} channels "
                              f"of {sizes[1]} x {sizes[2]} pixels, which would be fused as a frame {sizes[0]} pixels "
                              f"high with {sizes[2]} channels; the engine takes (H, W, C): pass np.moveaxis(pixels, 0, "
                              f"-1). If it is a frame {sizes[0]} pixels high with {sizes[2]} channels, say so: "
                              "StreamingFusion(shape, dtype, channels_last=True)")
    return sizes


def _channels_first(sizes: tuple[int, ...]) -> bool:
    """Whether (A, B, C) is a (C, H, W) frame: more than ``PLAUSIBLE_CHANNELS`` on the last axis, as channels, with
    at most that many on the first, as rows. Frames of any size with up to that many channels (mono, RGB, RGBA,
    a fluorescence or spectral detector's) are taken as (H, W, C), as are frames higher than that."""
    return len(sizes) == 3 and sizes[0] <= PLAUSIBLE_CHANNELS < sizes[2]


def _how_to_fill(dtype: np.dtype) -> str:
    """What to push for a masked array: NaN is a float slice's mark of no data (``fusion.no_data``); an integer slice
    has none."""
    if dtype.kind == "f":
        return "NaN marks no data in a float slice: push pixels.filled(np.nan)"
    return ("an integer slice has no mark for no data: make the engine for float32 and push "
            "pixels.astype(np.float32).filled(np.nan), or push pixels.data to fuse the values under the mask")


def _how_to_convert(dtype: np.dtype) -> str:
    """How to push slices of an unsupported ``dtype``, as refusion converts them (``fusion.pixel_conversion``, the
    readers' rule); the engine converts nothing itself."""
    target = fused_as(dtype)
    if target is None:
        return ""
    return (f": make the engine for {target} and push each slice as pixels.astype(np.{target}){digits_kept(dtype)}, "
            "as --refuse does")


def _moved(missing: np.ndarray | None, transform: np.ndarray) -> np.ndarray | None:
    """Where a slice moved by ``transform`` has no data (NaN) in the reference frame."""
    return None if missing is None else ~warp_mask(~missing, transform)


def _with_data(covered: np.ndarray | None, missing: np.ndarray | None) -> np.ndarray | None:
    """The pixels a slice covers (None: all), less those where it has no data."""
    if missing is None:
        return covered
    return ~missing if covered is None else np.logical_and(covered, ~missing)


class _FilledSource:
    """Reads a float slice back from a source with its pixels without data (NaN) filled, as they were pushed."""

    def __init__(self, source: SliceSource):
        self._source = source

    def read_slice(self, index: int) -> np.ndarray:
        pixels = self._source.read_slice(index)
        missing = missing_pixels(pixels, "a slice read back", index)
        return pixels if missing is None else filled(pixels, missing)


class _AlignedSource:
    """Reads a slice back from the engine's source and moves it as the engine moved it."""

    def __init__(self, source: SliceSource, engine: StreamingFusion):
        self._source = source
        self._engine = engine

    def read_slice(self, index: int) -> np.ndarray:
        return self._engine.warped_slice(index, self._source.read_slice(index))
