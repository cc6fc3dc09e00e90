"""What every saved-stack reader promises: slices one at a time, each checked."""
from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from collections.abc import Iterator

import numpy as np

from fusion.channel_look import ChannelLook
from fusion.depth_z import indistinct_z
from fusion.engine import FOCUS_POSITION_LIMIT, SUPPORTED_DTYPES, past_limit_words
from fusion.errors import (INFINITY_SAID, InvalidPixelsError, SliceMismatchError, StackLayoutError, StackTooLargeError,
                           UnreadableStackError, slice_name)
from fusion.memory import check_fits_in_memory
from fusion.outputs import colour_by_shape
from fusion.pixel_conversion import digits_kept, fused_as


def index_ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    parts, start = [], None
    for position, index in enumerate(indices):
        if start is None:
            start = index
        if position + 1 == len(indices) or indices[position + 1] != index + 1:
            parts.append(str(start) if start == index else f"{start}-{index}")
            start = None
    return ", ".join(parts)


def _slices_sharing_a_position(z: list[float]) -> list[tuple[float, list[int]]]:
    """Each position that more than one slice has, with those slices, in the order of the first of them."""
    by_position: dict[float, list[int]] = {}
    for index, position in enumerate(z):
        by_position.setdefault(position, []).append(index)
    return [(position, slices) for position, slices in by_position.items() if len(slices) > 1]


