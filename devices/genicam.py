"""GenICam cameras through harvesters and a GenTL producer (.cti) named by the user."""
from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
import time
from typing import Any
from pathlib import Path
from collections.abc import Iterator

from devices.camera import CameraTimestamp, Frame, frame_wait_s, no_frame_within
from devices.errors import DeviceError, DeviceNotFoundError, DeviceTimeoutError, UnsupportedFeatureError
from devices.genicam_pixels import decoded_pixels

EXPOSURE_NODES = ("ExposureTime", "ExposureTimeAbs")  # microseconds, SFNC and older names
GAIN_NODES = ("Gain", "GainRaw")
TICK_FREQUENCY_NODES = ("GevTimestampTickFrequency",)  # Hz: how long a GigE camera's timestamp tick is
# Functions every GenTL producer exports (the GenTL standard's C interface): a library without them is no producer.
GENTL_ENTRY_POINTS = ("GCInitLib", "GCCloseLib", "TLOpen", "TLClose")


def _check_producer(cti_path: str | Path, camera_name: str) -> None:
    """That ``cti_path`` loads as a GenTL producer, checked here before harvesters is given it: harvesters' own check
    logged the loader's error with a traceback before ours (/etc/passwd), and a shared library that is no producer
    crashed the process in harvesters' update (a segmentation fault, after 60 lines of "does not implement")."""
    try:
        library = ctypes.CDLL(str(cti_path))
    except OSError as error:
        if str(cti_path) not in str(error):  # (a library the producer needs: its own loads, the other is missing)
            raise DeviceNotFoundError(camera_name, f"cannot open the camera: {cti_path} needs a library that "
                                      f"cannot be loaded ({error}): install the producer's dependencies, or add "
                                      "their folder to LD_LIBRARY_PATH (the vendor's setup script does)") from None
        raise DeviceNotFoundError(camera_name, f"cannot open the camera: {error}; a GenTL producer (.cti) "
                                  "is a shared library") from None
    missing = [name for name in GENTL_ENTRY_POINTS if not hasattr(library, name)]
    if missing:
        raise DeviceNotFoundError(camera_name, f"cannot open the camera: {cti_path} is not a GenTL producer "
                                  f"(it has no {', '.join(missing)})")


def _keeping_sigint(make):
    """``make()``, with the SIGINT handler put back afterwards: harvesters' ImageAcquirer, made in
    the main thread, installs its own, which destroys the acquirer on Ctrl-C and raises nothing, so
    the session could not stop in order (save, fuse, report) and no later Ctrl-C stopped anything."""
    if threading.current_thread() is not threading.main_thread():
        return make()  # only the main thread can set handlers (harvesters sets none there either)
    handler = signal.getsignal(signal.SIGINT)
    try:
        return make()
    finally:
        signal.signal(signal.SIGINT, handler)


