"""A napari image layer seen as a focus stack: which axis is z, where each slice is, and fusing it.

The z axis is the one just before the image's (y, x[, rgb]) axes; any axes before it (time,
channel...) are held where the viewer's sliders are (napari lines a layer's axes up with the
viewer's last ones). Slice z comes from the layer's ``focus_positions`` where its reader kept them
(ours do: napari places slices evenly, and an MDA's ``absolute`` z-plan is not), else from the
layer's scale and translate along that axis (µm where the layer was opened with its scale); a layer
with no physical scale along z (scale 1 in napari's default unit, pixels) is placed at slice indices.
Pixel types that fusion does not take natively are converted as the stack readers convert them.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusion.engine import SUPPORTED_DTYPES, FusionResult, FusionSettings, StreamingFusion
from fusion.readers.base import conversion_note, convert_dtype


@dataclass
class LayerStack:
    name: str
    data: Any                    # array-like with the z axis at ``z_axis``
    z_axis: int
    leading_index: tuple[int, ...]
    z_um: list[float]
    pixel_scale: tuple[float, float]
    z_unit: str = "um"           # the unit of ``z_um``: a tunable lens's stack is in dpt
    z_from: str = "scale"        # "focus_positions" (the layer's metadata) or "scale" (its scale and translate)
    pixel_units: tuple[str, str] = ("pixel", "pixel")  # napari's units of (y, x): the fused and depth layers take them
    pixel_translate: tuple[float, float] = (0.0, 0.0)  # the layer's (y, x) translate: the results overlay it there

    @property
    def n_slices(self) -> int:
        return len(self.z_um)

    @property
    def conversion(self) -> str | None:
        """What fusing does to the layer's pixel type, in a line; None where it fuses it as it is."""
        dtype = np.dtype(self.data.dtype)
        if dtype in SUPPORTED_DTYPES:
            return None
        if dtype == np.bool_:
            return f"{self.name}: bool pixels are fused as uint8 (0 and 1)"
        return conversion_note(dtype, Path(self.name))

    def slice(self, index: int) -> np.ndarray:
        pixels = np.asarray(self.data[self.leading_index + (index,)])
        if pixels.dtype in SUPPORTED_DTYPES:
            return pixels
        return convert_dtype(pixels, Path(self.name), f"{self.name} slice {index}")


def layer_stack(name: str, data, rgb: bool, scale, translate, data_position: Sequence[float] = (),
                metadata: dict | None = None, units: Sequence[Any] | None = None) -> LayerStack:
    """The focus stack in a layer; ValueError (one line) when the layer has no z axis.

    ``data_position``: where the viewer's sliders are, in the layer's data coordinates (napari's
    ``layer.world_to_data(viewer.dims.point)``); the axes before z are held there (0 where not given).
    ``metadata``: the layer's; its ``focus_positions`` (and ``focus_unit``) place the slices when there
    is one for each. ``units``: the layer's (napari's ``layer.units``, one per axis); where z's is pixels and its
    scale 1, the slices have no physical position: z is the slice index, and so is the depth map's unit. Its last
    two (y, x) are the stack's ``pixel_units``, pixels where not given.
    """
    image_axes = 3 if rgb else 2
    z_axis = data.ndim - image_axes - 1
    if z_axis < 0:
        raise ValueError(f"layer {name!r} is a single image ({data.shape}); fusion needs a z-stack")
    if np.dtype(data.dtype).kind not in "biuf":
        raise ValueError(f"layer {name!r} has pixel type {data.dtype}, which cannot be fused")
    position = tuple(data_position)[:z_axis]
    position += (0.0,) * (z_axis - len(position))
    leading = tuple(min(max(_index(p), 0), data.shape[axis] - 1) for axis, p in enumerate(position))
    count = data.shape[z_axis]
    pixel_scale = (float(scale[-2]), float(scale[-1]))  # (scale has no rgb axis)
    pixel_units = (str(units[-2]), str(units[-1])) if units is not None and len(units) >= 2 else ("pixel", "pixel")
    place = (float(translate[-2]), float(translate[-1])) if len(translate) >= 2 else (0.0, 0.0)
    focus = (metadata or {}).get("focus_positions")
    if isinstance(focus, (list, tuple)) and len(focus) == count and all(_finite(z) for z in focus):
        unit = str((metadata or {}).get("focus_unit") or "um")
        return LayerStack(name, data, z_axis, leading, [float(z) for z in focus], pixel_scale, unit, "focus_positions",
                          pixel_units, place)
    if units is not None and len(units) == data.ndim - (1 if rgb else 0) and str(units[z_axis]) in PIXEL_UNITS \
            and float(scale[z_axis]) == 1.0:
        return LayerStack(name, data, z_axis, leading, [float(k) for k in range(count)], pixel_scale, SLICE_INDEX,
                          pixel_units=pixel_units, pixel_translate=place)
    z_um = [float(translate[z_axis]) + float(scale[z_axis]) * k for k in range(count)]
    return LayerStack(name, data, z_axis, leading, z_um, pixel_scale, pixel_units=pixel_units, pixel_translate=place)


PIXEL_UNITS = ("pixel", "px")  # napari's default unit (pint's "pixel"): no physical scale was given
SLICE_INDEX = "slice index"   # the unit of a depth map in slices, as the refusion's and the engine's say


def _index(position: float) -> int:
    """The slice at a data coordinate (napari shows slice k from k - 0.5 to k + 0.5)."""
    return int(math.floor(float(position) + 0.5)) if math.isfinite(float(position)) else 0


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fuse_layer_stack(stack: LayerStack, settings: FusionSettings) -> Iterator[tuple[int, int] | FusionResult]:
    """Push every slice (yielding (done, total) after each), then yield the result last."""
    first = stack.slice(0)
    engine = StreamingFusion(first.shape, first.dtype, settings, name=stack.name, z_unit=stack.z_unit)
    for index in range(stack.n_slices):
        engine.push(first if index == 0 else stack.slice(index), stack.z_um[index])
        yield index + 1, stack.n_slices
    yield engine.finish()
