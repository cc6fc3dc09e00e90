"""Micro-Manager cameras and focus drives, through an MMCore (pymmcore-plus, or pycromanager's).

The classes here talk to any object with MMCore's camelCase API: a pymmcore-plus
``CMMCorePlus``/``UniMMCore`` embedded in this process, or pycromanager's ``Core()`` seen
through ``devices.pycromanager_core``. Every core call that can block runs with a deadline.
"""
from __future__ import annotations

import concurrent.futures
import os
import time
from pathlib import Path
from collections.abc import Generator
from typing import NamedTuple

import numpy as np

from devices.camera import Frame, frame_wait_s, no_frame_within
from devices.errors import (DeviceDisconnectedError, DeviceErrorReply, DeviceNotFoundError, DeviceTimeoutError,
                            UnsupportedFeatureError, did_you_mean, seconds_text)
from devices.focus_drive import FocusDrive, FocusLimits
from devices.library_threads import ThreadErrors


def open_mmcore(config_path: str | Path | None = None, adapter_paths: list[str] | None = None,
                python_devices: dict | None = None):
    """An embedded MMCore with ``config_path`` loaded (pymmcore-plus).

    ``adapter_paths`` defaults to what pymmcore-plus finds (e.g. the mm-test-adapters wheel);
    ``python_devices`` ({label: unicore.Device}) are loaded into a ``UniMMCore`` first, so a
    configuration may name them, or, with no configuration, become the core's devices.
    """
    from pymmcore_plus import CMMCorePlus, find_micromanager

    name = f"MMCore ({config_path or 'no configuration'})"
    if config_path is not None and not Path(config_path).is_file():
        raise DeviceNotFoundError(name, f"no Micro-Manager configuration file at {config_path}")
    uni_core = None
    if python_devices:
        from pymmcore_plus.experimental.unicore import UniMMCore

        uni_core = UniMMCore()
    core: CMMCorePlus = uni_core if uni_core is not None else CMMCorePlus()
    installed = find_micromanager()
    paths = adapter_paths or ([installed] if installed else [])
    if not paths and config_path is not None:
        raise DeviceNotFoundError(name, "no Micro-Manager device adapters found: install Micro-Manager "
                                        "or the mm-test-adapters package, or give adapter_paths")
    core.setDeviceAdapterSearchPaths([str(p) for p in paths])
    for label, device in (python_devices or {}).items():
        assert uni_core is not None  # made above for python_devices
        uni_core.loadPyDevice(label, device)
    try:
        if config_path is not None:
            core.loadSystemConfiguration(str(config_path))
        else:
            core.initializeAllDevices()
    except (RuntimeError, OSError) as error:
        raise DeviceErrorReply(name, "loading the configuration failed", str(error)) from error
    if config_path is not None and not python_devices and list(core.getLoadedDevices()) in ([], ["Core"]):
        # (MMCore passes over lines it does not know: a file of anything else loads without a word.)
        raise DeviceNotFoundError(name, f"{config_path} loaded no device: is it a Micro-Manager configuration "
                                        "(Device, Property and Parent lines, as Micro-Manager's Hardware "
                                        "Configuration Wizard saves them)?")
    return core


class _CoreCaller:
    """Runs core calls on one worker thread so that each can be given a deadline."""

    def __init__(self, core, device: str):
        self.core = core
        self.device = device
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"mmcore {device}")

    def __call__(self, method: str, *args, timeout_s: float = 5.0):
        future = self._pool.submit(getattr(self.core, method), *args)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise DeviceTimeoutError(self.device, f"{method} did not return within {seconds_text(timeout_s)}") from None
        except (ConnectionError, EOFError) as error:
            raise DeviceDisconnectedError(self.device, f"{method} lost the core: {error}") from error
        except RuntimeError as error:  # MMCore's CMMError arrives as RuntimeError
            raise DeviceErrorReply(self.device, f"{method} failed", str(error)) from error

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


SEQUENCE_THREAD_EXIT_S = 2.0  # how long a camera's own thread may take to finish its exit once its sequence ended


def _native_threads() -> frozenset[int]:
    """The ids of this process's threads, native ones included (Linux: /proc/self/task); empty where the OS
    does not list them."""
    try:
        return frozenset(int(tid) for tid in os.listdir("/proc/self/task"))
    except (OSError, ValueError):
        return frozenset()


def _wait_until_ended(threads: frozenset[int], deadline_s: float) -> None:
    """Wait, until ``deadline_s`` at most, for each of ``threads`` (native ids) to be gone from this process."""
    deadline = time.monotonic() + deadline_s
    while threads & _native_threads() and time.monotonic() < deadline:
        time.sleep(0.001)