class SavedStack(ABC):
    """A z-stack on disk, read slice by slice; never the whole stack in memory.

    Subclasses implement ``_read(index)``; the public ``read_slice`` checks every slice
    against the first (shape, dtype) and for NaN/inf, naming the file on failure.
    Slices come out as (H, W) or (H, W, C), numpy order.
    """

    def __init__(self, path: Path, name: str):
        self.path = Path(path)
        self.name = name  # stem of the outputs: file stem or folder name
        self._shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        # The first slice as ``first_slice_format`` read it, handed to the first ``read_slice(0)``: a refusion asks
        # for the format and then reads slice 0 (a 5 MP JPEG decoded twice cost 40 ms of its start).
        self._first_slice: np.ndarray | None = None

    @property
    @abstractmethod
    def n_slices(self) -> int: ...

    @property
    def z_positions_um(self) -> list[float] | None:
        """Focus position of each slice in micrometres, or None when the file does not say."""
        return None

    def focus_positions(self) -> tuple[list[float] | None, str]:
        """Each slice's focus position and its unit: micrometres (``z_positions_um``) unless the file
        says otherwise (a tunable lens's stack: focal power in dpt)."""
        return self.z_positions_um, "um"

    def usable_focus_positions(self) -> tuple[list[float] | None, str]:
        """``focus_positions``, or none (the depth map then counts slices) with a warning where they
        cannot place the slices: a position that is not a finite number (an ImageJ spacing of NaN), or one
        out of all proportion (``FOCUS_POSITION_LIMIT``: 1e300 overflowed the depth map's float32), or slices
        that share a position (a spacing of 0, a writer that repeats one z, or some of them), or whose positions the
        depth map cannot tell apart (``fusion.depth_z``: a spacing of 1e-300 made it 0 everywhere). The engine refuses
        such z pushed to it; a saved stack is fused all the same, its depth map in slices."""
        z, unit = self.focus_positions()
        if z is None:
            return z, unit
        bad = [value for value in z if not math.isfinite(value)]
        absurd = [value for value in z if math.isfinite(value) and abs(value) > FOCUS_POSITION_LIMIT]
        shared = _slices_sharing_a_position(z)
        if bad:
            problem = f"the file gives a focus position of {bad[0]} for {len(bad)} of {len(z)} slices"
        elif absurd:
            problem = (f"the file gives a focus position of {past_limit_words(absurd[0])} {unit} for {len(absurd)} "
                       f"of {len(z)} slices, beyond any focus drive's travel (±{FOCUS_POSITION_LIMIT:g})")
        elif len(z) > 1 and min(z) == max(z):
            problem = f"the file gives every slice the focus position {z[0]:g} {unit}"
        elif shared:
            listed = "; ".join(f"slices {index_ranges(slices)} share {position:g} {unit}"
                               for position, slices in shared[:3]) + (" ..." if len(shared) > 3 else "")
            problem = f"the file gives several slices one focus position ({listed})"
        elif (too_fine := indistinct_z(z, unit)) is not None:
            problem = f"the file's slices' {too_fine}"
        else:
            return z, unit
        warnings.warn(f"{self.path}: {problem}; the depth map counts slices instead", stacklevel=2)
        return None, "um"

    def pixel_size_um(self) -> float | None:
        """The size of a pixel on the specimen (µm), when the file says; the fused image keeps it."""
        return None

    @abstractmethod
    def _read(self, index: int) -> np.ndarray: ...

    def slice_label(self, index: int) -> str:
        """How to name slice ``index`` in an error: its file, or its number in this file."""
        return slice_name(index)

    def declared_size(self, index: int) -> tuple[int, int, int, np.dtype] | None:
        """(height, width, samples, dtype) of slice ``index`` as its file declares it, read without
        decoding the pixels; None where the format does not say cheaply."""
        return None

    def _check_declared_size(self, index: int) -> None:
        """Before decoding: a slice whose declared size would not fit in memory is not read."""
        try:
            declared = self.declared_size(index)
        except Exception:  # a header that cannot be read: decoding will say what is wrong
            return
        if declared is not None:
            height, width, samples, dtype = declared
            check_fits_in_memory(height, width, samples, dtype, self.path, self.slice_label(index))

    def read_slice(self, index: int) -> np.ndarray:
        if not 0 <= index < self.n_slices:
            raise IndexError(f"{self.path}: no {slice_name(index)}; the stack has {self.n_slices}")
        if index == 0 and self._first_slice is not None:  # (once: the caller owns the array it is given)
            pixels, self._first_slice = self._first_slice, None
            return pixels
        self._check_declared_size(index)
        try:
            pixels = self._read(index)
        except (UnreadableStackError, SliceMismatchError, InvalidPixelsError, StackTooLargeError,
                StackLayoutError):  # (said already)
            raise
        except MemoryError:
            raise StackTooLargeError(f"{self.slice_label(index)} does not fit in memory", self.path) from None
        except Exception as error:  # any decoder failure is one clear line naming the file
            raise UnreadableStackError(
                f"cannot read {self.slice_label(index)}: {type(error).__name__}: {error}", self.path
            ) from error
        if pixels.size == 0:  # (an empty TIFF page among a folder's slices: its shape said nothing to a user)
            raise UnreadableStackError(f"{self.slice_label(index)} holds no image", self.path)
        try:
            pixels = normalise_layout(pixels)
        except UnreadableStackError as error:
            raise UnreadableStackError(f"{self.slice_label(index)}: {error.reason}", self.path) from None
        return self._checked(index, pixels)

    def first_slice_format(self) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of the slices (reads the first one if not known yet)."""
        if self._shape is None:
            self._first_slice = self.read_slice(0)
        assert self._shape is not None and self._dtype is not None  # read_slice sets them
        return self._shape, self._dtype

    def channel_look(self) -> ChannelLook | None:
        """How the stack names and shows its separate channels (names, colour tables, display ranges), for the
        fused image to keep; None where it says nothing (readers whose files can say override it)."""
        return None

    @property
    def channels_are_colour(self) -> bool:
        """Whether a slice's channels (H, W, C) are the colour samples of one picture (RGB, RGBA) rather than
        separate images (fluorescence channels): the fused image is written as the same kind. Here by their count
        (``colour_by_shape``); readers whose files say which override it."""
        return colour_by_shape(self.first_slice_format()[0])

    def __iter__(self) -> Iterator[tuple[np.ndarray, float | None]]:
        """Yields (slice, z) in stack order, as ``StreamingFusion.push`` takes them: z from
        ``usable_focus_positions`` (in its unit: µm, or a tunable lens's dpt or mA, which the engine's ``z_unit``
        should say), None for every slice where the stack gives none that can place them (a warning says why)."""
        z, _ = self.usable_focus_positions()
        for index in range(self.n_slices):
            yield self.read_slice(index), (None if z is None else z[index])

    def close(self) -> None:  # noqa: B027 -- optional: a reader that keeps no file open has nothing to close
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _checked(self, index: int, pixels: np.ndarray) -> np.ndarray:
        if pixels.dtype not in SUPPORTED_DTYPES:
            if self._shape is None and pixels.dtype != np.bool_:  # once per stack: every slice is converted alike
                warnings.warn(conversion_note(pixels.dtype, self.path), stacklevel=3)
            pixels = convert_dtype(pixels, self.path, self.slice_label(index))
        if self._shape is None:
            self._shape, self._dtype = pixels.shape, pixels.dtype
        elif pixels.shape != self._shape or pixels.dtype != self._dtype:
            raise SliceMismatchError(
                f"{self.slice_label(index)} is {_describe(pixels.shape, pixels.dtype)} but "
                f"{self.slice_label(0)} is {_describe(self._shape, self._dtype)}", self.path)
        if pixels.dtype.kind == "f" and np.isinf(pixels).any():  # (NaN is no data: fusion/no_data.py)
            raise InvalidPixelsError(f"{self.slice_label(index)} {INFINITY_SAID}", self.path)
        return pixels


def normalise_layout(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 1) -> (H, W); anything else is left as it is."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        return pixels[:, :, 0]
    if pixels.ndim not in (2, 3):
        raise UnreadableStackError(f"a slice must be 2-D or 2-D with colour, got shape {pixels.shape}")
    return pixels


def conversion_note(dtype: np.dtype, path: Path) -> str:
    """What ``convert_dtype`` does to a stack of ``dtype``, said once: the fused image is float32 then, and
    integers wider than float32's 24-bit mantissa lose their lowest bits."""
    return f"{path}: {dtype} pixels are fused as float32, and the fused image is float32{digits_kept(dtype)}"


