"""Our outputs as napari layer data: fused image, depth map and raw stack, at their physical scale.

napari's layer data are ``(data, attributes, layer type)`` tuples; this module builds them
from files without importing napari, so that it is cheap to load and test. Scales are in
micrometres (numpy order: z, y, x) where the files say so, else in pixels and slices.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import tifffile

from fusion import channel_look
from fusion.channel_look import ChannelLook
from fusion.readers.tiff import depth_unit_of, described_as_colour, page_has_colour_samples, pixel_size_um_of

DEPTH_COLORMAP = "viridis"
LayerData = tuple[np.ndarray, dict, str]


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


def fused_layer(path: Path, name: str) -> LayerData:
    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        image, axes, recorded = series.asarray(), series.axes, pixel_size_um_of(tiff.pages.first)
        colour = page_has_colour_samples(tiff.pages.first)
        if axes == "CYX" and described_as_colour(tiff.pages.first, image.shape[0]):
            image, axes, colour = np.moveaxis(image, 0, -1), "YXS", True  # float colour: one picture, not channels
        look = channel_look.from_imagej(tiff.imagej_metadata or {}, list(range(image.shape[0]))) \
            if axes == "CYX" else None  # (our fused files: one page per channel)
    pixel_um = recorded or 1.0
    attributes = {"name": f"{name} fused", "scale": (pixel_um, pixel_um), "units": (_length_unit(bool(recorded)),) * 2,
                  "metadata": {"path": str(path), "pixel_size_um": pixel_um}}
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
                   "metadata": {"path": str(path), "depth_unit": unit, "pixel_size_um": pixel_um}}, "image"


def stack_layer(path: Path, name: str) -> LayerData:
    """The raw stack as a z-stack layer, placed as the stack reader (``fusion.readers.tiff``) places it: z from its
    OME planes (a tunable lens's stack: the focal powers its description keeps, in the depth map's unit), or the
    pages' own records where it was never finalized (kill -9, a full disk); the pixel size likewise."""
    with tifffile.TiffFile(path) as tiff:
        stack, axes = tiff.series[0].asarray(), tiff.series[0].axes
        colour = page_has_colour_samples(tiff.pages.first)
    focus, unit, recorded_um = _placement(path)
    pixel_um = recorded_um or 1.0
    dz = float(np.median(np.diff(focus))) if len(focus) > 1 and np.ptp(focus) > 0 else 1.0
    z0 = focus[0] if focus else 0.0
    # (A lens's focal powers have no unit napari knows: pint reads "dpt" as decipints. Its z stays unitless.)
    z_unit = _length_unit(unit == "um" and bool(focus))
    xy_unit = _length_unit(recorded_um is not None)
    attributes = {"name": f"{name} stack", "scale": (dz, pixel_um, pixel_um), "translate": (z0, 0.0, 0.0),
                  "units": (z_unit, xy_unit, xy_unit),
                  "metadata": {"path": str(path), "z_um": focus if unit == "um" else [], "focus_positions": focus,
                               "focus_unit": unit, "pixel_size_um": pixel_um}}
    return stack, _image_attributes(attributes, axes, stack.shape, colour), "image"


def _placement(path: Path) -> tuple[list[float], str, float | None]:
    """(focus positions, their unit, pixel size in µm) as the stack reader finds them; ([], "um", None) where
    it cannot read the file as a stack (the layer then opens in slices and pixels)."""
    from fusion.errors import FusionError
    from fusion.readers.tiff import TiffStack

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (about fusing the file: a viewer shows it all the same)
            with TiffStack(path) as saved:
                focus, unit = saved.focus_positions()
                return [float(z) for z in focus or []], unit, saved.pixel_size_um()
    except (FusionError, ValueError):
        return [], "um", None


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
            layers.append(build(path, label))
    return layers


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
    return path.is_file() and any(path.name.endswith(s) or path.name == s[1:] for s in _SUFFIXES)


_SUFFIXES = (".fused.tif", ".depth.tif", ".stack.ome.tif")


def file_layers(path: Path) -> list[LayerData] | None:
    """Layers for one of our files (a fused image, a depth map, a stack); None for any other file."""
    file_name = path.name
    for suffix, build in ((".fused.tif", fused_layer), (".depth.tif", depth_layer), (".stack.ome.tif", stack_layer)):
        if file_name.endswith(suffix) or file_name == suffix[1:]:
            return [build(path, file_name[: -len(suffix)] or path.parent.name)]
    return None
