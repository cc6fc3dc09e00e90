"""How a stack's separate channels are named and shown (Fiji's labels, colour tables and display ranges; OME's
channel names and colours), carried from the stack to its fused image: without it Fiji shows a DAPI channel in
red, whatever the stack said, and napari names its layers by number."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LUT_SHAPE = (3, 256)


@dataclass(frozen=True)
class ChannelLook:
    """Per channel, in channel order; any of them None where the stack did not say (or said it inconsistently)."""

    names: tuple[str, ...] | None = None
    luts: tuple[np.ndarray, ...] | None = None            # ImageJ colour tables: (3, 256) uint8 each
    ranges: tuple[tuple[float, float], ...] | None = None  # display ranges (min, max)

    def imagej_metadata(self, n_channels: int) -> dict:
        """What ``tifffile.imagej_metadata_tag`` writes for a hyperstack of ``n_channels`` channel pages (one page
        each): the entries whose count fits it."""
        found: dict = {}
        if self.names is not None and len(self.names) == n_channels:
            found["Labels"] = list(self.names)
        if self.luts is not None and len(self.luts) == n_channels:
            found["LUTs"] = list(self.luts)
        if self.ranges is not None and len(self.ranges) == n_channels:
            found["Ranges"] = tuple(float(v) for pair in self.ranges for v in pair)
        return found

    def to_json(self) -> dict:
        """For the report: the names and each colour table's brightest colour (#rrggbb)."""
        colours = None if self.luts is None else ["#{:02x}{:02x}{:02x}".format(*lut[:, -1]) for lut in self.luts]
        return {"names": None if self.names is None else list(self.names), "colours": colours}


def lut_towards(red: int, green: int, blue: int) -> np.ndarray:
    """An ImageJ colour table from black to the colour."""
    ramp = np.arange(256) / 255.0
    return np.round(np.outer([red, green, blue], ramp)).astype(np.uint8)


def from_imagej(metadata: dict, first_slice_pages: list[int]) -> ChannelLook | None:
    """The look an ImageJ hyperstack gives its channels. ``first_slice_pages``: the pages (one per channel) that
    hold the first slice, whose labels name the channels (ImageJ labels every page)."""
    n_channels = len(first_slice_pages)
    labels = metadata.get("Labels")
    names = None
    if isinstance(labels, (list, tuple)) and len(labels) > max(first_slice_pages):
        candidates = tuple(str(labels[page]).strip() for page in first_slice_pages)
        if all(candidates) and len(set(candidates)) == n_channels:  # one name each, or none
            names = candidates
    luts = metadata.get("LUTs")
    luts = tuple(np.asarray(lut, np.uint8) for lut in luts) \
        if isinstance(luts, (list, tuple)) and len(luts) == n_channels \
        and all(np.shape(lut) == LUT_SHAPE for lut in luts) else None
    values = metadata.get("Ranges")
    ranges = tuple((float(values[2 * c]), float(values[2 * c + 1])) for c in range(n_channels)) \
        if isinstance(values, (list, tuple)) and len(values) == 2 * n_channels else None
    return ChannelLook(names, luts, ranges) if (names or luts or ranges) else None


def from_ome(channels: list[dict[str, str]], n_channels: int) -> ChannelLook | None:
    """The look OME-XML's Channel elements (their attributes, in order) give the channels: Name, and Color as
    a signed 32-bit RGBA integer."""
    if len(channels) != n_channels:
        return None
    names = tuple(channel.get("Name", "").strip() for channel in channels)
    colours = []
    for channel in channels:
        try:
            rgba = int(channel["Color"]) & 0xFFFFFFFF
        except (KeyError, ValueError):
            break
        colours.append(lut_towards(rgba >> 24, (rgba >> 16) & 0xFF, (rgba >> 8) & 0xFF))
    look = ChannelLook(names if all(names) and len(set(names)) == n_channels else None,
                       tuple(colours) if len(colours) == n_channels else None)
    return look if (look.names or look.luts) else None


def from_palette(colormap: np.ndarray | None, bits: int) -> ChannelLook | None:
    """The look of an 8-bit palette image (ImageJ's 8-bit with a colour table: a confocal channel in green, Fire):
    its colour table, as ImageJ's LUT; None for another palette (16-bit, or none)."""
    if colormap is None or bits != 8 or np.shape(colormap) != LUT_SHAPE:
        return None
    table = np.asarray(colormap)
    lut = (table // 257 if table.max() > 255 else table).astype(np.uint8)
    return ChannelLook(luts=(lut,))


def ordered_by_brightness(lut: np.ndarray) -> bool:
    """Whether a colour table's colours grow brighter with the index (a LUT over intensities: Green, Fire), so that
    the indices are the light; an arbitrary palette's (a GIF's) are not."""
    brightness = lut.astype(np.int32).sum(axis=0)
    return bool(np.all(np.diff(brightness) >= 0))
