"""What Fiji's own TIFF opener (ImageJ 1.x: ``ij.io.TiffDecoder``, ``FileOpener``, ``Opener``) makes of a TIFF:
the pixel size and unit it shows, and whether it opens one RGB picture or a stack of channels.

Ported from ImageJ's rules (not from our writer), so that tests check our files against what Fiji does.
"""
from __future__ import annotations

import re
from pathlib import Path

import tifffile

TIFF_RESOLUTION_UNITS = {1: " ", 2: "inch", 3: "cm"}  # TiffDecoder's names for ResolutionUnit


class ImageJCannotOpen(ValueError):
    """Fiji's TIFF opener refuses the file (TiffDecoder's error, as Fiji shows it)."""


def _first_page(tiff: tifffile.TiffFile) -> tifffile.TiffPage:
    """The page TiffDecoder reads first, or ImageJCannotOpen where it stops there: samples of a pixel (more than
    one: BitsPerSample has a count) must be of 8 or 16 bits."""
    page = tiff.pages.first
    if page.samplesperpixel > 1 and page.bitspersample not in (8, 16):
        raise ImageJCannotOpen(f"ImageJ can only open 8 and 16 bit/channel images ({page.bitspersample})")
    return page


def _last_description(page: tifffile.TiffPage) -> str | None:
    """TiffDecoder keeps the last ImageDescription of the first image (tifffile reads the first)."""
    descriptions = [tag.value for tag in page.tags if tag.code == 270]
    return descriptions[-1] if descriptions else None


def _imagej_properties(description: str | None) -> dict[str, str] | None:
    """FileOpener.decodeDescriptionString: only a description that starts with "ImageJ" is read, as Java
    properties (whose values decode \\uXXXX escapes)."""
    if not description or not description.startswith("ImageJ"):
        return None
    lines = (line.split("=", 1) for line in description.splitlines() if "=" in line)
    return {key: re.sub(r"\\u([0-9a-fA-F]{4})", lambda code: chr(int(code[1], 16)), value) for key, value in lines}


def imagej_calibration(path: Path) -> tuple[float, str] | None:
    """(pixel width, unit) as Fiji's File > Open shows them, or None for an uncalibrated image; ImageJCannotOpen
    where Fiji cannot open it."""
    with tifffile.TiffFile(path) as tiff:
        page = _first_page(tiff)
        x_resolution, resolution_unit = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
        pixel_width, unit = 1.0, None
        if x_resolution is not None and x_resolution.value[0]:
            pixel_width = x_resolution.value[1] / x_resolution.value[0]
        if resolution_unit is not None:
            unit = TIFF_RESOLUTION_UNITS.get(resolution_unit.value)
            if unit == "inch" and pixel_width == 1 / 72:  # a photo program's default: no calibration
                pixel_width, unit = 1.0, None
        properties = _imagej_properties(_last_description(page))
    if properties is not None:
        described_unit = properties.get("unit", "")
        if unit == "cm" and described_unit == "um":  # decodeDescriptionString: for exactly "um", no other spelling
            pixel_width *= 1e4
        unit = described_unit
    if unit is None or not pixel_width > 0:
        return None
    # FileOpener.setCalibration (Prefs.convertToMicrons): cm up to 0.001 (10 µm) shown in µm; up to 1e-4 (1 µm)
    # where an ImageJ description named the unit cm.
    if unit == "cm" and pixel_width <= (1e-4 if properties is not None else 1e-3):
        pixel_width, unit = pixel_width * 1e4, "um"
    return pixel_width, {"um": "µm", "": "pixel"}.get(unit, unit)  # Calibration.sanitizeUnit


def imagej_value_unit(path: Path) -> str | None:
    """The unit Fiji shows beside a pixel's value (Calibration.getValueUnit): a 32-bit image's ``vunit``; None where
    it keeps its default ("Gray Value")."""
    with tifffile.TiffFile(path) as tiff:
        page = _first_page(tiff)
        bits, samples = page.bitspersample, page.samplesperpixel
        properties = _imagej_properties(_last_description(page)) or {}
    return properties.get("vunit") if bits == 32 and samples == 1 else None  # FileOpener.setCalibration


def imagej_image_kind(path: Path) -> tuple[str, int]:
    """("RGB", 1) for one colour picture, else (display mode, channels): "composite", "color" or "grayscale";
    ImageJCannotOpen where Fiji cannot open it."""
    with tifffile.TiffFile(path) as tiff:
        page = _first_page(tiff)
        bits, samples = page.bitspersample, page.samplesperpixel
        properties = _imagej_properties(_last_description(page)) or {}
    mode = properties.get("mode")
    if samples in (3, 4) and bits == 8:  # TiffDecoder: RGB (ARGB with 4): one ColorProcessor
        return "RGB", 1
    if samples in (3, 4) and bits == 16:  # RGB48: FileOpener makes a composite of its channels
        return mode if mode in ("color", "grayscale") else "composite", samples
    channels = int(properties.get("channels", 1))
    if channels > 1:  # Opener.makeComposite; hyperstacks default to "color"
        return mode if mode in ("composite", "grayscale") else "color", channels
    return "grayscale", 1
