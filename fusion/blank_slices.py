"""Blank slices: one value throughout, in every channel (a dark frame, a camera that started before the light,
a shutter that missed). They show nothing of the specimen, so the compositions give them no say; a stack of
blank slices only is fused from them all the same, to their value.

A dark frame from a real camera is seldom one value: it holds the sensor's noise. A slice far darker than those
with detail that shows nothing but noise (``dark_noise_only``) gets no say either. Given its say, it darkened the
flat areas, where every slice's evidence ties: one such frame among a bright-field stack's 9 slices cost 0.7 dB,
and three before a phone's 32 photographs of a keyboard halved the grey of its blurred wall. Before the first slice
with detail, nothing tells such a frame's level from the stack's own, so a frame that shows nothing but noise is
held, pixels and all (up to HELD_NOISE_BYTES_AT_MOST), until one with detail says whether it is dark; if it is not,
it is fused then, just before that slice, as it would have been when it came. Frames of noise beyond what can be held
get no say (they show nothing of the specimen, dark or not), and are named as the others are."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusion.multiscale import noise_sigma

# A dark slice: its mean grey is below this share of the mean grey of the slices with detail so far (a light that
# went off leaves the camera's black level, some 1% of a bright-field stack's; a slice out of focus keeps its light)...
DARK_LEVEL_SHARE = 0.25
# ...and it shows nothing but noise: its grey averaged over blocks of BIN_PX x BIN_PX pixels varies by no more than
# NOISE_ONLY_MULTIPLE times what white noise alone leaves there (its sigma / BIN_PX). Any picture of the specimen,
# even far out of focus, varies far more over the frame.
BIN_PX = 8
NOISE_ONLY_MULTIPLE = 3.0
LEVEL_SAMPLE_STEP = 4   # the mean grey from every 4th pixel of every 4th row: plenty for a level, 16 times cheaper
# Frames of noise held before the first slice with detail, at most (pixels and grey: 7 frames of 5 MP RGB): a camera
# started before the light gives a few; those past this get no say (the live queue holds 256 MB as well).
HELD_NOISE_BYTES_AT_MOST = 256 * 2**20


def blank_values(pixels: np.ndarray) -> np.ndarray | None:
    """The slice's value per channel where every channel holds one value throughout, else None."""
    first = pixels[0, 0]
    if not np.all(pixels[0] == first):  # (a slice with detail nearly always shows it in its first row)
        return None
    if not np.array_equal(np.min(pixels, axis=(0, 1)), np.max(pixels, axis=(0, 1))):
        return None
    return np.array(first, copy=True)


def mean_level(pixels: np.ndarray) -> float:
    """The slice's mean value (over its samples, each alike, where it has several), from a sample of its pixels."""
    return float(pixels[::LEVEL_SAMPLE_STEP, ::LEVEL_SAMPLE_STEP].mean(dtype=np.float64))


def is_dark(level: float, detail_level: float) -> bool:
    """Whether a slice of mean grey ``level`` is dark beside ``detail_level`` (the slices with detail so far)."""
    return detail_level > 0 and level < DARK_LEVEL_SHARE * detail_level


def dark_noise_only(gray: np.ndarray, level: float, detail_level: float, step: float) -> bool:
    """Whether a slice of mean grey ``level`` is dark beside ``detail_level`` (the slices with detail so far) and
    its ``gray`` shows nothing but noise (``noise_only``)."""
    return is_dark(level, detail_level) and noise_only(gray, step)


def value_step(dtype: np.dtype) -> float:
    """The data's quantum, as ``noise_only`` takes it: 1 for integer pixels, 0 for float ones."""
    return 0.0 if np.dtype(dtype).kind == "f" else 1.0


