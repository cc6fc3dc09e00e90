"""A camera and a focus stage made of the optics simulator alone: no ports, no adapters.

The camera renders the virtual specimen where the optics put the focus (a stage's z, or a
tunable lens's focal power, with its focus breathing) and adds camera noise. Its exposure collects light as a real
camera's does: twice as long, twice the signal (and the shot noise of twice the electrons), saturating at its bit depth.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator

import numpy as np

from devices.camera import Frame, frame_wait_s, no_frame_within
from devices.errors import DeviceDisconnectedError, DeviceErrorReply, DeviceProtocolError, DeviceTimeoutError
from devices.focus_drive import FocusDrive, FocusLimits
from simulators.faults import Faults
from simulators.optics import CameraNoise, DefocusRenderer, magnify

# () -> (focus on the specimen in um, magnification)
OpticalState = Callable[[], tuple[float, float]]
# The exposure at which the brightest part of the specimen (a radiance of 1) just fills the well: the shipped
# profiles' exposure, whose images (and ground-truth scores) are those of the camera before it modelled exposure.
FULL_SCALE_EXPOSURE_MS = 10.0


def _answer_wrongly_if_asked(faults: Faults, device: str, kind: str) -> None:
    """What a driver raises when the device answers garbage or an error code, as ``faults`` ask."""
    if faults.garbage:
        faults.spend_one()
        raise DeviceProtocolError(device, "the answer was garbled", reply=os.urandom(8))
    if faults.error_reply is not None:
        code = faults.error_reply
        faults.spend_one()
        raise DeviceErrorReply(device, f"{kind} error {code}")


class SimulatedCamera:
    """Implements devices.camera.Camera by rendering the specimen; exposure is real waiting time, and the light
    collected in it (``full_scale_exposure_ms``: the exposure at which a radiance of 1 fills the well)."""

    def __init__(self, renderer: DefocusRenderer, optical_state: OpticalState, noise: CameraNoise = CameraNoise(),
                 exposure_ms: float = 10.0, name: str = "simulated camera", seed: int = 0,
                 full_scale_exposure_ms: float = FULL_SCALE_EXPOSURE_MS):
        self.name = name
        self.renderer = renderer
        self.optical_state = optical_state
        self.full_scale_exposure_ms = full_scale_exposure_ms
        self._sensor = noise   # the sensor as at the full-scale exposure; ``noise``: as at the present one
        self._exposure_ms = exposure_ms
        self.noise = self._exposed_for(exposure_ms)
        self.faults = Faults()
        self._rng = np.random.default_rng(seed)
        # Load the compiled kernels while the rig opens (a real camera is ready once opened), not
        # in the first exposure; a throwaway generator, so that the frames stay those of ``seed``.
        renderer.exposed(noise, 0.0, np.random.default_rng(0))

    @property
    def exposure_ms(self) -> float:
        return self._exposure_ms

    def set_exposure_ms(self, exposure_ms: float) -> None:
        self._exposure_ms = float(exposure_ms)
        self.noise = self._exposed_for(self._exposure_ms)

    def _exposed_for(self, exposure_ms: float) -> CameraNoise:
        return dataclasses.replace(self._sensor, exposure=exposure_ms / self.full_scale_exposure_ms)

    def truth(self, magnification: float = 1.0) -> np.ndarray:
        """The all-in-focus frame without noise, in this camera's dtype: what a session scores against.

        ``magnification``: as a breathing lens at that magnification would frame it.
        """
        texture = self.renderer.specimen.texture
        return self.noise.ideal(texture if magnification == 1.0 else magnify(texture, magnification))

    def snap(self, timeout_s: float = 5.0) -> Frame:
        started = time.monotonic()
        frame = self._expose(timeout_s)
        if frame is None:  # lost on its way: the driver waits for it until its deadline
            time.sleep(max(0.0, started + frame_wait_s(timeout_s, self._exposure_ms) - time.monotonic()))
            raise DeviceTimeoutError(self.name, no_frame_within(timeout_s, self._exposure_ms, "frame lost"))
        return frame

    def sequence(self, n_frames: int, timeout_s: float = 5.0) -> Iterator[Frame]:
        """Frames back to back. A dropped frame is missing and the stream goes on, as a free-running
        camera's does (a frame lost in transport is not an error the camera stops for)."""
        for _ in range(n_frames):
            frame = self._expose(timeout_s)
            if frame is None:
                time.sleep(self._exposure_ms / 1000)  # its exposure took its time all the same
                continue
            yield frame

    def _expose(self, timeout_s: float) -> Frame | None:
        """One exposure as ``faults`` let it happen; None when its frame is lost (faults.drop_frames)."""
        started, exposure_start_s = time.monotonic(), time.time()
        focus_um, magnification = self.optical_state()  # the whole exposure sees the optics as they are now
        faults = self.faults
        faults.frame_starting()
        if faults.gone():
            raise DeviceDisconnectedError(self.name, "the camera is gone (simulated: its cable was pulled)")
        # As every driver waits (devices.camera.frame_wait_s): the exposure, then timeout_s more.
        deadline_s = frame_wait_s(timeout_s, self._exposure_ms)
        if faults.silent:
            faults.spend_one()
            time.sleep(deadline_s)
            raise DeviceTimeoutError(self.name, no_frame_within(timeout_s, self._exposure_ms,
                                                                "the camera stopped answering"))
        _answer_wrongly_if_asked(faults, self.name, "camera")
        if faults.drop_frame():
            return None
        wait_s = self._exposure_ms / 1000 + faults.delay_s
        if faults.delay_s:
            faults.spend_one()
        if wait_s > deadline_s:
            time.sleep(deadline_s)
            raise DeviceTimeoutError(self.name, no_frame_within(timeout_s, self._exposure_ms))
        pixels = self.renderer.exposed(self.noise, focus_um, self._rng, magnification)
        # Exposure is the device's own time: wait out what rendering did not use.
        time.sleep(max(0.0, started + wait_s - time.monotonic()))
        bits = self.noise.bit_depth or 32
        return Frame(pixels=pixels, exposure_ms=self._exposure_ms, pixel_type=str(pixels.dtype), bit_depth=bits,
                     timestamp_s=time.time(), metadata={"focus_um": focus_um, "magnification": magnification},
                     exposure_start_s=exposure_start_s)

    def close(self) -> None:
        pass


