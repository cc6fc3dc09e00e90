"""Our outputs as napari layer data: fused image, depth map and raw stack, at their physical scale.

napari's layer data are ``(data, attributes, layer type)`` tuples; this module builds them
from files without importing napari, so that it is cheap to load and test. Scales are in
micrometres (numpy order: z, y, x) where the files say so, else in pixels and slices.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from fusion import channel_look
from fusion.channel_look import ChannelLook
from fusion.readers.tiff import (
    DEPTH_IN_SLICE_INDEX,
    depth_unit_of,
    described_as_colour,
    page_has_colour_samples,
    page_headers_cut_off,
    pixel_size_um_of,
    to_12_digits,
    whole_pages,
)

DEPTH_COLORMAP = "viridis"
LayerData = tuple[Any, dict, str]  # (numpy or dask array, napari's layer attributes, layer type)


def _length_unit(known: bool) -> str:
    """napari's (pint's) unit of an axis: micrometres where the file says so, else pixels."""
    return "um" if known else "pixel"


def _image_attributes(attributes: dict, axes: str, shape: tuple[int, ...], colour_samples: bool,
                      look: ChannelLook | None = None) -> dict:
    """``rgb`` for a picture's colour samples (``colour_samples``: ``page_has_colour_samples`` of the first page, the
    fusion's own rule); channels that are separate images (an ImageJ hyperstack's C; samples that are not colour)
    as napari channels, one layer each, instead of an axis that napari would take for a spatial one (a slider of
    384 steps over a 512 x 2 image)."""
    channel_axis = axes.find("C")
    if channel_axis < 0 and axes.endswith("S") and not colour_samples:
        channel_axis = len(axes) - 1
    if channel_axis < 0:
        return {**attributes, "rgb": axes.endswith("S")}
    n_channels = shape[channel_axis]
    names = look.names if look is not None and look.names and len(look.names) == n_channels else \
        [f"c{k}" for k in range(n_channels)]
    channels = {**attributes, "channel_axis": channel_axis, "name": [f"{attributes['name']} {n}" for n in names]}
    if look is not None and look.luts and len(look.luts) == n_channels:  # the stack's colours (Fiji's LUTs)
        channels["colormap"] = [np.c_[lut.T / 255.0, np.ones(lut.shape[1])] for lut in look.luts]
    return channels


FUSED_AXES = ("YX", "YXS", "CYX")  # ours (fusion.outputs.write_image_tiff): an image, colour or separate channels


def is_our_fused(path: Path) -> bool:
    """Whether a ``*.fused.tif`` is an image as ours are (``FUSED_AXES``), from its header: another program's file
    of that name (an ImageJ ZCYX hyperstack) is left to napari's other readers."""
    try:
        with tifffile.TiffFile(path) as tiff:
            return tiff.series[0].axes in FUSED_AXES
    except Exception:  # (unreadable: ours, damaged; opening it says why)
        return True


def fused_layer(path: Path, name: str) -> LayerData:
    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        if series.axes not in FUSED_AXES:
            raise ValueError(f"{path}: not a fused image (axes {series.axes}, shape "
                             f"{'x'.join(map(str, series.shape))}; a fused image is {' or '.join(FUSED_AXES)})")
        image, axes, recorded = series.asarray(), series.axes, pixel_size_um_of(tiff.pages.first)
        colour = page_has_colour_samples(tiff.pages.first)
        if axes == "CYX" and described_as_colour(tiff.pages.first, image.shape[0]):
            image, axes, colour = np.moveaxis(image, 0, -1), "YXS", True  # float colour: one picture, not channels
        look = channel_look.from_imagej(tiff.imagej_metadata or {}, list(range(image.shape[0]))) \
            if axes == "CYX" else None  # (our fused files: one page per channel)
    pixel_um = recorded or 1.0
    attributes = {"name": f"{name} fused", "scale": (pixel_um, pixel_um), "units": (_length_unit(bool(recorded)),) * 2,
                  "metadata": {"path": str(path), "pixel_size_um": recorded}}  # (None: the file gives none)
    return image, _image_attributes(attributes, axes, image.shape, colour, look), "image"


def depth_layer(path: Path, name: str) -> LayerData:
    with tifffile.TiffFile(path) as tiff:
        recorded = pixel_size_um_of(tiff.pages.first)
        depth, pixel_um = tiff.asarray(), recorded or 1.0
        unit = depth_unit_of(tiff.pages.first)
    label = "µm" if unit == "um" else unit
    finite = depth[np.isfinite(depth)]
    limits = (float(finite.min()), float(finite.max()) if np.ptp(finite) > 0 else float(finite.min()) + 1.0) \
        if finite.size else (0.0, 1.0)
    return depth, {"name": f"{name} depth ({label})", "scale": (pixel_um, pixel_um),
                   "units": (_length_unit(bool(recorded)),) * 2, "colormap": DEPTH_COLORMAP,
                   "contrast_limits": limits, "visible": False,
                   "metadata": {"path": str(path), "depth_unit": unit, "pixel_size_um": recorded}}, "image"