def as_image(raw, width: int, height: int, components: int) -> np.ndarray:
    """MMCore image data as (H, W) or (H, W, 3): reshapes flat buffers, unpacks RGB32 (BGRA)."""
    image = np.asarray(raw)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[..., :3]
    if components == 4:  # packed 32-bit BGRA
        if image.dtype != np.uint8:
            image = image.view(np.uint8)
        image = image.reshape(height, width, 4)
        return image[..., 2::-1].copy()
    return image.reshape(height, width)


# MMCore's DeviceType numbers (MMDeviceConstants.h), for what a label names when it is not what the profile wants.
CAMERA_DEVICE, STAGE_DEVICE = 2, 5
DEVICE_TYPE_WORDS = {2: "a camera", 3: "a shutter", 4: "a state device (a turret or wheel)", 5: "a stage",
                     6: "an XY stage", 9: "an autofocus", 15: "a hub"}
KIND_WORDS = {CAMERA_DEVICE: ("camera", "cameras"), STAGE_DEVICE: ("focus stage", "focus stages")}


def _device_types(call: _CoreCaller, names: list[str]) -> dict[str, int | None]:
    """Each device's MMCore type number; None where the core does not say it as a number (a Java core's enum)."""
    types: dict[str, int | None] = {}
    for name in names:
        try:
            types[name] = int(call("getDeviceType", name))
        except (TypeError, ValueError, DeviceErrorReply):
            types[name] = None
    return types


def _require_loaded(call: _CoreCaller, label: str, key: str, device: str, kind: int) -> None:
    """A DeviceNotFoundError unless the core has loaded a device called ``label`` (the profile's ``key``) of MMCore
    type ``kind`` (CAMERA_DEVICE, STAGE_DEVICE), naming the nearest loaded device of that type, or them all: a
    camera's label given to the focus opened, and failed only at the first move, with "wrong type"."""
    loaded = [str(name) for name in call("getLoadedDevices") if str(name) != "Core"]  # (the core itself)
    types = _device_types(call, loaded)
    wanted, wanted_plural = KIND_WORDS[kind]
    of_kind = [name for name in loaded if types[name] in (kind, None)]
    candidates = (of_kind, wanted_plural) if of_kind else (loaded, "loaded devices")
    if label not in loaded:
        problem = f"no device {label!r} is loaded ({did_you_mean(label, *candidates)})"
    elif types[label] not in (kind, None):
        what = DEVICE_TYPE_WORDS.get(types[label] or 0, "another kind of device")
        others = f"its {wanted_plural}: {', '.join(of_kind)}" if of_kind else f"the configuration loads no {wanted}"
        problem = f"{label!r} is {what}, not a {wanted} ({others})"
    else:
        return
    call.close()
    raise DeviceNotFoundError(device, f"{key}: {problem}")


class _ImageFormat(NamedTuple):
    width: int
    height: int
    components: int
    bit_depth: int
    exposure_ms: float


def device_name(kind: str, label: str) -> str:
    """What errors and reports call a core's device: "Micro-Manager camera Camera", "Micro-Manager stage Z"."""
    return f"Micro-Manager {kind} {label}"


class _CameraFormat(NamedTuple):
    """What a physical camera's frames are, as a Multi Camera must find them alike."""

    bit_depth: int
    bytes_per_pixel: int
    components: int
    width_px: int
    height_px: int
    pixel_type: str  # its PixelType property ("8bit", "16bit"); "" where it has none

    def pixels_said(self) -> str:
        """ "8bit (1 byte per pixel)", "2 bytes per pixel" where it has no PixelType."""
        per_pixel = f"{self.bytes_per_pixel} {'byte' if self.bytes_per_pixel == 1 else 'bytes'} per pixel"
        return f"{self.pixel_type} ({per_pixel})" if self.pixel_type else per_pixel


def _camera_format(core, camera: str) -> _CameraFormat:
    """The core's current camera's (``camera``) frame format."""
    pixel_type = str(core.getProperty(camera, "PixelType")) if core.hasProperty(camera, "PixelType") else ""
    return _CameraFormat(int(core.getImageBitDepth()), int(core.getBytesPerPixel()),
                         int(core.getNumberOfComponents()), int(core.getImageWidth()), int(core.getImageHeight()),
                         pixel_type)


def _check_alike(multi: str, formats: dict[str, _CameraFormat]) -> None:
    """An UnsupportedFeatureError naming each camera's pixel type (or frame size) unless the Multi Camera ``multi``'s
    physical cameras (``formats``) give frames of one pixel size and one frame size: with an 8bit and a 16bit camera
    each MDA failed at its first frame (pymmcore-plus's getImage "returned NULL without setting an exception"), and
    with two frame sizes each of its snaps failed."""
    if len({(f.bytes_per_pixel, f.components) for f in formats.values()}) > 1:
        what = "pixel type"
        said = ", ".join(f"{camera} {f.pixels_said()}" for camera, f in formats.items())
        advice = "give them one PixelType in micromanager.properties (BitDepth may differ)"
    elif len({(f.width_px, f.height_px) for f in formats.values()}) > 1:
        what = "frame size"
        said = ", ".join(f"{camera} {f.width_px} px wide x {f.height_px} high" for camera, f in formats.items())
        advice = "give them one size (binning, ROI or sensor size) in micromanager.properties"
    else:
        return
    raise UnsupportedFeatureError(device_name("camera", multi),
                                  f"its physical cameras differ in {what}: {said}; Micro-Manager's Multi Camera takes "
                                  f"one {what} from all of them: {advice}; nothing was acquired")


