"""GenICam pixel layouts as real cameras send them: BGR, Bayer mosaics, line padding, packed 10/12-bit.

The buffers are synthetic: the Viky producer in the genicam wheel offers only Mono8 and RGBa8, unpadded. Each is
wrapped in harvesters' own Component2DImage, so the driver reads exactly what harvesters hands it from a camera;
only the GenTL buffer under it and the acquirer that fetches it are stand-ins."""
from __future__ import annotations

import types

import numpy as np
import pytest
from genicam.gentl import NotAvailableException
from harvesters.core import Component2DImage
from harvesters.util.pfnc import dict_by_ints

from devices.errors import DeviceProtocolError, UnsupportedFeatureError
from devices.genicam import GenICamCamera

PFNC_CODES = {name: code for code, name in dict_by_ints.items()}
H, W = 6, 8


class SyntheticGenTLBuffer:
    """The GenTL buffer attributes Component2DImage reads (single part): raw bytes, format, size, padding."""

    def __init__(self, raw: bytes, pixel_format: str, width: int, height: int, padding_x: int = 0,
                 delivered_image_height: int | None = None):
        self.raw_buffer, self.pixel_format = raw, PFNC_CODES[pixel_format]
        self.width, self.height, self.padding_x = width, height, padding_x
        self.delivered_image_height = height if delivered_image_height is None else delivered_image_height


class UnstampedBufferModule:
    """The GenTL buffer module under it, of a producer that stamps no buffer (as Viky's)."""

    @property
    def timestamp_ns(self) -> int:
        raise NotAvailableException("timestamps not supported by the device")

    @property
    def timestamp(self) -> int:
        raise NotAvailableException("timestamps not supported by the device")


class FetchedBuffer:
    """What ImageAcquirer.fetch() returns: a context manager holding the payload's components and the buffer module."""

    def __init__(self, component):
        self.payload = types.SimpleNamespace(components=[component])
        self.module = UnstampedBufferModule()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def fetched(raw: bytes, pixel_format: str, width: int = W, height: int = H, **buffer_info):
    """The frame GenICamCamera makes of one buffer, as its acquirer hands it over."""
    component = Component2DImage(buffer=SyntheticGenTLBuffer(raw, pixel_format, width, height, **buffer_info),
                                 part=None, node_map=object())
    camera = object.__new__(GenICamCamera)
    camera.name = "GenICam camera (synthetic)"
    camera._nodes = types.SimpleNamespace(ExposureTime=types.SimpleNamespace(value=8000.0))
    camera._acquirer = types.SimpleNamespace(fetch=lambda timeout: FetchedBuffer(component))
    return camera._fetch(1.0)


def padded(lines: np.ndarray, padding_bytes: int) -> bytes:
    """Each line's bytes, then ``padding_bytes`` of 0xFF (GenTL padding_x)."""
    rows = lines.reshape(lines.shape[0], -1).view(np.uint8)
    return np.concatenate([rows, np.full((rows.shape[0], padding_bytes), 255, np.uint8)], axis=1).tobytes()


@pytest.mark.parametrize("pixel_format,alpha", [("BGR8", False), ("BGRa8", True), ("RGB8", False), ("RGBa8", True)])
def test_colour_frames_come_out_red_green_blue(pixel_format, alpha):
    # BGR8 came out with red and blue swapped: a red scene read as blue.
    rgb = (200, 100, 50)
    order = rgb[::-1] if pixel_format.startswith("BGR") else rgb
    pixel = np.array(order + ((255,) if alpha else ()), np.uint8)
    frame = fetched(np.tile(pixel, (H, W, 1)).tobytes(), pixel_format)
    assert frame.pixels.shape == (H, W, 3) and frame.bit_depth == 8
    assert frame.pixels[0, 0].tolist() == list(rgb)


def bayer_mosaic(pattern: str, rgb: tuple[int, int, int], dtype=np.uint8) -> np.ndarray:
    """A flat scene of colour ``rgb`` through the PFNC Bayer ``pattern`` (colours of the top-left 2 x 2, row by row:
    "RG" is R G / G B)."""
    top_left = {"RG": "RGGB", "GR": "GRBG", "GB": "GBRG", "BG": "BGGR"}[pattern]
    value = dict(zip("RGB", rgb))
    mosaic = np.empty((H, W), dtype)
    for (row, col), colour in zip(((0, 0), (0, 1), (1, 0), (1, 1)), top_left):
        mosaic[row::2, col::2] = value[colour]
    return mosaic


@pytest.mark.parametrize("pattern", ["RG", "GR", "GB", "BG"])
def test_bayer_mosaics_are_demosaiced_to_their_colour(pattern):
    # A Bayer frame came back as mono: a flat scene became a full-contrast checkerboard, the 'sharpest' detail.
    frame = fetched(bayer_mosaic(pattern, (200, 100, 50)).tobytes(), f"Bayer{pattern}8")
    assert frame.pixels.shape == (H, W, 3) and frame.pixels.dtype == np.uint8 and frame.bit_depth == 8
    assert np.all(frame.pixels[2:-2, 2:-2] == (200, 100, 50))  # inside the border that demosaicing guesses