def stack_layer(path: Path, name: str) -> LayerData:
    """The raw stack as a z-stack layer, placed as the stack reader (``fusion.readers.tiff``) places it: z from its
    OME planes (a tunable lens's stack: the focal powers its description keeps, in the depth map's unit), or the
    pages' own records where it was never finalized (kill -9, a full disk); the pixel size likewise.

    The pixels are read lazily (``lazy_pages``: a page when napari shows it), so that opening a stack of
    gigabytes costs little memory. A stack of one slice (a session stopped after it, an MDA without a z-plan)
    is a 2-D image. napari places slices evenly: where the focus positions are not evenly spaced (an MDA's
    ``absolute`` z-plan) a warning says so and how they are shown, and the layer's ``focus_positions`` keep the
    true ones (the dock widget fuses at them)."""
    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        axes, n_pages, n_planes = series.axes, len(series.pages), series.shape[0] if series.shape else 1
        colour = page_has_colour_samples(tiff.pages.first)
        whole = whole_pages(series)
        headers_cut_off = whole == n_pages and page_headers_cut_off(tiff)
    stack = lazy_pages(path)
    if headers_cut_off:  # (the slices after those found are lost with their headers: how many, no one can say)
        warnings.warn(f"{path}: the file is cut short (a full disk, a cut copy): its page headers point past its "
                      f"end, and the slices after its first {n_pages} page{'s' if n_pages != 1 else ''} are "
                      "lost with them; those shown", stacklevel=3)
    if whole < n_pages:  # cut short (a session killed while writing, a full disk, a cut copy): its whole slices
        n_whole = whole // max(n_pages // max(n_planes, 1), 1)
        if n_whole == 0:
            raise ValueError(f"{path}: the file ends inside its first slice (cut short on disk): no slice is whole")
        warnings.warn(f"{path}: the file ends inside slice {n_whole} (cut short on disk: a session killed while "
                      f"writing it, a full disk or a cut copy); {n_planes - n_whole} of its {n_planes} slices "
                      f"left out, the {n_whole} whole ones shown", stacklevel=3)
        stack = stack[:n_whole]
    focus, unit, recorded_um, stage_xy_um = _placement(path)
    focus = focus[: stack.shape[0]] if len(focus) > stack.shape[0] else focus
    pixel_um = recorded_um or 1.0
    xy_unit = _length_unit(recorded_um is not None)
    metadata = {"path": str(path), "z_um": focus if unit == "um" else [], "focus_positions": focus,
                "focus_unit": unit, "pixel_size_um": recorded_um, "stage_xy_um": stage_xy_um}
    # An MDA's positions side by side, where the stage put them (as Bio-Formats places OME's PositionX/Y); in
    # pixels, with no pixel size, a stage position in µm would place them nowhere meaningful.
    at_y, at_x = (stage_xy_um[1], stage_xy_um[0]) if stage_xy_um is not None and recorded_um else (0.0, 0.0)
    attributes: dict = {"name": f"{name} stack", "metadata": metadata}
    layer_attributes = _image_attributes(attributes, axes, stack.shape, colour)
    if not layer_attributes.get("rgb"):
        layer_attributes["contrast_limits"] = _middle_slice_limits(stack, layer_attributes.get("channel_axis"))
    spatial_ndim = stack.ndim - ("channel_axis" in layer_attributes) - bool(layer_attributes.get("rgb"))
    if spatial_ndim < 3:  # one slice: an image (its z stays in the metadata)
        layer_attributes.update(scale=(pixel_um,) * spatial_ndim, units=(xy_unit,) * spatial_ndim,
                                translate=(0.0,) * (spatial_ndim - 2) + (at_y, at_x))
        return stack, layer_attributes, "image"
    z_step, z0, z_unit = _z_axis(focus, unit, path)
    leading = spatial_ndim - 3  # (axes before z: none in our stacks, but never a scale napari cannot take)
    layer_attributes.update(scale=(1.0,) * leading + (z_step, pixel_um, pixel_um),
                            translate=(0.0,) * leading + (z0, at_y, at_x),
                            units=("pixel",) * leading + (z_unit, xy_unit, xy_unit))
    return stack, layer_attributes, "image"