def camera_bit_depths(core) -> dict[str, int]:
    """Each camera's exact bits per sample (11 for an 11-bit camera), by label: the core's current camera's and, where
    that is a Multi Camera, each of its physical cameras', the labels pymmcore-plus tags their frames with
    (``camera_device``). MMCore says a depth for its current camera only (a Multi Camera says its deepest camera's),
    so each physical camera is made the current one in turn, and the current one is set back: call it before an MDA,
    on the thread that starts it, never while one runs. A camera that says none (0, or an error) is left out.
    A Multi Camera whose physical cameras differ in pixel type (bytes per pixel) or frame size is an
    UnsupportedFeatureError naming each camera's (seen on the same visit): no MDA of it can take a frame."""
    current = core.getCameraDevice()
    if not current:
        return {}
    physical = [core.getPhysicalCameraDevice(channel) for channel in range(core.getNumberOfCameraChannels())]
    formats: dict[str, _CameraFormat] = {}
    try:
        for camera in dict.fromkeys([current, *physical]):
            try:
                if camera != core.getCameraDevice():
                    core.setCameraDevice(camera)
                formats[camera] = _camera_format(core, camera)
            except RuntimeError:  # (not a camera the core can make current): the caller's guess stands
                continue
    finally:
        if core.getCameraDevice() != current:
            core.setCameraDevice(current)
    if len(physical) > 1:
        _check_alike(current, {camera: formats[camera] for camera in physical if camera in formats})
    return {camera: f.bit_depth for camera, f in formats.items() if f.bit_depth}