def noise_only(gray: np.ndarray, step: float) -> bool:
    """Whether ``gray`` shows nothing but noise. ``step``: the data's quantum (1 for integer pixels, 0 for float
    ones): noise under half a step reads as none in the noise estimate, and leaves blocks that differ by a fraction
    of it."""
    height, width = (gray.shape[0] // BIN_PX) * BIN_PX, (gray.shape[1] // BIN_PX) * BIN_PX
    if height == 0 or width == 0:
        return False
    blocks = gray[:height, :width].reshape(height // BIN_PX, BIN_PX, width // BIN_PX, BIN_PX).mean(axis=(1, 3))
    sigma = max(noise_sigma(gray), step / 2)
    return float(blocks.std()) <= NOISE_ONLY_MULTIPLE * sigma / BIN_PX


@dataclass(frozen=True)
class BlankSlice:
    """A blank slice held until a slice with detail comes: its value per channel, its grey's, its index."""

    values: np.ndarray   # () or (C,), in the slices' dtype
    gray: float
    index: int
    z: float             # its z, or its index where z is not known

    @property
    def covered(self) -> None:
        """A blank slice covers every pixel."""
        return None

    def frame(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """The slice and its grey, remade."""
        return np.full(shape, self.values, dtype), np.full(shape[:2], self.gray, np.float32)


@dataclass(frozen=True)
class HeldNoise:
    """A slice that shows nothing but noise, held (a copy of its pixels) until a slice with detail comes."""

    pixels: np.ndarray
    gray: np.ndarray
    covered: np.ndarray | None   # the pixels an aligned slice covers (None: all)
    level: float
    index: int
    z: float

    @property
    def nbytes(self) -> int:
        return _held_bytes(self.pixels, self.gray, self.covered)

    def frame(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """The slice and its grey, as they came."""
        return self.pixels, self.gray


def _held_bytes(pixels: np.ndarray, gray: np.ndarray, covered: np.ndarray | None) -> int:
    """What holding a slice of noise costs: its pixels, its grey and its coverage."""
    return pixels.nbytes + gray.nbytes + (0 if covered is None else covered.nbytes)


class HeldBlanks:
    """A composition's blank slices: each is told apart as it comes (``take``), and held while no slice with
    detail has come (``only_blank``), so that a stack of blank slices only can be fused from them at its end.
    Slices of nothing but noise are held then too, until a slice with detail says whether they are dark (module
    docstring): those that are not come back from ``released``, to be fused before that slice.
    ``left_out``: each slice given no say beside slices with detail, in the order they came."""

    def __init__(self):
        self.held: list[BlankSlice | HeldNoise] = []   # in the order they came
        self.only_blank = True   # no slice with detail so far
        self.left_out: list[int] = []
        self._detail_levels: list[float] = []
        self._released: list[HeldNoise] = []

    def take(self, pixels: np.ndarray, gray: np.ndarray, index: int, z: float,
             covered: np.ndarray | None = None) -> bool:
        """Whether the slice (``pixels``, its ``gray``) is blank, or dark with nothing but noise, or held, or noise
        beyond what can be held: then it gets no say now. A blank slice is held while every slice so far is; a slice
        with detail lets go of those held, and of the slices of noise held before it that are not dark beside it
        (``released``)."""
        values = blank_values(pixels)
        if values is not None:
            if self.only_blank:
                self.held.append(BlankSlice(values, float(gray.flat[0]), index, z))
            else:
                self.left_out.append(index)
            return True
        # Light is judged on the pixels, each sample alike, not on the grey the focus sees: separate channels' grey
        # weighs a dim channel up (its weights come from the first slice with detail), and two dark frames of a
        # bright and a dim channel (offset 100; 1000 and 120 once lit) then read as lit, and were fused in.
        level = mean_level(pixels)
        step = value_step(pixels.dtype)
        if self._detail_levels and dark_noise_only(gray, level, float(np.mean(self._detail_levels)), step):
            self.left_out.append(index)
            return True
        if self.only_blank and noise_only(gray, step):
            held_bytes = sum(held.nbytes for held in self.held if isinstance(held, HeldNoise))
            if held_bytes + _held_bytes(pixels, gray, covered) > HELD_NOISE_BYTES_AT_MOST:
                # More frames of noise than can be held (7 of 5 MP RGB): fused as they came, they darkened the
                # image wherever they were dark. Such a frame shows nothing of the specimen, dark or not, so it
                # gets no say; those held are still judged when a slice with detail comes.
                self.left_out.append(index)
                return True
            self.held.append(HeldNoise(np.array(pixels, copy=True), np.array(gray, copy=True),
                                       None if covered is None else np.array(covered, copy=True), level, index, z))
            return True
        if self.only_blank:
            for held in self.held:
                if isinstance(held, BlankSlice) or is_dark(held.level, level):
                    self.left_out.append(held.index)
                else:
                    self._released.append(held)
            self.only_blank, self.held = False, []
        self._detail_levels.append(level)
        return False

    def released(self) -> list[HeldNoise]:
        """The slices of noise let go by the last ``take``, in the order they came: to be fused before its slice."""
        released, self._released = self._released, []
        return released

    def mean_frame(self, shape: tuple[int, ...]) -> np.ndarray:
        """The held slices' mean as a float32 frame (H, W, C): what they fuse to (the live view's, before the end)."""
        channels = shape[2] if len(shape) == 3 else 1
        total = np.zeros(shape[:2] + (channels,), np.float32)
        for held in self.held:
            total += (held.values if isinstance(held, BlankSlice) else held.pixels.reshape(total.shape))
        return total / np.float32(max(len(self.held), 1))


def left_out_warning(stack: str, left_out: list[int]) -> str:
    """The warning for slices given no say beside slices with detail: a light, shutter or camera that failed."""
    if len(left_out) == 1:
        which, verb, they = f"slice {left_out[0]}", "shows", "it has"
    else:
        which, verb, they = f"slices {', '.join(str(i) for i in sorted(left_out))}", "show", "they have"
    return (f"{stack}: {which} (counting from 0) {verb} nothing of the specimen (one value throughout, or nothing "
            f"but noise: a light or shutter that failed, a camera started before the light?); {they} no say in the "
            "fused image")
