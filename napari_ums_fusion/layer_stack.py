"""A napari image layer seen as a focus stack: which axis is z, where each slice is, and fusing it.

The z axis is the one just before the image's (y, x[, rgb]) axes; any axes before it (time,
channel...) are held at the viewer's current position. Slice z comes from the layer's
scale and translate along that axis (µm where the layer was opened with its scale).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusion.engine import FusionResult, FusionSettings, StreamingFusion

_CONVERTIBLE = {np.dtype(np.float64): np.float32, np.dtype(np.float16): np.float32}


@dataclass
class LayerStack:
    name: str
    data: Any                    # array-like with the z axis at ``z_axis``
    z_axis: int
    leading_index: tuple[int, ...]
    z_um: list[float]
    pixel_scale: tuple[float, float]

    @property
    def n_slices(self) -> int:
        return len(self.z_um)

    def slice(self, index: int) -> np.ndarray:
        pixels = np.asarray(self.data[self.leading_index + (index,)])
        convert = _CONVERTIBLE.get(pixels.dtype)
        return pixels.astype(convert) if convert is not None else pixels


def layer_stack(name: str, data, rgb: bool, scale, translate, current_step=()) -> LayerStack:
    """The focus stack in a layer; ValueError (one line) when the layer has no z axis."""
    image_axes = 3 if rgb else 2
    z_axis = data.ndim - image_axes - 1
    if z_axis < 0:
        raise ValueError(f"layer {name!r} is a single image ({data.shape}); fusion needs a z-stack")
    leading = tuple(int(i) for i in (tuple(current_step) + (0,) * z_axis)[:z_axis])
    leading = tuple(min(i, data.shape[axis] - 1) for axis, i in enumerate(leading))
    count = data.shape[z_axis]
    z_um = [float(translate[z_axis]) + float(scale[z_axis]) * k for k in range(count)]
    return LayerStack(name, data, z_axis, leading, z_um, (float(scale[-2]), float(scale[-1])))  # scale has no rgb axis


def fuse_layer_stack(stack: LayerStack, settings: FusionSettings) -> Iterator[tuple[int, int] | FusionResult]:
    """Push every slice (yielding (done, total) after each), then yield the result last."""
    first = stack.slice(0)
    engine = StreamingFusion(first.shape, first.dtype, settings, name=stack.name)
    for index in range(stack.n_slices):
        engine.push(first if index == 0 else stack.slice(index), stack.z_um[index])
        yield index + 1, stack.n_slices
    yield engine.finish()