class MicroManagerCamera:
    """The core's current camera (or ``label``)."""

    def __init__(self, core, label: str | None = None, name: str | None = None):
        self.label = label or core.getCameraDevice()
        if not self.label:
            raise DeviceNotFoundError(name or "Micro-Manager camera", "the configuration has no camera")
        self.name = name or device_name("camera", self.label)
        self._core = core
        self._call = _CoreCaller(core, self.name)
        if label is not None:
            _require_loaded(self._call, label, "camera.label", self.name, CAMERA_DEVICE)
            self._call("setCameraDevice", label)

    @property
    def exposure_ms(self) -> float:
        return float(self._call("getExposure"))

    def set_exposure_ms(self, exposure_ms: float) -> None:
        self._call("setExposure", float(exposure_ms))

    @property
    def pixel_size_um(self) -> float | None:
        """The core's pixel size on the specimen for the current configuration; None where it has none."""
        return float(self._call("getPixelSizeUm")) or None

    def _image_format(self) -> _ImageFormat:
        return _ImageFormat(self._call("getImageWidth"), self._call("getImageHeight"),
                            self._call("getNumberOfComponents"), int(self._call("getImageBitDepth")),
                            self.exposure_ms)

    def _frame(self, raw, metadata: dict | None = None, image_format: _ImageFormat | None = None) -> Frame:
        width, height, components, bit_depth, exposure_ms = image_format or self._image_format()
        pixels = as_image(raw, width, height, components)
        return Frame(pixels=pixels, exposure_ms=exposure_ms,
                     pixel_type=f"RGB{8 * 4}" if components == 4 else str(pixels.dtype),
                     bit_depth=bit_depth, timestamp_s=time.time(), metadata=dict(metadata or {}))

    def snap(self, timeout_s: float = 5.0) -> Frame:
        exposure_ms = self.exposure_ms
        try:
            self._call("snapImage", timeout_s=frame_wait_s(timeout_s, exposure_ms))
        except DeviceTimeoutError:
            raise DeviceTimeoutError(self.name, no_frame_within(timeout_s, exposure_ms, "snapImage did not "
                                                                                        "return")) from None
        return self._frame(self._call("getImage"))

    def sequence(self, n_frames: int, timeout_s: float = 5.0) -> Generator[Frame, None, None]:
        """Hardware sequence acquisition, frames popped from the core's circular buffer as they come.

        A frame not delivered within its exposure and ``timeout_s`` more (``frame_wait_s``) after the
        previous one is a DeviceTimeoutError; a
        sequence the camera ends early is a DeviceErrorReply saying how many frames came, and what the
        camera said where its error ended the sequence.
        """
        # A Python camera's error ends UniMMCore's acquisition thread, not a call here: kept, it says why the
        # sequence ended (and it is handed on: a session records it too).
        with ThreadErrors(device=self.label, hand_on=True) as thread_errors:
            yield from self._sequence_frames(n_frames, timeout_s, thread_errors)

    def _sequence_frames(self, n_frames: int, timeout_s: float, thread_errors: ThreadErrors
                         ) -> Generator[Frame, None, None]:
        with_metadata = hasattr(self._core, "popNextImageAndMD")  # pymmcore-plus; pycromanager's core has not
        # Asked once: the core does not change them while a sequence runs, and each call is a thread hop.
        image_format = self._image_format()
        # A camera whose sequence ends by itself (its last frame taken) says it is no longer running before its
        # own thread has finished (Micro-Manager's demo camera tells the core from that thread as it exits), and
        # stopSequenceAcquisition then returns without waiting for it: a core unloaded or freed in between
        # (a test's teardown, a rig closed) crashed the process. The threads that came with the first frame are
        # the camera's: the sequence is over once they are gone.
        threads_before = _native_threads()
        camera_threads: frozenset[int] = frozenset()
        self._call("startSequenceAcquisition", n_frames, 0.0, True)
        try:
            # A frame comes every exposure at best: polling faster only takes CPU from the render and fusion.
            poll_s = min(0.002, max(0.0005, image_format.exposure_ms / 1000 / 8))
            wait_s = frame_wait_s(timeout_s, image_format.exposure_ms)
            for index in range(n_frames):
                deadline = time.monotonic() + wait_s
                while self._call("getRemainingImageCount") == 0:
                    if not self._call("isSequenceRunning") and self._call("getRemainingImageCount") == 0:
                        raise DeviceErrorReply(self.name, f"the camera ended the sequence after {index} of "
                                                          f"{n_frames} frames: the rest were lost",
                                           thread_errors.last_said_by_device())
                    if time.monotonic() > deadline:
                        raise DeviceTimeoutError(self.name, f"frame {index} of {n_frames}: "
                                                            f"{no_frame_within(timeout_s, image_format.exposure_ms)}")
                    time.sleep(poll_s)
                if index == 0:
                    camera_threads = _native_threads() - threads_before
                if with_metadata:
                    raw, metadata = self._call("popNextImageAndMD")
                    metadata = {key: metadata[key] for key in metadata.keys()}  # noqa: SIM118 -- pymmcore's Metadata is not iterable
                else:
                    raw, metadata = self._call("popNextImage"), {}
                yield self._frame(raw, {**metadata, "sequence_index": index}, image_format)
        finally:
            self._call("stopSequenceAcquisition")
            _wait_until_ended(camera_threads, SEQUENCE_THREAD_EXIT_S)

    def can_run_sequences(self) -> bool:
        """Micro-Manager cameras run sequence acquisitions (the core emulates one where the adapter has none)."""
        return True

    def close(self) -> None:
        self._call.close()


class MicroManagerFocusDrive(FocusDrive):
    """The core's focus stage (or ``label``), in micrometres."""

    def __init__(self, core, label: str | None = None, limits: FocusLimits = FocusLimits(-10000, 10000, "um"),
                 name: str | None = None):
        label = label or core.getFocusDevice()
        if not label:
            raise DeviceNotFoundError(name or "Micro-Manager focus drive", "the configuration has no focus stage")
        super().__init__(name or device_name("stage", label), limits)
        self.label = label
        self._call = _CoreCaller(core, self.name)
        _require_loaded(self._call, label, "focus.label", self.name, STAGE_DEVICE)

    def move_to_um(self, z_um: float) -> None:
        self.move_to(z_um)

    def _do_move_to(self, z_um: float) -> None:
        self._call("setPosition", self.label, z_um)

    def _do_read_position(self) -> float:
        return float(self._call("getPosition", self.label))

    def _do_is_busy(self) -> bool:
        return bool(self._call("deviceBusy", self.label))

    # -- hardware sequencing: the stage steps through loaded positions on each trigger --
    def sequence_max_length(self) -> int:
        """How many positions the stage takes in one sequence; 0 when it cannot sequence."""
        if not self._call("isStageSequenceable", self.label):
            return 0
        return int(self._call("getStageSequenceMaxLength", self.label))

    def load_sequence(self, positions_um: list[float]) -> None:
        """Load ``positions_um`` (each within the limits) into the stage; start_sequence arms it."""
        self.check_reachable(positions_um, "the sequence")
        self._call("loadStageSequence", self.label, [float(z) for z in positions_um])

    def start_sequence(self) -> None:
        self._call("startStageSequence", self.label)

    def stop_sequence(self) -> None:
        self._call("stopStageSequence", self.label)

    def close(self) -> None:
        self._call.close()

