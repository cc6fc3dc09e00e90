"""A napari image layer seen as a focus stack: which axis is z, where each slice is, and fusing it.

The z axis is the one just before the image's (y, x[, rgb]) axes; any axes before it (time,
channel...) are held where the viewer's sliders are (napari lines a layer's axes up with the
viewer's last ones). Slice z comes from the layer's ``focus_positions`` where its reader kept them
(ours do: napari places slices evenly, and an MDA's ``absolute`` z-plan is not), else from the
layer's scale and translate along that axis, in µm: a layer whose z is in another length unit (mm, nm) is
converted, one in pixels with a scale is taken as µm, and one in another kind of unit keeps it; a layer
with no physical scale along z (scale 1 in napari's default unit, pixels) is placed at slice indices.
Pixel types that fusion does not take natively are converted as the stack readers convert them; the depth
map holds z as float32, and a z step too fine for it is refused, as are float pixels beyond float32's range.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusion.depth_z import indistinct_z
from fusion.engine import SUPPORTED_DTYPES, FusionResult, FusionSettings, StreamingFusion
from fusion.readers.base import beyond_float32_range, conversion_note, convert_dtype


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
    z_unit_given: str | None = None  # the layer's z unit where z was converted from it (millimeter), to say so

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
        _check_float32_range(pixels, f"{self.name}: slice {index} (counting from 0)")
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
        return _checked(LayerStack(name, data, z_axis, leading, [float(z) for z in focus], pixel_scale, unit,
                                   "focus_positions", pixel_units, place))
    z_unit = units[z_axis] if units is not None and len(units) == data.ndim - (1 if rgb else 0) else None
    if z_unit is not None and str(z_unit) in PIXEL_UNITS and float(scale[z_axis]) == 1.0:
        return LayerStack(name, data, z_axis, leading, [float(k) for k in range(count)], pixel_scale, SLICE_INDEX,
                          pixel_units=pixel_units, pixel_translate=place)
    z = [float(translate[z_axis]) + float(scale[z_axis]) * k for k in range(count)]
    # In µm: a layer in mm fused as if in µm gave depths 1000 times too small, said to be µm.
    um_per_unit = 1.0 if z_unit is None or str(z_unit) in PIXEL_UNITS else _length_in_um(z_unit)
    if um_per_unit is None:  # (a unit that is no length, such as a time: the depth map is in it)
        return _checked(LayerStack(name, data, z_axis, leading, z, pixel_scale, str(z_unit), pixel_units=pixel_units,
                                   pixel_translate=place))
    converted = str(z_unit) if um_per_unit != 1.0 else None
    return _checked(LayerStack(name, data, z_axis, leading, [position * um_per_unit for position in z], pixel_scale,
                               pixel_units=pixel_units, pixel_translate=place, z_unit_given=converted))


def _length_in_um(unit: Any) -> float | None:
    """How many µm one ``unit`` (napari's, a pint unit, or its name) is; None where it is no length."""
    import pint

    registry = pint.get_application_registry()
    try:
        return float(registry.Quantity(1.0, str(unit)).to(registry.micrometer).magnitude)
    except (pint.errors.PintError, AttributeError, TypeError, ValueError):  # (no length, or a name pint lacks)
        return None


def _checked(stack: LayerStack) -> LayerStack:
    """``stack``, or a ValueError where the depth map cannot tell its slices' z apart (``fusion.depth_z``): a z scale
    of 1e-300 gave a depth map of 0 everywhere."""
    said = indistinct_z(stack.z_um, stack.z_unit)
    if said is None:
        return stack
    raise ValueError(f"layer {stack.name!r}: its slices' {said}: check the layer's z scale and unit, or place its "
                     "slices nearer 0")


def _check_float32_range(pixels: np.ndarray, what: str) -> None:
    """A ValueError where float pixels hold values beyond float32's range (as a saved stack's reader refuses them)."""
    beyond = beyond_float32_range(pixels, "the layer's")
    if beyond is not None:
        raise ValueError(f"{what} {beyond}")


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