def _middle_slice_limits(stack, channel_axis: int | None) -> Any:
    """Contrast limits from one slice (the middle one; a channel stack: that slice's channels), each channel's
    lowest and highest value: napari would compute them from the first slice it shows, or not at all for a lazy
    layer placed off z 0 (it then shows [0, 1], a 16-bit stack all white). One slice is read: stacks can be large."""
    leading = [axis for axis in range(max(stack.ndim - 2, 1)) if axis != channel_axis]
    index: list[Any] = [slice(None)] * stack.ndim
    if stack.ndim > 2 + (channel_axis is not None) and leading:
        index[leading[0]] = stack.shape[leading[0]] // 2
    plane = np.asarray(stack[tuple(index)])
    if channel_axis is None:
        return _limits_of(plane)
    channel_axis -= sum(1 for axis, at in enumerate(index) if axis < channel_axis and not isinstance(at, slice))
    return [_limits_of(np.take(plane, k, axis=channel_axis)) for k in range(plane.shape[channel_axis])]


def _limits_of(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if not finite.size:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low, low + 1.0)


EVEN_TOLERANCE = 0.1  # of a step: how far a slice may lie from its evenly spaced height and be shown there


def evenly_spaced(focus: list[float]) -> tuple[float, float] | None:
    """(step, first position) where every position lies within ``EVEN_TOLERANCE`` of a step of
    ``first + k * step``; None where they are not evenly spaced. One position, or all at one: step 1."""
    if len(focus) < 2 or np.ptp(focus) == 0:
        return 1.0, (focus[0] if focus else 0.0)
    step = to_12_digits((focus[-1] - focus[0]) / (len(focus) - 1))  # (0.3 dpt, not 0.30000000000000004)
    deviation = max(abs(z - (focus[0] + k * step)) for k, z in enumerate(focus))
    return (step, focus[0]) if step != 0 and deviation <= EVEN_TOLERANCE * abs(step) else None


def _z_axis(focus: list[float], unit: str, path: Path) -> tuple[float, float, str]:
    """(scale, translate, napari unit) of a stack's z axis; a warning where napari cannot place its slices."""
    # (A lens's focal powers have no unit napari knows: pint reads "dpt" as decipints. Its z stays unitless.)
    z_unit = _length_unit(unit == "um" and bool(focus))
    if not focus:
        return 1.0, 0.0, z_unit
    even = evenly_spaced(focus)
    if even is not None:
        return even[0], even[1], z_unit
    label = "µm" if unit == "um" else unit
    shown = ", ".join(f"{z:g}" for z in focus[:8]) + (", ..." if len(focus) > 8 else "")
    note = (f"{path}: the slices' focus positions ({shown} {label}) are not evenly spaced, and napari places a "
            "layer's slices evenly")
    steps = np.diff(focus)
    if (steps > 0).all() or (steps < 0).all():  # in order: the first and last slices at their heights
        step = to_12_digits((focus[-1] - focus[0]) / (len(focus) - 1))
        warnings.warn(f"{note}: they are shown evenly between the first and the last; their true positions are "
                      "in the layer's metadata (focus_positions), and the dock widget fuses at them", stacklevel=3)
        return step, focus[0], z_unit
    warnings.warn(f"{note}: they are shown in the order acquired, one step per slice; their true positions are "
                  "in the layer's metadata (focus_positions), and the dock widget fuses at them", stacklevel=3)
    return 1.0, 0.0, "pixel"


def lazy_pages(path: Path):
    """The first image series of a TIFF as a dask array of one chunk per page, each read from the file when
    napari (or the dock widget) asks for it; nothing is read here but the file's layout."""
    import dask
    import dask.array as da

    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        shape, dtype = tuple(series.shape), series.dtype
        page_shape = tuple(series.keyframe.shape)
        indices = [None if page is None else page.index for page in series.pages]
        planes_are_pages = int(np.prod(page_shape)) * len(indices) == int(np.prod(shape)) and \
            all(page is None or (page.parent is tiff and isinstance(page.index, int)) for page in series.pages)
        if not planes_are_pages:  # (another file's pages, SubIFDs, pages that are not the planes): read it all
            return series.asarray()
    read = dask.delayed(_read_page, pure=True)
    planes = [da.from_delayed(read(str(path), index, page_shape, dtype), page_shape, dtype=dtype)
              for index in indices]
    return da.stack(planes).reshape(shape)


def _read_page(path: str, index: int | None, shape: tuple[int, ...], dtype) -> np.ndarray:
    """One page's pixels (zeros for a page the series names but the file lacks, as tifffile reads it)."""
    if index is None:
        return np.zeros(shape, dtype)
    with tifffile.TiffFile(path) as tiff:
        return tiff.pages[index].asarray().reshape(shape)