def test_a_12_bit_bayer_mosaic_keeps_its_values_and_depth():
    frame = fetched(bayer_mosaic("GB", (4000, 2000, 100), np.uint16).tobytes(), "BayerGB12")
    assert frame.pixels.dtype == np.uint16 and frame.bit_depth == 12
    assert np.all(frame.pixels[2:-2, 2:-2] == (4000, 2000, 100))


@pytest.mark.parametrize("pixel_format,dtype,samples", [("Mono8", np.uint8, 1), ("Mono16", np.uint16, 1),
                                                        ("RGB8", np.uint8, 3)])
@pytest.mark.parametrize("padding_bytes", [2, 6])
def test_line_padding_is_cut_off_each_line(pixel_format, dtype, samples, padding_bytes):
    # 2 bytes of padding after each line raised numpy's "cannot reshape"; 6 gave a silent (H, W, 2) of garbage.
    image = np.arange(H * W * samples, dtype=dtype).reshape(H, W, samples) * 3
    frame = fetched(padded(image, padding_bytes), pixel_format, padding_x=padding_bytes)
    assert np.array_equal(frame.pixels, image[:, :, 0] if samples == 1 else image)


def test_an_image_shorter_than_its_size_is_a_protocol_error_naming_both():
    # A buffer that says 0 lines (then delivered 6): harvesters reads no bytes of it.
    with pytest.raises(DeviceProtocolError, match=r"^GenICam camera \(synthetic\): sent a Mono8 image of 0 bytes "
                                                  r"for 8 x 6 pixels \(8 bytes a line \+ 0 of padding: 48 bytes\)$"):
        fetched(bytes(H * W), "Mono8", height=0, delivered_image_height=H)


def pack_mono12p(values: np.ndarray) -> bytes:
    """PFNC Mono12p: 2 pixels in 3 bytes, least significant bits first."""
    a, b = values[0::2].astype(np.uint16), values[1::2].astype(np.uint16)
    return np.stack([a & 0xFF, (a >> 8) | ((b & 0xF) << 4), b >> 4], axis=1).astype(np.uint8).tobytes()


def pack_mono10p(values: np.ndarray) -> bytes:
    """PFNC Mono10p: 4 pixels in 5 bytes, least significant bits first."""
    bits = np.unpackbits(values.astype("<u2").view(np.uint8).reshape(-1, 2), axis=1, bitorder="little")[:, :10]
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def pack_gige(values: np.ndarray, bits: int) -> bytes:
    """GigE Vision Mono10Packed / Mono12Packed: 2 pixels in 3 bytes, the high bits of each in a byte of its own."""
    a, b = values[0::2].astype(np.uint16), values[1::2].astype(np.uint16)
    low = bits - 8
    mask = (1 << low) - 1
    return np.stack([a >> low, (a & mask) | ((b & mask) << 4), b >> low], axis=1).astype(np.uint8).tobytes()


@pytest.mark.parametrize("pixel_format,bits,pack", [
    ("Mono12p", 12, pack_mono12p), ("Mono10p", 10, pack_mono10p),
    ("Mono12Packed", 12, lambda v: pack_gige(v, 12))])
def test_packed_mono_frames_say_their_true_bit_depth(pixel_format, bits, pack):
    # They said 16 bits (harvesters unpacks into uint16): a 12-bit image read as 1/16 of full scale.
    image = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 37) % (1 << bits)
    image[0, 0] = (1 << bits) - 1
    frame = fetched(pack(image.reshape(-1)), pixel_format)
    assert frame.bit_depth == bits and np.array_equal(frame.pixels, image)


def test_mono10packed_which_harvesters_reads_short_is_refused_naming_formats_that_work():
    image = np.arange(H * W, dtype=np.uint16).reshape(-1)
    with pytest.raises(UnsupportedFeatureError, match=r"sends pixel format Mono10Packed, which harvesters reads short "
                                                      r".*set pixel_format to Mono10p, Mono10 or a 16-bit format"):
        fetched(pack_gige(image, 10), "Mono10Packed")


def test_a_packed_frame_with_line_padding_is_refused_naming_an_unpacked_format():
    line = pack_mono12p(np.arange(W, dtype=np.uint16))
    raw = (line + b"\xff" * 3) * H
    with pytest.raises(UnsupportedFeatureError, match="packed pixel format Mono12p with 3 bytes of padding after "
                                                      r"each line.*set pixel_format to an unpacked one \(Mono12"):
        fetched(raw, "Mono12p", padding_x=3)


def test_a_pixel_format_the_driver_does_not_decode_is_refused_naming_it():
    with pytest.raises(UnsupportedFeatureError, match="sends pixel format 'YUV422_8', which this driver does not "
                                                      "decode; set the camera's pixel_format"):
        fetched(bytes(H * W * 2), "YUV422_8")


def test_a_packed_12_bit_bayer_mosaic_is_demosaiced():
    frame = fetched(pack_mono12p(bayer_mosaic("RG", (4000, 2000, 100), np.uint16).reshape(-1)), "BayerRG12p")
    assert frame.bit_depth == 12 and frame.pixels.shape == (H, W, 3)
    assert np.all(frame.pixels[2:-2, 2:-2] == (4000, 2000, 100))
