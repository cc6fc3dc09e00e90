"""Rig profiles: YAML files validated when loaded.

A typo or a wrong type is a ``ProfileError`` naming the file, the key path and what is
allowed, before any device is touched. Units are in the key names.
"""
from __future__ import annotations

import copy
import functools
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import useq
import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, FiniteFloat, Tag, \
    ValidationError, ValidationInfo, field_validator, model_validator

from acquisition.auto_range import step_too_fine_anywhere
from acquisition.error_locations import keys_allowed_at, read_location
from acquisition.mda_plan import MDAPlan, channel_names, check_stacks_fusion_takes, closest_key
from acquisition.paths import expanded_path, file_used_path
from acquisition.number_fields import check_no_yes_or_no
from fusion.align.defaults import default_alignment
from fusion.engine import MAX_SLICES, FusionSettings
from fusion.focus_measures import MEASURES
from fusion.outputs import PIXEL_SIZE_RANGE_UM


# The simulated camera's specimen textures (scikit-image samples that simulators.specimens loads):
# named here so that a typo is a profile error; tests/test_rig_registry.py keeps the two lists equal.
SPECIMEN_TEXTURES = ("astronaut", "coffee", "chelsea", "gravel", "brick", "grass", "camera", "moon", "text",
                     "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "cell", "coins")


class ProfileError(ValueError):
    """Raised when a profile cannot be read or does not validate; names file and key."""


def _at_most(limit: float, unit: str, said: str) -> AfterValidator:
    """Refuses a time past ``limit`` under its key: finite is not enough (settle_ms: 1e12 waited for ever)."""
    def check(value: float | None) -> float | None:
        if value is not None and value > limit:
            raise ValueError(f"at most {limit:g} {unit} ({said}), got {value:g} {unit}: a session would seem to hang")
        return value
    return AfterValidator(check)


EXPANDED_PATH = AfterValidator(expanded_path)


MINUTE_MS = _at_most(60_000, "ms", "a minute")        # a settle wait: stages take ms, lenses tens of ms
TEN_MINUTES_MS = _at_most(600_000, "ms", "10 minutes")   # an exposure
HOUR_S = _at_most(3600, "s", "an hour")               # timeouts, and how long to wait for frames that do not come


def _a(word: str) -> str:
    """``word`` with its indefinite article: "an optotune", "a simulated"."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _no_yes_or_no_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
    """pydantic takes ``exposure_ms: true`` for 1 ms; a profile says that a number was expected."""
    field = cls.model_fields.get(info.field_name or "")
    if field is not None:
        check_no_yes_or_no(value, field.annotation)
    return value


def _empty_section(cls, value: Any, info: ValidationInfo) -> Any:
    """A section (micromanager:, fusion:, camera.noise:, ...) whose keys are all commented out is YAML's null: one
    with defaults is taken as empty, as if left out (it said "Input should be a valid dictionary or instance of
    MicroManagerSettings"); one that needs keys says so."""
    field = cls.model_fields.get(info.field_name or "")
    if value is not None or field is None or not isinstance(field.annotation, type) \
            or not issubclass(field.annotation, BaseModel):
        return value
    if not field.is_required():
        return {}
    raise ValueError(f"the section is empty (are all its keys commented out?): give its keys, "
                     f"{', '.join(name for name, f in field.annotation.model_fields.items() if f.is_required())} "
                     "at least")


class _Strict(BaseModel):
    # (No infinity or NaN: ".inf" for a timeout waited for ever, past every stop signal.)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    _numbers_are_numbers = field_validator("*", mode="before")(_no_yes_or_no_for_a_number)
    _empty_sections = field_validator("*", mode="before")(_empty_section)


# A simulated frame's side. The simulator builds a ladder of 13 blurred copies of the specimen, about
# 300 bytes a colour pixel at its peak (measured): 5 GB at 4096 x 4096, already more than many bench PCs
# spare beside fusion, and as wide as common microscope sensors (sCMOS: 2048 to 4096 px). 100000 px a side
# asked numpy for 112 GiB and crashed with a traceback.
MAX_SPECIMEN_SIDE_PX = 4096


def _side_at_most(side_px: int) -> int:
    if side_px > MAX_SPECIMEN_SIDE_PX:
        raise ValueError(f"at most {MAX_SPECIMEN_SIDE_PX} px, got {side_px}: the simulator needs about 300 bytes a "
                         f"pixel (5 GB at {MAX_SPECIMEN_SIDE_PX} x {MAX_SPECIMEN_SIDE_PX}); rehearse a larger "
                         "sensor on a crop of it")
    return side_px


def _a_pixel_size_on_a_specimen(size_um: float | None) -> float | None:
    """Within ``PIXEL_SIZE_RANGE_UM``: 1e-30 ended the session at its first slice (no TIFF resolution holds it),
    1e30 wrote outputs whose resolution readers divide by zero."""
    low, high = PIXEL_SIZE_RANGE_UM
    if size_um is not None and not low <= size_um <= high:
        raise ValueError(f"a pixel on the specimen is {low:g} to {high:g} µm (0.1 nm to 1 cm), got {size_um:g} µm: "
                         "is it in µm?")
    return size_um


class SpecimenSettings(_Strict):
    """The virtual specimen a simulated camera looks at."""

    texture: str = "astronaut"
    surface: Literal["plane", "dome", "steps", "irregular"] = "dome"
    depth_um: float = Field(40.0, ge=0)
    height_px: Annotated[int, AfterValidator(_side_at_most)] = Field(768, ge=16)
    width_px: Annotated[int, AfterValidator(_side_at_most)] = Field(1024, ge=16)
    color: bool = True
    seed: int = Field(0, ge=0)   # (numpy's generator takes none below 0: -1 ended the session unnamed)

    @field_validator("texture")
    @classmethod
    def _known_texture(cls, value: str) -> str:
        if value not in SPECIMEN_TEXTURES:
            raise ValueError(f"unknown texture {value!r}; choose one of {', '.join(SPECIMEN_TEXTURES)}")
        return value


class SimulatedOptics(_Strict):
    blur_px_per_um: float = Field(0.3, gt=0)
    um_per_dpt: float = 10.0          # a tunable lens: focus shift per diopter
    breathing_per_dpt: float = 0.0    # a tunable lens: magnification change per diopter


class CameraNoiseSettings(_Strict):
    full_well_e: float = Field(20000.0, ge=0)
    read_noise_e: float = Field(5.0, ge=0)
    bit_depth: Literal[0, 8, 10, 12, 16] = 8
    # The simulated camera's light: the exposure at which the specimen's brightest part just fills the well (longer
    # ones saturate it, shorter ones are dimmer and noisier).
    full_scale_exposure_ms: float = Field(10.0, gt=0, allow_inf_nan=False)


@dataclass(frozen=True)
class FollowedBy:
    """The rigs that follow a profile key, and what a profile whose rig does not is told (``only``): those whose
    camera.driver is one of ``drivers``, whose focus.driver is one of ``focus_drivers``, whose simulated camera
    (``Profile.camera_simulator``) is one of ``simulators``, or whose Micro-Manager core
    (``Profile.micromanager_core``) is one of ``cores``."""

    only: str
    drivers: tuple[str, ...] = ()
    focus_drivers: tuple[str, ...] = ()
    simulators: tuple[str, ...] = ()
    cores: tuple[str, ...] = ()


# The camera's sections that only this project's simulated cameras follow, and which cameras those are
# (``Profile.camera_simulator``): "simulated" (the optics simulator's), "micromanager" (simulated_devices' camera in a
# single-stack session) and "slide" (the slide simulator's, in an mda: session).
SIMULATED_CAMERA_SECTIONS = ("specimen", "optics", "noise")
# The keys one driver, or one kind of rig, follows. A profile that gives one of these keys (or of those sections)
# to a rig that does not follow it is refused, not left to ignore it: a GenICam profile's noise: {bit_depth: 12} ran
# at the camera's own depth, a Micro-Manager camera's pixel_format: Mono12 at its own, their users believing them
# set. A key at its default is taken (a profile dumped whole and read again holds it).
DRIVER_CAMERA_KEYS = ("cti", "serial_number", "model", "index", "pixel_format", "gain", "label")
DRIVER_FOCUS_KEYS = ("port", "baudrate", "label")
SERIAL_FOCUS_DRIVERS = ("asi", "optotune")
FOLLOWED_BY_SIMULATED_CAMERAS = FollowedBy("for simulated cameras only (camera.driver: simulated, or micromanager "
                                           "with micromanager.simulated_devices: true)",
                                           simulators=("simulated", "micromanager", "slide"))
_BEHIND_THE_LENS = FollowedBy("only the optics simulator's camera (driver: simulated) looks through the simulated "
                              "tunable lens", simulators=("simulated",))
_NOT_ON_THE_SLIDE = FollowedBy("the slide simulator (an mda: plan) shows a grey texture of its own in each channel",
                               simulators=("simulated", "micromanager"))
_GENICAM = FollowedBy("for GenICam cameras only (camera.driver: genicam)", drivers=("genicam",))
_MICRO_MANAGER_RIGS = "for Micro-Manager rigs only (camera.driver or focus.driver: micromanager or pycromanager)"
FOLLOWED_BY_MICRO_MANAGER_RIGS = FollowedBy(_MICRO_MANAGER_RIGS,
                                            cores=("micromanager", "simulated devices", "slide", "pycromanager"))
_SERIAL_DRIVES = FollowedBy("for serial focus drives only (focus.driver: asi or optotune): the port they are on and "
                            "its speed", focus_drivers=SERIAL_FOCUS_DRIVERS)
# (A label other than the slide simulator's own, SimCamera or SimZ, was refused only as the session opened.)
_NOT_ON_THE_SLIDES_CORE = FollowedBy("the slide simulator (an mda: plan with simulated_devices) has one camera and "
                                     "one focus stage, its own", cores=("micromanager", "simulated devices",
                                                                        "pycromanager"))
PROFILE_KEYS_FOLLOWED_BY: dict[str, FollowedBy | tuple[FollowedBy, ...]] = {
    "camera.noise.full_scale_exposure_ms": FollowedBy("only the optics simulator's camera (driver: simulated) "
                                                      "collects light in proportion to its exposure",
                                                      simulators=("simulated",)),
    "camera.optics.um_per_dpt": _BEHIND_THE_LENS,
    "camera.optics.breathing_per_dpt": _BEHIND_THE_LENS,
    "camera.specimen.texture": _NOT_ON_THE_SLIDE,
    "camera.specimen.color": _NOT_ON_THE_SLIDE,
    **{f"camera.{key}": _GENICAM for key in DRIVER_CAMERA_KEYS if key != "label"},
    "camera.label": (FollowedBy("for Micro-Manager cameras only (camera.driver: micromanager or pycromanager): the "
                                "camera's device label in the configuration", drivers=("micromanager", "pycromanager")),
                     _NOT_ON_THE_SLIDES_CORE),
    "focus.port": _SERIAL_DRIVES,
    "focus.baudrate": _SERIAL_DRIVES,
    "focus.label": (FollowedBy("for Micro-Manager stages only (focus.driver: micromanager or pycromanager): the "
                               "stage's device label in the configuration",
                               focus_drivers=("micromanager", "pycromanager")), _NOT_ON_THE_SLIDES_CORE),
    "micromanager.config": FollowedBy("the slide simulator (an mda: plan with simulated_devices) loads no "
                                      "configuration", cores=("micromanager", "simulated devices", "pycromanager")),
    "micromanager.properties": FollowedBy("set on a micromanager core only (camera.driver or focus.driver: "
                                          "micromanager); a pycromanager core's are set in Micro-Manager",
                                          cores=("micromanager", "simulated devices", "slide")),
    "micromanager.simulated_devices": FollowedBy("the simulators' devices are loaded into a micromanager core only "
                                                 "(camera.driver or focus.driver: micromanager), not into a running "
                                                 "Micro-Manager", cores=("simulated devices", "slide")),
    "micromanager.simulated_sequencing": FollowedBy("for the simulated devices' stage in a single-stack session only "
                                                    "(micromanager.simulated_devices: true, and plan:)",
                                                    cores=("simulated devices",)),
}


def _rules_of(key: str) -> tuple[FollowedBy, ...]:
    """Who follows ``key``: each of its rules in turn (a key with several is followed where all of them hold)."""
    section = key.split(".")[1]
    rules = PROFILE_KEYS_FOLLOWED_BY.get(key, FOLLOWED_BY_SIMULATED_CAMERAS
                                         if section in SIMULATED_CAMERA_SECTIONS else ())
    return rules if isinstance(rules, tuple) else (rules,)


def _keys_given(profile: Profile) -> list[str]:
    """The keys that only some rigs follow (``PROFILE_KEYS_FOLLOWED_BY``, ``SIMULATED_CAMERA_SECTIONS``) that
    ``profile`` sets to other than their defaults: camera.noise.bit_depth, camera.cti, focus.port,
    micromanager.config, ..."""
    sections: list[tuple[str, BaseModel, list[str] | None]] = [
        *((f"camera.{name}", getattr(profile.camera, name), None) for name in SIMULATED_CAMERA_SECTIONS),
        ("camera", profile.camera, list(DRIVER_CAMERA_KEYS)), ("focus", profile.focus, list(DRIVER_FOCUS_KEYS)),
        ("micromanager", profile.micromanager, None)]
    given = []
    for prefix, settings, names in sections:
        fields = type(settings).model_fields
        given += [f"{prefix}.{name}" for name in names or fields if getattr(settings, name) != fields[name].default]
    return given


class CameraSettings(_Strict):
    driver: Literal["simulated", "micromanager", "pycromanager", "genicam"]
    exposure_ms: Annotated[float | None, TEN_MINUTES_MS] = Field(None, gt=0, allow_inf_nan=False)
    timeout_s: Annotated[float, HOUR_S] = Field(5.0, gt=0)   # a frame later than this is lost (and retried)
    # Waiting for frames that do not come (retries and lost frames in a row, together) ends the
    # session after this long: stepped, hardware-sequenced or streamed (acquisition.acquirer.FrameWait).
    give_up_after_s: Annotated[float, HOUR_S] = Field(20.0, gt=0)
    # A lens stream (plan.stream) with a camera whose frames carry no exposure start (GenICam, Micro-Manager):
    # a frame's exposure is counted back from its arrival by this much readout and transfer time as well;
    # default acquisition.lens_stream.ARRIVAL_LATENCY_S (50 ms). Full frames over GigE may need more.
    arrival_latency_ms: Annotated[float | None, MINUTE_MS] = Field(None, ge=0, allow_inf_nan=False)
    # On the specimen; default: what the camera or core says.
    pixel_size_um: Annotated[float | None, AfterValidator(_a_pixel_size_on_a_specimen)] = Field(None, gt=0)
    # genicam
    cti: Annotated[str | None, EXPANDED_PATH] = None  # path to the GenTL producer; "bundled" = the wheel's viky.cti
    serial_number: str | None = None
    model: str | None = None
    index: int | None = None
    pixel_format: str | None = None
    gain: float | None = None
    # micromanager / pycromanager
    label: str | None = None
    # simulated
    specimen: SpecimenSettings = SpecimenSettings()
    optics: SimulatedOptics = SimulatedOptics()
    noise: CameraNoiseSettings = CameraNoiseSettings()

    @model_validator(mode="after")
    def _needs_producer(self):
        if self.driver == "genicam" and not self.cti:
            raise ValueError("a genicam camera needs cti: the path of its GenTL producer (.cti), or 'bundled'")
        return self


# Rates serial ports and these devices run at (the MS-2000 offers 9600 to 115200, 28800 among them):
# a typo (96000) is a profile error, not a line of noise.
SERIAL_BAUDRATES = (1200, 2400, 4800, 9600, 14400, 19200, 28800, 38400, 57600, 115200, 230400, 460800, 921600)


class FocusSettings(_Strict):
    driver: Literal["simulated", "micromanager", "pycromanager", "asi", "optotune"]
    unit: Literal["um", "dpt", "mA"] = "um"
    port: str | None = None           # serial port name or URL; "simulated" starts the simulator
    baudrate: int | None = None       # serial drives' port speed; default the device's: asi 9600, optotune 115200
    label: str | None = None          # Micro-Manager stage label
    settle_ms: Annotated[float, MINUTE_MS] = Field(0.0, ge=0)  # extra wait after the device reports it has stopped
    settle_timeout_s: Annotated[float, HOUR_S] = Field(5.0, gt=0)
    limits: tuple[float, float] | None = None
    # A stage's travel speed: the simulated stages move at it, and the wait for a move (asi, micromanager, simulated)
    # allows its distance at this speed beyond settle_timeout_s, which is for settling, not for travel.
    speed_um_per_s: float = Field(2000.0, ge=1)   # (slower, a 10 µm step would take more than 10 s)

    @field_validator("baudrate")
    @classmethod
    def _serial_rate(cls, baudrate: int | None) -> int | None:
        # (Only serial drives follow it: Profile._keys_only_where_followed, with focus.port.)
        if baudrate is not None and baudrate not in SERIAL_BAUDRATES:
            raise ValueError(f"{baudrate} is not a serial baud rate; use one of "
                             f"{', '.join(str(rate) for rate in SERIAL_BAUDRATES)}")
        return baudrate

    @model_validator(mode="after")
    def _unit_fits_driver(self):
        allowed = {"simulated": ("um",), "micromanager": ("um",), "pycromanager": ("um",), "asi": ("um",),
                   "optotune": ("dpt", "mA")}[self.driver]
        if self.unit not in allowed:
            raise ValueError(f"{_a(self.driver)} focus drive moves in {' or '.join(allowed)}, not {self.unit}")
        if self.driver in ("asi", "optotune") and not self.port:
            raise ValueError(f"the {self.driver} focus drive needs port: a serial port name, URL, or 'simulated'")
        if self.limits is not None and not self.limits[0] < self.limits[1]:
            raise ValueError(f"limits: the lower limit {self.limits[0]:g} must be below the upper {self.limits[1]:g}")
        return self


def _two_positions_at_least(span: float, step: float, names: str) -> None:
    """A focus stack needs two positions; a step beyond the span would give one, a tiny one more slices than
    fusion takes (a typo's 480,001 slices would fill the disk): said before anything moves."""
    if step > abs(span):
        raise ValueError(f"the step {step:g} is larger than {names} ({abs(span):g}): the plan would visit one "
                         "position; make the step smaller")
    _fusion_takes(abs(span) / step + 1)


def _fusion_takes(n_positions: float) -> None:
    if n_positions > MAX_SLICES:
        raise ValueError(f"the plan visits {n_positions:,.0f} positions; a stack is fused from {MAX_SLICES:,} "
                         "slices at most: make the step larger")


class ZRangeAround(useq.ZRangeAround):
    """useq-schema's own z-plan: ``range`` centred on where the drive is, every ``step`` (µm)."""

    # useq ignores unknown keys, and takes "step: true" for 1 and "top: .inf": a profile names them.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    _numbers_are_numbers = field_validator("*", mode="before")(_no_yes_or_no_for_a_number)
    range: float = Field(gt=0)   # a negative one gave a session of no slices
    step: float = Field(gt=0)

    @model_validator(mode="after")
    def _several_positions(self):
        _two_positions_at_least(self.range, self.step, "the range")
        return self


class ZTopBottom(useq.ZTopBottom):
    """useq-schema's own z-plan: from ``bottom`` to ``top`` (µm), every ``step``; ``go_up: false`` goes down."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    _numbers_are_numbers = field_validator("*", mode="before")(_no_yes_or_no_for_a_number)
    step: float = Field(gt=0)

    @model_validator(mode="after")
    def _several_positions(self):
        if self.top < self.bottom:
            raise ValueError(f"top ({self.top:g}) is below bottom ({self.bottom:g}): swap them; go_up: false "
                             "sweeps from top to bottom")
        _two_positions_at_least(self.top - self.bottom, self.step, "the distance from bottom to top")
        return self


class ZAbsolutePositions(useq.ZAbsolutePositions):
    """useq-schema's own z-plan: these positions (µm), in this order."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    _numbers_are_numbers = field_validator("*", mode="before")(_no_yes_or_no_for_a_number)
    absolute: list[FiniteFloat] = Field(min_length=2)

    @model_validator(mode="after")
    def _distinct(self):
        repeated = sorted({p for p in self.absolute if self.absolute.count(p) > 1})
        if repeated:
            raise ValueError(f"the position {repeated[0]:g} comes more than once: a focus stack takes each "
                             "focus once")
        _fusion_takes(len(self.absolute))
        return self


class Sweep(_Strict):
    """A tunable-lens sweep in the focus drive's unit (dpt or mA)."""

    start: float
    stop: float
    step: float = Field(gt=0)

    @model_validator(mode="after")
    def _several_positions(self):
        _two_positions_at_least(self.stop - self.start, self.step, "the distance from start to stop")
        return self


def _z_plan_kind(value: Any) -> str:
    """Which z-plan a mapping is, by its keys (so errors speak of that plan only)."""
    keys = set(value) if isinstance(value, dict) else set(type(value).model_fields)
    if "absolute" in keys:
        return "ZAbsolutePositions"
    if keys & {"top", "bottom"}:
        return "ZTopBottom"
    return "ZRangeAround"


ZPlan = Annotated[Annotated[ZRangeAround, Tag("ZRangeAround")] | Annotated[ZTopBottom, Tag("ZTopBottom")]
                  | Annotated[ZAbsolutePositions, Tag("ZAbsolutePositions")], Discriminator(_z_plan_kind)]


class AutoRange(_Strict):
    """Find the z-range in a coarse pre-sweep of binned frames, then stack it finely (µm, absolute)."""

    search_um: tuple[FiniteFloat, FiniteFloat]   # where the pre-sweep looks, bottom and top
    step_um: float = Field(gt=0, allow_inf_nan=False)   # the fine stack's step
    coarse_step_um: float | None = Field(None, gt=0, allow_inf_nan=False)   # the pre-sweep's; default 2 fine steps
    binning: int = Field(4, ge=1, le=32)    # the pre-sweep's frames are averaged over binning x binning blocks
    margin_steps: int = Field(1, ge=0, le=10)   # fine steps added below and above the range found
    stop_early: bool = True                 # end the pre-sweep once the focus curve has risen and fallen back

    @model_validator(mode="after")
    def _three_coarse_frames(self):
        bottom, top = self.search_um
        if not bottom < top:
            raise ValueError(f"search_um: the bottom {bottom:g} must be below the top {top:g}")
        if self.coarse_step > (top - bottom) / 2:
            raise ValueError(f"the coarse step {self.coarse_step:g} µm gives fewer than 3 pre-sweep frames over "
                             f"search_um ({top - bottom:g} µm); make it smaller")
        too_fine = step_too_fine_anywhere(self.search_um, self.step_um, self.margin_steps)
        if too_fine is not None:  # (a stack of 1e-4 µm steps at 1e4 µm was acquired whole, then its fusion refused)
            raise ValueError(too_fine)
        return self

    @property
    def coarse_step(self) -> float:
        return self.coarse_step_um or 2 * self.step_um


class PlanSettings(_Strict):
    z: ZPlan | None = None
    sweep: Sweep | None = None
    auto_range: AutoRange | None = None
    retries: int = Field(2, ge=0, le=10)   # per move or snap, for transient errors
    # Micro-Manager: load the z-plan into the stage and let the camera's sequence step it.
    # auto: when the stage and camera can; on: must (an error names the device that cannot); off: never.
    hardware_sequencing: Literal["auto", "on", "off"] = "auto"
    # A tunable-lens sweep with the camera free-running: each frame's focus from its time and the
    # lens's commanded steps; frames exposed while the lens settled are dropped (session.json lists them).
    stream: bool = False

    @field_validator("z", mode="before")
    @classmethod
    def _z_plan_of_keys(cls, value):
        """A z-plan is told by its keys (``_z_plan_kind``): z: [0, 2, 4] or z: "0:40:2" ended in a traceback."""
        if value is not None and not isinstance(value, dict | BaseModel):
            raise ValueError(f"a z-plan is a mapping of keys (µm): {{range, step}} around where the drive is, "
                             f"{{bottom, top, step}}, or {{absolute: [...]}}; got {value!r:.40}")
        return value

    @field_validator("hardware_sequencing", mode="before")
    @classmethod
    def _yaml_on_off(cls, value):
        """YAML 1.1 reads a bare on/off as true/false."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _one_plan(self):
        if sum(plan is not None for plan in (self.z, self.sweep, self.auto_range)) != 1:
            raise ValueError("give exactly one of z (a stage z-plan), sweep (a tunable-lens sweep) or auto_range "
                             "(a stage z-range found by a pre-sweep)")
        if self.stream and self.sweep is None:
            raise ValueError("stream: a free-running stream sweeps a tunable lens: give sweep, or stream: false")
        if self.stream and self.hardware_sequencing == "on":
            raise ValueError("stream and hardware_sequencing: on are two different modes: choose one")
        return self


class FusionProfile(_Strict):
    """The profile's ``fusion:`` section: any of fusion.engine.FusionSettings, under the command line's
    names (``method`` is the settings' ``measure``). A key left out takes the settings' default, but
    for ``align`` and ``align_model`` (see ``Profile.fusion_settings``). FusionSettings checks the
    values, so a profile, the command line and Python callers meet the same rules."""

    method: str | None = None
    composition: Literal["pyramid", "blend", "pick"] | None = None
    window_px: int | None = None          # focus measure window of blend and pick
    sharpness: float | None = None        # blend exponent
    mode_filter_px: int | None = None     # majority filter on the decision map; 0: off; left out: about min(H, W)/20
    feather_px: float | None = None       # pick: blend across seams (Gaussian sigma)
    align: Literal["off", "on", "auto"] | None = None
    align_model: Literal["similarity", "scale_shift", "affine", "lens"] | None = None
    device: str | None = None             # torch device for the "ums" measure: cuda, cpu, or auto
    # The "ums" measure's weights file (python -m fusion.deep.train --export); left out: the shipped ones.
    weights: Annotated[str | None, AfterValidator(file_used_path)] = None  # (recorded as used)
    # With an mda plan: the channel whose decision (chosen slices, depth) the other channels follow.
    decision_channel: str | None = None

    @field_validator("align", mode="before")
    @classmethod
    def _yaml_on_off(cls, value):
        """YAML 1.1 reads a bare on/off as true/false."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("method")
    @classmethod
    def _known_method(cls, method):
        if method is not None and method not in MEASURES:
            raise ValueError(f"unknown fusion method {method!r}; choose one of {sorted(MEASURES)}")
        return method

    @field_validator("weights")
    @classmethod
    def _weights_there(cls, weights: str | None, info: ValidationInfo) -> str | None:
        """The "ums" measure's weights file is there when the profile loads: it was found missing only once the
        session had begun (under another measure none is read, and a warning says it has no effect)."""
        if weights is not None and info.data.get("method") == "ums" and not Path(weights).is_file():
            there = "is a folder" if Path(weights).is_dir() else "no such weights file"
            raise ValueError(f"{weights}: {there} (train with python -m fusion.deep.train --export PATH, or leave "
                             "weights out for the shipped ones)")
        return weights

    @field_validator("window_px")
    @classmethod
    def _window_of_a_pixel_at_least(cls, window_px):
        if window_px is not None and window_px < 1:  # said here, under its key (FusionSettings says it too)
            raise ValueError(f"focus window must be at least 1 pixel, got {window_px}")
        return window_px

    @model_validator(mode="after")
    def _settings_hold(self):
        self.settings()  # FusionSettings' own checks (a NaN sharpness, ...), said about this section
        return self

    def settings(self, **defaults: str) -> FusionSettings:
        """The engine's settings: those given here, then ``defaults`` (the rig's), then the settings' own."""
        given = self.model_dump(exclude_none=True, exclude={"decision_channel"})
        if "method" in given:
            given["measure"] = given.pop("method")
        return FusionSettings(**{**defaults, **given})


def _property_value_as_text(value: Any) -> str:
    """MMCore properties are text; YAML gives numbers and bare Yes/No as bools. Nothing else is one: a null or a
    mapping was sent to the device as the text "None" or "{'a': 1}", a NaN as "nan"."""
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if value is None or not isinstance(value, str | int | float):
        raise ValueError(f"a property's value is text, a number or Yes/No, got {_what_it_is(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"a property's value is a finite number, got {value}")
    return str(value)


def _a_mapping_of_properties(value: Any) -> Any:
    """pydantic's "Input should be a valid dictionary" did not say what a device's properties are."""
    if not isinstance(value, dict):
        raise ValueError(f"a device's properties are a mapping {{property: value}}, got {_what_it_is(value)}")
    return value


# (Checked value by value, so that a bad one is named by its key path: micromanager.properties.Camera.Exposure.)
DeviceProperties = Annotated[dict[str, Annotated[str, BeforeValidator(_property_value_as_text)]],
                             BeforeValidator(_a_mapping_of_properties)]


class MicroManagerSettings(_Strict):
    config: Annotated[str | None, EXPANDED_PATH] = None   # a .cfg file; "demo" = the mm-test-adapters demo one
    simulated_devices: bool = False       # load the simulators' Python devices into a UniMMCore
    # The simulated stage accepts z-sequences and steps on each camera frame's trigger.
    simulated_sequencing: bool = False
    # Device properties set after loading: {device: {property: value}}, e.g. {Z: {UseSequences: "Yes"}}.
    properties: dict[str, DeviceProperties] = {}


def _what_it_is(value: Any) -> str:
    """A value that is not what a key takes, as a message says it: "null", "a list ([1, 2])"."""
    return "null" if value is None else f"{_a(type(value).__name__.replace('dict', 'mapping'))} ({value!r:.40})"


class OutputSettings(_Strict):
    folder: Annotated[str, EXPANDED_PATH] = "sessions"


class FaultSettings(_Strict):
    """A fault for a simulated device to commit during the session, to rehearse failures."""

    after_slices: int = Field(0, ge=0)         # starts at this planned slice (from 0, lost ones counted)
    silent: bool = False                       # stops answering
    garbage: bool = False                      # answers with random bytes
    error_reply: int | None = Field(None, ge=0, le=255)   # answers with this device error code
    delay_s: Annotated[float, HOUR_S] = Field(0.0, ge=0)   # answers this late
    drop_frames: int = Field(0, ge=0)          # cameras: loses this many frames
    disconnect: bool = False                   # vanishes, as when its cable is pulled
    times: int | None = Field(None, ge=1)   # spoils this many answers, then recovers (default: never)

    def kinds(self) -> list[str]:
        """The faults asked for, by key."""
        asked = {"silent": self.silent, "garbage": self.garbage, "error_reply": self.error_reply is not None,
                 "delay_s": self.delay_s > 0, "drop_frames": self.drop_frames > 0, "disconnect": self.disconnect}
        return [kind for kind, on in asked.items() if on]

    @model_validator(mode="after")
    def _asks_for_one_thing(self):
        kinds = self.kinds()
        if not kinds:
            raise ValueError("no fault asked for: give one of silent, garbage, error_reply, delay_s, drop_frames, "
                             "disconnect")
        if len(kinds) > 1:  # (the simulators commit one: silent with error_reply answered errors, never went silent)
            raise ValueError(f"{' and '.join(kinds)} were both asked for; a device commits one fault at a time: "
                             "give one (the camera and the focus drive each have a block of their own)")
        return self


class FaultsProfile(_Strict):
    """Faults for the simulated camera and focus drive (see FAULTS_SIMULATED for what each can do)."""

    camera: FaultSettings | None = None
    focus: FaultSettings | None = None


# What each simulator can commit, by role and by how the profile names it.
FAULTS_SIMULATED = {
    ("focus", "simulated"): ("silent", "garbage", "error_reply", "delay_s", "disconnect"),
    ("focus", "asi"): ("silent", "garbage", "error_reply", "delay_s", "disconnect"),
    ("focus", "optotune"): ("silent", "garbage", "error_reply", "delay_s", "disconnect"),
    ("focus", "micromanager"): ("silent", "error_reply"),
    ("camera", "simulated"): ("silent", "garbage", "error_reply", "delay_s", "drop_frames", "disconnect"),
    ("camera", "micromanager"): ("error_reply", "delay_s", "drop_frames"),
}


class Profile(_Strict):
    name: str = "rig"
    camera: CameraSettings
    focus: FocusSettings
    plan: PlanSettings | None = None
    mda: MDAPlan | None = None    # a useq-schema MDASequence: positions, channels, time, z
    fusion: FusionProfile = FusionProfile()
    micromanager: MicroManagerSettings = MicroManagerSettings()
    output: OutputSettings = OutputSettings()
    faults: FaultsProfile = FaultsProfile()

    @model_validator(mode="after")
    def _faults_only_where_simulated(self):
        given = [f"faults.{role}" for role in ("camera", "focus") if getattr(self.faults, role) is not None]
        if given and self.mda is not None:  # accepted, they would rehearse nothing: refused, not ignored
            raise ValueError(f"{', '.join(given)}: faults are rehearsed in single-stack sessions (plan:) only; an mda: "
                             "plan's frames are taken by pymmcore-plus's MDA runner, where no fault is committed: "
                             "remove faults:, or rehearse them with a plan: profile (simulated-micromanager.yaml)")
        for role in ("camera", "focus"):
            settings = getattr(self.faults, role)
            if settings is None:
                continue
            simulator = self.simulator_of(role)
            if simulator is None:
                raise ValueError(f"faults.{role}: only this project's simulators commit faults, and this {role} "
                                 f"({getattr(self, role).driver}) is not one of them")
            unable = [kind for kind in settings.kinds() if kind not in FAULTS_SIMULATED[(role, simulator)]]
            if unable:
                raise ValueError(f"faults.{role}: the simulated {simulator} {role} cannot simulate "
                                 f"{', '.join(unable)}; it can: {', '.join(FAULTS_SIMULATED[(role, simulator)])}")
        return self

    def camera_simulator(self) -> str | None:
        """Which simulated camera it is (see ``SIMULATED_CAMERA_SECTIONS``); None for a real one."""
        simulator = self.simulator_of("camera")
        return "slide" if simulator == "micromanager" and self.mda is not None else simulator

    def micromanager_core(self) -> str | None:
        """Which Micro-Manager core the rig runs on (see ``PROFILE_KEYS_FOLLOWED_BY``): "micromanager" (a
        configuration's devices), "simulated devices" (with the simulators' Python devices), "slide" (the slide
        simulator's, in an mda: session), "pycromanager"; None for a rig without Micro-Manager."""
        drivers = (self.camera.driver, self.focus.driver)
        if "pycromanager" in drivers:
            return "pycromanager"
        if "micromanager" not in drivers:
            return None
        if not self.micromanager.simulated_devices:
            return "micromanager"
        return "slide" if self.mda is not None else "simulated devices"

    def simulator_of(self, role: str) -> str | None:
        """Which simulator plays ``role`` ("camera" or "focus"), by driver; None for real hardware."""
        driver = getattr(self, role).driver
        if driver == "simulated":
            return "simulated"
        if role == "focus" and driver in ("asi", "optotune") and self.focus.port == "simulated":
            return driver
        if driver == "micromanager" and self.micromanager.simulated_devices:
            return "micromanager"
        return None

    @model_validator(mode="after")
    def _one_plan_kind(self):
        if self.plan is None and self.mda is None:
            raise ValueError("no plan: give plan (a z-plan or sweep: one z-stack) or mda (a useq-schema MDA sequence)")
        if self.plan is not None and self.mda is not None:
            raise ValueError("give plan (one z-stack) or mda (a useq-schema MDA sequence), not both")
        if self.mda is not None and "micromanager" not in (self.camera.driver, self.focus.driver):
            raise ValueError("an mda plan runs on a Micro-Manager rig: camera.driver and focus.driver micromanager")
        channel = self.fusion.decision_channel
        if channel is not None and (self.mda is None or channel not in channel_names(self.mda)):
            available = channel_names(self.mda) if self.mda is not None else []
            raise ValueError(f"fusion.decision_channel {channel!r} is not a channel of the mda plan "
                             f"({', '.join(available) or 'it has none'})")
        return self

    @model_validator(mode="after")
    def _mda_stacks_fusion_takes(self):
        if self.mda is not None:
            check_stacks_fusion_takes(self.mda)
        return self

    @model_validator(mode="after")
    def _mda_stacks_of_two_slices_at_least(self):
        if self.mda is None:
            return self
        # A position's own sequence may give its z_plan too (it ran, fused none of that position's stacks, ended 0
        # and warned that they had no z-plan).
        plans = [("mda.z_plan", self.mda.z_plan)] + [
            (f"mda.stage_positions.{index}.sequence.z_plan", position.sequence.z_plan)
            for index, position in enumerate(self.mda.stage_positions) if position.sequence is not None]
        for key, z_plan in plans:
            # (Counted, not listed, where it says 3 or more: a typo's step gives millions. It says 2 for a range of
            # 0.5 every 1, and lists one.)
            if z_plan is not None and z_plan.num_positions() < 3 and len(list(z_plan)) < 2:
                # It ran, fused nothing and warned that the sequence had no z-plan.
                positions = list(z_plan)
                gives = (f"one z position per stack ({positions[0]:g} µm)" if positions
                         else "no z position (a negative step?)")
                raise ValueError(f"{key}: it gives {gives}: nothing to fuse; give a range or top and bottom larger "
                                 "than the step, or two absolute positions at least (or leave z_plan out to take one "
                                 "frame where each position is)")
        return self

    @model_validator(mode="after")
    def _plan_fits_rig(self):
        if self.plan is None:
            return self
        if self.plan.auto_range is not None and self.focus.unit != "um":
            raise ValueError("plan.auto_range: an automatic z-range is found with a stage in µm; this focus drive "
                             f"moves in {self.focus.unit}: give plan.sweep")
        if self.plan.z is not None and self.focus.unit != "um":  # (it ran 0..4 µm as 0..4 dpt, without a word)
            raise ValueError(f"plan.z: a z-plan is in µm, for a stage; this focus drive moves in {self.focus.unit}: "
                             f"give plan.sweep ({{start, stop, step}} in {self.focus.unit})")
        if self.plan.sweep is not None and self.focus.unit == "um":  # (a stage ran 0..1 dpt as 0..1 µm, streamed
            # frames mid-travel at their planned z, without a word)
            raise ValueError(f"plan.sweep: a sweep is for a tunable lens, in dpt or mA; this focus drive "
                             f"({self.focus.driver}) moves in µm: give plan.z ({{bottom, top, step}} in µm)")
        return self

    @model_validator(mode="after")
    def _keys_only_where_followed(self):
        """A key that only some rigs follow, given to one that does not, is refused naming the key and who follows
        it: every such key, one reason a line (a profile with three of them was refused for the first, then for
        each of the others in turn). After the checks of the rig as a whole (an mda: plan on a rig without
        Micro-Manager is said as such)."""
        simulator, core = self.camera_simulator(), self.micromanager_core()
        refused: dict[FollowedBy, list[str]] = {}
        for key in _keys_given(self):
            followed_by = next((rule for rule in _rules_of(key) if not self._follows(rule, simulator, core)), None)
            if followed_by is None:
                continue
            # (a real camera is told that all the simulators' keys are for simulated cameras, a rig without
            # Micro-Manager that all of micromanager:'s are for Micro-Manager rigs)
            if simulator is None and followed_by.simulators:
                followed_by = FOLLOWED_BY_SIMULATED_CAMERAS
            elif core is None and followed_by.cores:
                followed_by = FOLLOWED_BY_MICRO_MANAGER_RIGS
            refused.setdefault(followed_by, []).append(key)
        if refused:
            raise ValueError("\n".join(
                f"{', '.join(keys)}: {followed_by.only}; {self._which_rig(followed_by, simulator)} does not follow "
                f"{them}: remove {them}" for followed_by, keys in refused.items()
                for them in ["it" if len(keys) == 1 else "them"]))
        return self

    def _follows(self, rule: FollowedBy, simulator: str | None, core: str | None) -> bool:
        return self.camera.driver in rule.drivers or self.focus.driver in rule.focus_drivers \
            or simulator in rule.simulators or core in rule.cores

    def _which_rig(self, followed_by: FollowedBy, simulator: str | None) -> str:
        """This rig, as a refused key's message names it: its camera, its focus drive, or its Micro-Manager core."""
        if followed_by.focus_drivers:
            return f"this {self.focus.driver} focus drive"
        if followed_by.cores:
            core = self.micromanager_core()
            return {None: f"this rig, {_a(self.camera.driver)} camera and {_a(self.focus.driver)} focus drive,",
                    "slide": "the slide simulator's core",
                    "pycromanager": "this pycromanager rig",
                    "micromanager": "this Micro-Manager rig (its configuration's devices)",
                    "simulated devices": "this Micro-Manager rig (simulated devices)"}[core]
        return ("the slide simulator's camera" if simulator == "slide" else
                f"this {self.camera.driver} camera" + (" (simulated devices)" if simulator == "micromanager" else ""))

    def fusion_settings(self) -> FusionSettings:
        """The engine's settings for this rig: the fusion: section's, and where it says nothing about
        alignment, the one rule's default for a stage or a tunable lens (``fusion.align.defaults``)."""
        return self.fusion.settings(**default_alignment("tunable lens" if self.focus.driver == "optotune" else "stage"))


def with_fusion_overrides(profile: Profile, overrides: dict[str, Any], source: str = "command line") -> Profile:
    """``profile`` with these fusion: keys replaced (e.g. the command line's --align); a bad value is a
    ProfileError naming ``source`` and the key."""
    if not overrides:
        return profile
    data = profile.model_dump(exclude_none=True)
    data["fusion"] = {**data.get("fusion", {}), **overrides}
    try:
        return Profile.model_validate(data)
    except ValidationError as error:
        raise ProfileError(_described(source, error)) from None


def _of_the_meant_members(problems: list) -> list:
    """pydantic's errors, where a value fits no member of a union (useq's time_plan: interval and loops, duration and
    loops, ...), kept only for the members the value meant: those missing the fewest keys. Each member said its
    own, so that {interval: 0, loops: 0} gave 'phases: Field required', 'duration: Field required' twice and 'loops:
    Input should be greater than 0' twice, for 'loops: Input should be greater than 0'. A union inside a union's
    member (a multi-phase time plan's phases) is read first, so that the outer one counts its meant members only."""
    members = [dict(read_location(Profile, problem["loc"]).members) for problem in problems]
    unions = sorted({union for through in members for union in through}, key=len, reverse=True)
    kept = list(range(len(problems)))
    for union in unions:
        missing: dict[str, int] = {}
        for at in kept:
            if union in members[at]:
                member = members[at][union]
                missing[member] = missing.get(member, 0) + (problems[at]["type"] == "missing")
        meant = {member for member, count in missing.items() if count == min(missing.values())}
        kept = [at for at in kept if union not in members[at] or members[at][union] in meant]
    return [problems[at] for at in kept]


def _key_path(location: tuple) -> str:
    """A location as a profile's key path: ``micromanager.properties.Camera.Exposure``; a dict's key that is wrong
    (pydantic's ``[key]``) as ``micromanager.properties.Camera: key 1``."""
    if location[-1:] == ("[key]",):
        return f"{_key_path(location[:-2])}: key {location[-2]!r}" if len(location) > 2 else f"key {location[0]!r}"
    return ".".join(str(part) for part in location)


def _described(source: str, error: ValidationError) -> str:
    """Each problem on a line: source, key path, what is wrong (and for an unknown key what is allowed,
    and the allowed key it misspells: then the "Field required" of that key is not repeated). The key path leaves
    out pydantic's tags of a union's members (plan.z's ZTopBottom), told from keys by the profile's schema, not by
    their case: a device label (micromanager.properties.Camera) is a key."""
    lines: list[tuple[tuple, str, str]] = []
    misspelt: set[tuple] = set()
    for problem in _of_the_meant_members(error.errors()):
        loc = problem["loc"]
        # (an unknown key is a key, whatever it is called)
        location = read_location(Profile, loc[:-1]).keys + loc[-1:] if problem["type"] == "extra_forbidden" \
            else read_location(Profile, loc).keys
        # A whole-profile check (faults, decision_channel, ...) names its own keys in its message.
        key_path = _key_path(location) if location else ""
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            allowed = keys_allowed_at(Profile, loc[:-1])
            guess = closest_key(str(location[-1]), allowed or [])
            message = f"unknown key {location[-1]!r}" + (f" (did you mean {guess!r}?)" if guess else "") \
                + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
            if guess:
                misspelt.add(location[:-1] + (guess,))
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        lines += [(location, problem["type"], f"{source}: {key_path + ': ' if key_path else ''}{said}")
                  for said in message.split("\n")]  # (a check with several reasons says one a line)
    return "\n".join(dict.fromkeys(line for location, kind, line in lines  # (each once: union members repeat them)
                                    if not (kind == "missing" and location in misspelt)))


class _ProfileLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s reading, but a key given twice in one mapping is an error: YAML would
    keep the last one in silence (exposure_ms: 10 ... exposure_ms: 20 took 20)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):  # ({[a]: x} ended in a traceback: unhashable type)
                raise yaml.constructor.ConstructorError(None, None, f"a key is a name, not {_a(type(key).__name__)}",
                                                        key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error in one line: where, and what (PyYAML's own message runs over several lines)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    return " ".join(str(error).split())


def load_profile(path: str | Path) -> Profile:
    """Read and validate a YAML profile; every problem is a ProfileError naming file and key."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(), Loader=_ProfileLoader)  # a SafeLoader: no arbitrary objects
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such profile") from None
    except IsADirectoryError:
        raise ProfileError(f"{path}: is a folder; give a profile file (profiles/*.yaml)") from None
    except UnicodeDecodeError as error:
        raise ProfileError(f"{path}: not a text file (a profile is UTF-8 YAML): byte {error.start} "
                           "cannot be read") from None
    except OSError as error:  # permission denied, ...
        raise ProfileError(f"{path}: cannot be read: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise ProfileError(f"{path}: not valid YAML at {_yaml_problem(error)}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile is a mapping of keys (camera, focus, plan, ...), "
                           f"got {type(data).__name__}")
    try:
        return Profile.model_validate(data)
    except ValidationError as error:
        raise ProfileError(_described(str(path), error)) from None
    except TypeError as error:  # a library's validator that met a value of a kind it never expected (useq: None)
        raise ProfileError(f"{path}: {_unexpected_kind(data, error)}") from None


def _unexpected_kind(data: dict, error: TypeError) -> str:
    """What to say of a TypeError that validation raised (pydantic turns only ValueErrors into its errors): the key
    left empty (null) that caused it, found by validating without each, where one did; else the error itself."""
    culprits = [location for location in _null_leaves(data) if not _raises_type_error(_without(data, location))]
    if culprits:
        where = ", ".join(".".join(map(str, location)) for location in culprits)
        return (f"{where}: no value (null) where one is needed; give it one, or leave the key out (the check said: "
                f"{error})")
    return f"a value of a kind the profile does not take ({error}); check the values against the README"


def _raises_type_error(data: dict) -> bool:
    try:
        Profile.model_validate(data)
    except TypeError:
        return True
    except ValidationError:
        pass
    return False


def _without(data: dict, location: tuple) -> dict:
    """A deep copy of ``data`` without the key (or list item) at ``location``."""
    copied = copy.deepcopy(data)
    parent = functools.reduce(lambda node, key: node[key], location[:-1], copied)
    del parent[location[-1]]
    return copied


def _null_leaves(node, location: tuple = ()) -> list[tuple]:
    """The locations of the null values within ``node``'s sections (a top-level section left empty is taken as
    empty, not as a value missing)."""
    if isinstance(node, dict):
        return [found for key, value in node.items() for found in _null_leaves(value, location + (key,))]
    if isinstance(node, list):
        return [found for index, value in enumerate(node) for found in _null_leaves(value, location + (index,))]
    return [location] if node is None and len(location) > 1 else []