def _placement(path: Path) -> tuple[list[float], str, float | None, tuple[float, float] | None]:
    """(focus positions, their unit, pixel size in µm, stage (x, y) in µm) as the stack reader finds them;
    ([], "um", None, None) where it cannot read the file as a stack (the layer then opens in slices and pixels)."""
    from fusion.errors import FusionError
    from fusion.readers.tiff import TiffStack

    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")  # (about fusing the file: a viewer shows it all the same, but for z)
            with TiffStack(path) as saved:
                focus, unit = saved.focus_positions()
                placed = [float(z) for z in focus or []], unit, saved.pixel_size_um(), saved.stage_xy_um()
    except (FusionError, ValueError):
        return [], "um", None, None
    if not placed[0]:  # where the stack reader says why its z is lost (a finalized stack cut short), so does the layer
        for warning in said:
            message = str(warning.message)
            if DEPTH_IN_SLICE_INDEX in message:
                warnings.warn(message.replace(DEPTH_IN_SLICE_INDEX, "the stack is shown in slices (its z in pixels)"),
                              stacklevel=4)
    return placed



def output_group(folder: Path, name: str) -> list[LayerData]:
    """The layers of one stack's outputs: ``<name>.stack.ome.tif``, ``.fused.tif``, ``.depth.tif`` (those present).

    A session folder names them ``stack.ome.tif``, ``fused.tif``, ``depth.tif``: pass ``name=""``.
    """
    prefix = f"{name}." if name else ""
    label = name or folder.name
    layers = []
    for suffix, build in (("stack.ome.tif", stack_layer), ("fused.tif", fused_layer), ("depth.tif", depth_layer)):
        path = folder / f"{prefix}{suffix}"
        if path.is_file():
            try:
                layers.append(build(path, label))
            except Exception as error:  # one damaged file does not keep the folder's others from opening
                warnings.warn(f"{path} was not opened: {type(error).__name__}: {error}", stacklevel=2)
    _placed_with_the_stack(layers)
    return layers


def _placed_with_the_stack(layers: list[LayerData]) -> None:
    """The fused image and depth map where their stack lies (an MDA position's stage x/y): their files keep no
    position of their own."""
    stack = next((attributes for _, attributes, _ in layers if "focus_positions" in attributes["metadata"]), None)
    if stack is None or stack["metadata"].get("stage_xy_um") is None or "translate" not in stack:
        return
    at_yx = tuple(stack["translate"][-2:])
    for _, attributes, _ in layers:
        if attributes is not stack and tuple(attributes["scale"][-2:]) == tuple(stack["scale"][-2:]):
            attributes["translate"] = at_yx


def folder_layers(folder: Path) -> list[LayerData] | None:
    """Layers for a session folder, an MDA fusion folder or a --refuse output folder; None if it is none of ours."""
    if (folder / "fused.tif").is_file() or (folder / "stack.ome.tif").is_file():
        return output_group(folder, "")
    names = sorted({p.name[: -len(".fused.tif")] for p in folder.glob("*.fused.tif")} |
                   {p.name[: -len(".stack.ome.tif")] for p in folder.glob("*.stack.ome.tif")})
    if not names:
        return None
    return [layer for name in names for layer in output_group(folder, name)]


def is_ours(path: Path) -> bool:
    """Whether ``path`` is a folder or file that ``folder_layers`` / ``file_layers`` open (without reading it)."""
    if path.is_dir():
        return any((path / name).is_file() for name in ("fused.tif", "stack.ome.tif")) or \
            any(True for _ in path.glob("*.fused.tif")) or any(True for _ in path.glob("*.stack.ome.tif"))
    if not (path.is_file() and any(path.name.endswith(s) or path.name == s[1:] for s in _SUFFIXES)):
        return False
    return is_our_fused(path) if path.name.endswith(".fused.tif") or path.name == "fused.tif" else True


_SUFFIXES = (".fused.tif", ".depth.tif", ".stack.ome.tif")


def file_layers(path: Path) -> list[LayerData] | None:
    """Layers for one of our files (a fused image, a depth map, a stack); None for any other file."""
    file_name = path.name
    for suffix, build in ((".fused.tif", fused_layer), (".depth.tif", depth_layer), (".stack.ome.tif", stack_layer)):
        if file_name.endswith(suffix) or file_name == suffix[1:]:
            if build is fused_layer and not is_our_fused(path):
                return None  # (another program's file of our name: napari's other readers may open it)
            return [build(path, file_name[: -len(suffix)] or path.parent.name)]
    return None
