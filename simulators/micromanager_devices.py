"""Python devices for pymmcore-plus's UniMMCore: a Z stage that takes time to move, and a camera
that renders the virtual specimen at that stage's position (with faults on demand)."""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from pymmcore_plus.experimental.unicore import CameraDevice, StageDevice

from simulators.faults import Faults
from simulators.optics import CameraNoise, DefocusRenderer


class SimulatedZStage(StageDevice):
    """A focus stage in micrometres: busy for |distance| / speed + settle after each move."""

    def __init__(self, speed_um_per_s: float = 2000.0, settle_s: float = 0.005):
        super().__init__()
        self.faults = Faults()  # silent: the stage never reports that it stopped; error_reply: moves fail
        self.speed_um_per_s = speed_um_per_s
        self.settle_s = settle_s
        self._target_um = 0.0
        self._origin_um = 0.0
        self._done_at = 0.0

    def set_position_um(self, val: float) -> None:
        if self.faults.error_reply is not None:
            code = self.faults.error_reply
            self.faults.spend_one()
            raise RuntimeError(f"stage error {code}")
        distance = abs(val + self._origin_um - self._target_um)
        self._target_um = val + self._origin_um
        self._done_at = time.monotonic() + distance / self.speed_um_per_s + self.settle_s

    def get_position_um(self) -> float:
        return self._target_um - self._origin_um

    def focus_um(self) -> float:
        """Where the focal plane is on the specimen (absolute, independent of the origin)."""
        return self._target_um

    def busy(self) -> bool:
        return self.faults.silent or time.monotonic() < self._done_at

    def home(self) -> None:
        self.set_position_um(-self._origin_um)

    def stop(self) -> None:
        self._done_at = time.monotonic()

    def set_origin(self) -> None:
        self._origin_um = self._target_um


class SpecimenCamera(CameraDevice):
    """Renders the specimen at ``focus_um()`` with camera noise; honours ``faults``.

    faults.delay_s makes frames late; faults.drop_frames loses that many frames (snap raises,
    as a camera whose frame never arrives makes MMCore do); faults.error_reply raises too.
    """

    def __init__(self, renderer: DefocusRenderer, focus_um: Callable[[], float],
                 camera: CameraNoise = CameraNoise(), seed: int = 0):
        super().__init__()
        self.renderer = renderer
        self.focus_um = focus_um
        self.camera_noise = camera
        self.faults = Faults()
        self._exposure_ms = 10.0
        self._rng = np.random.default_rng(seed)

    def get_exposure(self) -> float:
        return self._exposure_ms

    def set_exposure(self, exposure: float) -> None:
        self._exposure_ms = float(exposure)

    def shape(self) -> tuple[int, int] | tuple[int, int, int]:
        shape = self.renderer.specimen.texture.shape
        return (shape[0], shape[1]) if len(shape) == 2 else (shape[0], shape[1], shape[2])

    def dtype(self):
        return self.camera_noise.dtype

    def start_sequence(self, n, get_buffer):
        count = 0
        while n is None or count < n:
            if self.faults.error_reply is not None:
                code = self.faults.error_reply
                self.faults.spend_one()
                raise RuntimeError(f"camera error {code}")
            if self.faults.drop_frames > 0:
                self.faults.drop_frames -= 1
                raise RuntimeError("frame lost: the camera delivered no image")
            time.sleep(self._exposure_ms / 1000 + self.faults.delay_s)
            image = get_buffer(self.shape(), self.dtype())
            image[:] = self.camera_noise.expose(self.renderer.render(self.focus_um()), self._rng)
            count += 1
            yield {"focus_um": self.focus_um()}