def convert_dtype(pixels: np.ndarray, path: Path, label: str) -> np.ndarray:
    """Pixel types we do not fuse natively, as ``fusion.pixel_conversion.fused_as`` says: bool as uint8, every other
    number as float32; float pixels beyond float32's range are refused (``beyond_float32_range``)."""
    target = fused_as(pixels.dtype)
    if target is None:
        raise UnreadableStackError(f"{label} has pixel type {pixels.dtype}, which cannot be fused", path)
    beyond = beyond_float32_range(pixels)
    if beyond is not None:
        raise InvalidPixelsError(f"{label} {beyond}", path)
    return pixels.astype(target)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def beyond_float32_range(pixels: np.ndarray, whose: str = "the stack's") -> str | None:
    """Where float pixels wider than float32 hold finite values beyond its range, that and what to do, in words that
    follow a slice's name; None where they fit. Converted, they became infinity, and the error blamed infinity in the
    data (``whose`` values to scale down: "the layer's" in napari)."""
    if pixels.dtype.kind != "f" or pixels.dtype.itemsize <= 4 or not pixels.size:
        return None
    finite = np.abs(pixels[np.isfinite(pixels)])
    largest = finite.max() if finite.size else pixels.dtype.type(0)
    if not largest > FLOAT32_MAX:  # (in the pixels' own type: a float128's may be beyond float64's too)
        return None
    over = int(np.ceil(np.log10(largest) - np.log10(FLOAT32_MAX))) + 1
    return (f"holds values up to {float(largest):.3g}, beyond float32's range (±{FLOAT32_MAX:.3g}), which fusion "
            f"computes in: scale {whose} values down (divide them by 1e{over}, say)")


def _describe(shape, dtype) -> str:
    return f"{'x'.join(str(n) for n in shape)} {dtype}"