class SimulatedStage(FocusDrive):
    """A focus stage in micrometres that takes |distance| / speed to travel; its position is the optics' focus."""

    travel_speed: float   # um per s: it always knows its own

    def __init__(self, speed_um_per_s: float = 2000.0, limits: FocusLimits = FocusLimits(-10000, 10000, "um"),
                 name: str = "simulated stage"):
        super().__init__(name, limits)
        self.travel_speed = speed_um_per_s
        self._from_um = self._to_um = 0.0
        self._started = self._arrives = 0.0
        self._stuck = False
        self.faults = Faults()

    def physical_um(self) -> float:
        """Where the stage really is now (between the two ends of a move while travelling)."""
        now = time.monotonic()
        if now >= self._arrives:
            return self._to_um
        fraction = (now - self._started) / (self._arrives - self._started)
        return self._from_um + (self._to_um - self._from_um) * fraction

    def _do_move_to(self, z_um: float) -> None:
        faults = self.faults
        self._check_connected()
        _answer_wrongly_if_asked(faults, self.name, "stage")
        self._stuck = faults.silent  # never reports that this move ended
        extra_s = faults.delay_s
        if faults.silent or faults.delay_s:
            faults.spend_one()
        self._from_um, self._to_um = self.physical_um(), z_um
        self._started = time.monotonic()
        self._arrives = self._started + abs(z_um - self._from_um) / self.travel_speed + extra_s

    def _wait_for_arrival(self, deadline: float) -> None:
        """A move that will end is waited out to its end, not to the next poll after it (a 3 um step takes
        1.5 ms; polling made it 5): as a blocking move command would. Within the drive's one deadline: this wait
        and the polling after it took up to twice settle_timeout_s, so that a long move passed by luck."""
        if not (self._stuck or self.faults.disconnected):
            time.sleep(max(0.0, min(self._arrives, deadline) - time.monotonic()))

    def _do_read_position(self) -> float:
        self._check_connected()
        return self.physical_um()

    def _do_is_busy(self) -> bool:
        self._check_connected()
        return self._stuck or time.monotonic() < self._arrives

    def _check_connected(self) -> None:
        if self.faults.gone():
            raise DeviceDisconnectedError(self.name, "the stage is gone (simulated: its cable was pulled)")
