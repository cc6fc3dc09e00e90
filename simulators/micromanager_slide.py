"""A fluorescence slide for multi-dimensional MDAs on pymmcore-plus's UniMMCore.

Python devices: an XY stage, a filter wheel whose labels are the channels, and a camera
that renders, at the Z stage's focus, the field under the XY stage in the wheel's channel.
Each field has its own surface (a height map); each channel shows its own structures
(a texture) on that surface, so all channels of a field are sharp at the same depths.
``SlideCamera.truth(field, channel)`` is the noise-free all-in-focus image to score against.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from pymmcore_plus.experimental.unicore import CameraDevice, StateDevice, XYStageDevice

from simulators.faults import Faults
from simulators.optics import CameraNoise, DefocusRenderer, Optics
from simulators.specimens import VirtualSpecimen, load_texture, make_height_map

# What each channel shows, by its place in the wheel (mono textures that scikit-image ships).
CHANNEL_TEXTURES = ("hubble_deep_field", "gravel", "text", "moon", "brick", "grass")
FIELD_PITCH_UM = 1000.0  # positions closer than this see the same field


class SimulatedXYStage(XYStageDevice):
    """An XY stage in micrometres that arrives at once."""

    def __init__(self):
        super().__init__()
        self._x_um = self._y_um = 0.0

    def set_position_um(self, x: float, y: float) -> None:
        self._x_um, self._y_um = float(x), float(y)

    def get_position_um(self) -> tuple[float, float]:
        return self._x_um, self._y_um

    def set_origin_x(self) -> None:
        self._x_um = 0.0

    def set_origin_y(self) -> None:
        self._y_um = 0.0

    def home(self) -> None:
        self._x_um = self._y_um = 0.0

    def stop(self) -> None:
        pass

    def busy(self) -> bool:
        return False


class FilterWheel(StateDevice):
    """A filter wheel whose position labels are the channel names."""

    def __init__(self, channels: list[str]):
        super().__init__(dict(enumerate(channels)))
        self._state = 0

    def get_state(self) -> int:
        return self._state

    def set_state(self, position: int) -> None:
        self._state = int(position)

    def busy(self) -> bool:
        return False


class SlideCamera(CameraDevice):
    """Renders the field under ``xy_um()`` in channel ``channel_index()`` at ``focus_um()``, with noise;
    ``faults.error_reply`` raises as a frame starts (in a sequence, in UniMMCore's acquisition thread)."""

    def __init__(self, shape: tuple[int, int], depth_um: float, focus_um: Callable[[], float],
                 xy_um: Callable[[], tuple[float, float]], channel_index: Callable[[], int],
                 optics: Optics = Optics(0.3), camera: CameraNoise = CameraNoise(), surface: str = "irregular",
                 seed: int = 0):
        super().__init__()
        self.frame_shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.depth_um = depth_um
        self.focus_um, self.xy_um, self.channel_index = focus_um, xy_um, channel_index
        self.optics, self.camera_noise, self.surface, self.seed = optics, camera, surface, seed
        self._renderers: dict[tuple[tuple[int, int], int], DefocusRenderer] = {}
        self._exposure_ms = 10.0
        self._rng = np.random.default_rng(seed)
        self.faults = Faults()

    def field_at(self, x_um: float, y_um: float) -> tuple[int, int]:
        return int(round(x_um / FIELD_PITCH_UM)), int(round(y_um / FIELD_PITCH_UM))

    def specimen(self, field: tuple[int, int], channel: int) -> VirtualSpecimen:
        """The field's surface with the channel's structures, shifted per field so that fields differ."""
        rng = np.random.default_rng([self.seed, field[0] + 1000, field[1] + 1000])
        height_um = make_height_map(self.surface, self.frame_shape, self.depth_um, rng)
        texture = load_texture(CHANNEL_TEXTURES[channel % len(CHANNEL_TEXTURES)], self.frame_shape, color=False)
        shift = ((field[0] * 97 + field[1] * 31) % self.frame_shape[0],
                 (field[1] * 89 + field[0] * 13) % self.frame_shape[1])
        return VirtualSpecimen(np.roll(texture, shift, axis=(0, 1)), height_um)

    def truth(self, field: tuple[int, int], channel: int) -> np.ndarray:
        """The all-in-focus image of ``field`` in ``channel``, without noise, in the camera's dtype."""
        return self.camera_noise.ideal(self.specimen(field, channel).texture)

    def _renderer(self, field: tuple[int, int], channel: int) -> DefocusRenderer:
        key = (field, channel)
        if key not in self._renderers:
            self._renderers[key] = DefocusRenderer(self.specimen(field, channel), self.optics)
        return self._renderers[key]

    def get_exposure(self) -> float:
        return self._exposure_ms

    def set_exposure(self, exposure: float) -> None:
        self._exposure_ms = float(exposure)

    def shape(self) -> tuple[int, int] | tuple[int, int, int]:
        return self.frame_shape

    def dtype(self):
        return self.camera_noise.dtype

    def start_sequence(self, n, get_buffer):
        count = 0
        while n is None or count < n:
            self.faults.frame_starting()
            self.faults.raise_error_reply("camera")
            started = time.monotonic()
            renderer = self._renderer(self.field_at(*self.xy_um()), self.channel_index())
            image = get_buffer(self.shape(), self.dtype())
            image[:] = self.camera_noise.expose(renderer.render(self.focus_um()), self._rng)
            time.sleep(max(0.0, started + self._exposure_ms / 1000 - time.monotonic()))
            count += 1
            yield {"focus_um": self.focus_um()}
