"""A GenICam camera's image, as harvesters hands it over, decoded to the frame the rest of the code reads:
(H, W) mono or (H, W, 3) RGB, numpy order, line padding removed, Bayer mosaics demosaiced."""
from __future__ import annotations

import re

import numpy as np

from devices.errors import DeviceProtocolError, UnsupportedFeatureError

_MONO_DEPTHS = {"8": 8, "10": 10, "12": 12, "14": 14, "16": 16, "10p": 10, "12p": 12, "10Packed": 10, "12Packed": 12}
_BAYER_PATTERNS = ("RG", "GR", "GB", "BG")
# Significant bits per sample, by PFNC name ("Mono12p": 12, though harvesters unpacks it into uint16).
BIT_DEPTHS = {
    **{f"Mono{suffix}": bits for suffix, bits in _MONO_DEPTHS.items()},
    **{f"Bayer{pattern}{suffix}": bits for pattern in _BAYER_PATTERNS for suffix, bits in _MONO_DEPTHS.items()
       if suffix != "14"},
    **{f"{order}{bits}": bits for order in ("RGB", "BGR", "RGBa", "BGRa") for bits in (8, 10, 12, 16)},
}
# OpenCV names a Bayer pattern one pixel along from PFNC (its 'BG' is PFNC's RGGB, R at the top left): checked
# against a mosaic of a known colour in tests/test_genicam_pixel_formats.py.
_OPENCV_BAYER_TO_RGB = {"RG": "COLOR_BayerBG2RGB", "GR": "COLOR_BayerGB2RGB",
                        "GB": "COLOR_BayerGR2RGB", "BG": "COLOR_BayerRG2RGB"}
_BAYER = re.compile(r"^Bayer(RG|GR|GB|BG)\d+")
_COLOUR = re.compile(r"^(RGB|BGR)(a?)\d+$")


def decoded_pixels(component, camera: str) -> tuple[np.ndarray, int]:
    """The pixels of a harvesters ``Component2DImage`` and their significant bits per sample. ``camera`` names
    the camera in errors: a size that does not fit the format is a DeviceProtocolError naming both; a format
    this driver cannot read right is an UnsupportedFeatureError saying to set ``pixel_format``."""
    pixel_format = str(component.data_format)
    if pixel_format not in BIT_DEPTHS:
        raise UnsupportedFeatureError(camera, f"sends pixel format {pixel_format!r}, which this driver does not "
                                              "decode; set the camera's pixel_format to a Mono, RGB, BGR or Bayer "
                                              "format it offers")
    if pixel_format.endswith("10Packed"):
        # harvesters 1.4 reads these as 10 bits a pixel; they carry 12 (2 pixels in 3 bytes): a third is lost
        raise UnsupportedFeatureError(camera, f"sends pixel format {pixel_format}, which harvesters reads short "
                                              "(10 bits a pixel of the 12 it takes); set pixel_format to "
                                              f"{pixel_format.removesuffix('Packed')}p, "
                                              f"{pixel_format.removesuffix('Packed')} or a 16-bit format")
    samples = _unpadded_samples(component, camera, pixel_format)
    colour = _COLOUR.match(pixel_format)
    if colour:
        order, alpha = colour.groups()
        samples = samples[:, :, :3]  # the alpha sample is padding
        samples = samples[:, :, ::-1] if order == "BGR" else samples
    elif samples.shape[2] != 1:
        raise DeviceProtocolError(camera, f"sent {pixel_format} with {samples.shape[2]} samples per pixel; "
                                          "it has 1")
    else:
        samples = samples[:, :, 0]
        bayer = _BAYER.match(pixel_format)
        if bayer:
            samples = _demosaiced(samples, bayer.group(1), camera, pixel_format)
    return np.ascontiguousarray(samples), BIT_DEPTHS[pixel_format]


def _unpadded_samples(component, camera: str, pixel_format: str) -> np.ndarray:
    """(H, W, samples per pixel), each line's padding (GenTL padding_x, which harvesters leaves in) cut off."""
    data = np.asarray(component.data)
    height, width = int(component.height), int(component.width)
    samples_per_pixel = int(component.num_components_per_pixel)
    padding_bytes = int(component.x_padding or 0)
    if _is_packed(pixel_format):
        # harvesters unpacks the whole buffer into uint16, padding and all: with padding the groups straddle lines.
        if padding_bytes:
            raise UnsupportedFeatureError(camera, f"sends packed pixel format {pixel_format} with {padding_bytes} "
                                                  "bytes of padding after each line, which cannot be unpacked "
                                                  "line by line here; set pixel_format to an unpacked one "
                                                  f"({pixel_format.rstrip('p').removesuffix('Packed')} or 16-bit)")
        expected = height * width * samples_per_pixel
        if data.size != expected:
            raise DeviceProtocolError(camera, f"sent a {pixel_format} image of {data.size} samples for {width} x "
                                              f"{height} pixels ({expected} samples)")
        return data.reshape(height, width, samples_per_pixel).copy()
    line_bytes = width * samples_per_pixel * data.dtype.itemsize
    stride_bytes = line_bytes + padding_bytes
    raw = data.reshape(-1).view(np.uint8)
    if raw.size != height * stride_bytes:
        raise DeviceProtocolError(camera, f"sent a {pixel_format} image of {raw.size} bytes for {width} x {height} "
                                          f"pixels ({line_bytes} bytes a line + {padding_bytes} of padding: "
                                          f"{height * stride_bytes} bytes)")
    lines = raw.reshape(height, stride_bytes)[:, :line_bytes].copy()  # ours: the buffer goes back to the camera
    return lines.view(data.dtype).reshape(height, width, samples_per_pixel)


def _is_packed(pixel_format: str) -> bool:
    return pixel_format.endswith(("p", "Packed"))


def _demosaiced(mosaic: np.ndarray, pattern: str, camera: str, pixel_format: str) -> np.ndarray:
    """RGB from a Bayer mosaic (PFNC ``pattern``: the colours of the top-left 2 pixels). Left as a mosaic it is
    a checkerboard that every focus measure reads as the sharpest detail there is."""
    import cv2

    if mosaic.shape[0] < 2 or mosaic.shape[1] < 2:
        raise DeviceProtocolError(camera, f"sent a {pixel_format} image of {mosaic.shape[1]} x {mosaic.shape[0]} "
                                          "pixels: too small to demosaic (2 x 2 at least)")
    return cv2.cvtColor(mosaic, getattr(cv2, _OPENCV_BAYER_TO_RGB[pattern]))