class GenICamCamera:
    """One camera of a GenTL producer, chosen by serial number, model or index (first match)."""

    def __init__(self, cti_path: str | Path, serial_number: str | None = None, model: str | None = None,
                 index: int | None = None, pixel_format: str | None = None, exposure_ms: float | None = None,
                 gain: float | None = None, name: str | None = None):
        from harvesters.core import Harvester

        self.name = name or f"GenICam camera ({serial_number or model or index or 'first'})"
        if not Path(cti_path).is_file():
            raise DeviceNotFoundError(self.name, f"no GenTL producer at {cti_path}")
        # The loader searches its library path, not the working folder, for a name without a slash ('viky.cti',
        # as a profile gives it): a file that is there was "not found".
        cti_path = Path(cti_path).resolve()
        _check_producer(cti_path, self.name)
        self._harvester = Harvester()
        self._acquirer: Any = None
        self._ticks_per_s: float | None | bool = False  # (False: not asked yet; None: the camera does not say)
        try:
            self._harvester.add_file(str(cti_path))
            self._harvester.update()
            self._acquirer = _keeping_sigint(lambda: self._harvester.create(self._select(serial_number, model, index)))
        except DeviceError:
            self.close()
            raise
        except Exception as error:
            self.close()
            raise DeviceNotFoundError(self.name, f"cannot open the camera: {error}") from error
        self._nodes = self._acquirer.remote_device.node_map
        if pixel_format is not None:
            self.set_pixel_format(pixel_format)
        if exposure_ms is not None:
            self.set_exposure_ms(exposure_ms)
        if gain is not None:
            self.set_gain(gain)

    def _select(self, serial_number, model, index) -> int:
        devices = self._harvester.device_info_list
        if not devices:
            raise DeviceNotFoundError(self.name, "the GenTL producer reports no cameras")
        described = ", ".join(f"#{i} {d.model} serial {d.serial_number}" for i, d in enumerate(devices))
        for position, info in enumerate(devices):
            if ((serial_number is None or str(info.serial_number) == str(serial_number))
                    and (model is None or info.model == model) and (index is None or position == index)):
                return position
        raise DeviceNotFoundError(self.name, f"no camera matches; the producer has: {described}")

    # -- settings --
    def _node(self, names: tuple[str, ...], what: str):
        for node_name in names:
            if hasattr(self._nodes, node_name):
                return getattr(self._nodes, node_name)
        raise UnsupportedFeatureError(self.name, f"has no {what} feature ({' or '.join(names)} not in its node map)")

    def set_pixel_format(self, pixel_format: str) -> None:
        node = self._node(("PixelFormat",), "pixel format")
        allowed = tuple(node.symbolics)
        if pixel_format not in allowed:
            raise UnsupportedFeatureError(self.name, f"pixel format {pixel_format!r} is not one of {allowed}")
        node.value = pixel_format

    @property
    def pixel_format(self) -> str:
        return str(self._node(("PixelFormat",), "pixel format").value)

    @property
    def exposure_ms(self) -> float | None:
        try:
            return float(self._node(EXPOSURE_NODES, "exposure").value) / 1000
        except UnsupportedFeatureError:
            return None

    def set_exposure_ms(self, exposure_ms: float) -> None:
        self._node(EXPOSURE_NODES, "exposure").value = float(exposure_ms) * 1000

    def set_gain(self, gain: float) -> None:
        self._node(GAIN_NODES, "gain").value = gain

    # -- frames --
    def snap(self, timeout_s: float = 5.0) -> Frame:
        """Start, take the first complete frame, stop: the frame was exposed after this call."""
        self._acquirer.start()
        try:
            return self._fetch(timeout_s)
        finally:
            self._acquirer.stop()

    def sequence(self, n_frames: int, timeout_s: float = 5.0) -> Iterator[Frame]:
        self._acquirer.start()
        try:
            for _ in range(n_frames):
                yield self._fetch(timeout_s)
        finally:
            self._acquirer.stop()

    def _fetch(self, timeout_s: float) -> Frame:
        from genicam.gentl import TimeoutException

        exposure_ms = self.exposure_ms
        try:
            with self._acquirer.fetch(timeout=frame_wait_s(timeout_s, exposure_ms)) as buffer:
                component = buffer.payload.components[0]
                pixel_format = str(component.data_format)
                pixels, bit_depth = decoded_pixels(component, self.name)
                camera_timestamp = self._camera_timestamp(buffer.module)
        except TimeoutException as error:
            raise DeviceTimeoutError(self.name, no_frame_within(timeout_s, exposure_ms)) from error
        return Frame(pixels=pixels, exposure_ms=exposure_ms, pixel_type=pixel_format, bit_depth=bit_depth,
                     timestamp_s=time.time(), metadata={}, camera_timestamp=camera_timestamp)

    def _camera_timestamp(self, buffer_module) -> CameraTimestamp | None:
        """The buffer's timestamp (a GenTL buffer module's): in ns where the producer gives it so, else in the
        camera's ticks; None where it gives none (Viky). (harvesters' ``Buffer.timestamp`` says 0 for none, and its
        ``timestamp_frequency`` 1 GHz for a tick it does not know.)"""
        from genicam.gentl import GenericException

        with contextlib.suppress(GenericException):
            stamp_ns = int(buffer_module.timestamp_ns)
            if stamp_ns:  # (0: none, as harvesters takes it: every slice's camera time read 0)
                return CameraTimestamp(stamp_ns, 1e9)
        try:
            ticks = int(buffer_module.timestamp)
        except GenericException:
            return None
        if not ticks:
            return None
        if self._ticks_per_s is False:
            self._ticks_per_s = self._tick_frequency_hz()
        return CameraTimestamp(ticks, self._ticks_per_s or None)

    def _tick_frequency_hz(self) -> float | None:
        """How many timestamp ticks make a second: the producer's device module says, or the node map; None: neither."""
        from genicam.gentl import GenericException

        with contextlib.suppress(GenericException, AttributeError):
            ticks_per_s = float(self._acquirer.device.module.timestamp_frequency)
            if ticks_per_s:  # (0: the producer does not know; the node map may)
                return ticks_per_s
        for node_name in TICK_FREQUENCY_NODES:
            if hasattr(self._nodes, node_name):
                with contextlib.suppress(GenericException, AttributeError, ValueError):
                    return float(getattr(self._nodes, node_name).value) or None
        return None

    def close(self) -> None:
        if self._acquirer is not None:
            self._acquirer.destroy()
            self._acquirer = None
        if self._harvester is not None:
            self._harvester.reset()
            self._harvester = None


def bundled_producer() -> Path | None:
    """The GenTL producer shipped in the ``genicam`` wheel (a simulated camera), if installed."""
    try:
        import genicam
    except ImportError:
        return None
    path = Path(genicam.__file__).parent / "viky.cti"
    return path if path.is_file() else None
