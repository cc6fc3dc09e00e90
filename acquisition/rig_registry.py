"""Which code opens each device a profile names: a registry of rig openers, by role and driver.

An opener takes the ``RigContext`` (the profile, and what openers before it left there) and
returns an ``Opened``: the device and how to close it, and for a simulator also the simulator
itself, how it commits a profile's faults and the ground truth it knows. Acquisition looks
openers up here and never imports a driver or a simulator by name.

Where openers come from: the real drivers' openers (``acquisition.rig_openers``) are built in and
load on the first lookup. Any other module provides openers by calling ``register_opener`` when it
is imported, and the program that puts a rig together imports it: ``run_session.py`` imports
``simulators.rigs`` (the simulated parts and their ground truth), as do the tests and benchmarks
that open simulated rigs. So acquisition depends on no simulator, the dependency is written where
it is decided (the program), and ``run_session.py --profile profiles/simulated.yaml`` needs nothing
from the user. (Not entry points: a source checkout's stale ``*.egg-info`` hides new ones until
a reinstall, a trap for every contributor; not an import by name from here: that is the same
dependency on simulators, only hidden.)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from acquisition.profile import Profile

ROLES = ("core", "mda_core", "focus", "camera")  # in the order a rig opens them

Device = TypeVar("Device")


class GroundTruth(Protocol):
    """What a simulated rig knows: the all-in-focus image its camera would see."""

    def for_frame(self, frame_metadata: dict[str, Any]) -> Any:
        """The truth framed as the frame with this metadata was (e.g. a breathing lens's magnification)."""

    def height_range_um(self) -> tuple[float, float] | None:
        """The specimen's lowest and highest surface point (µm, the focus's frame), if known."""


class FaultCommitter(Protocol):
    """How a simulator commits a profile's fault (a ``FaultSettings``), and whether it has done anything."""

    def commit(self, settings: Any) -> None:
        """Switch the fault on now: the device's next answer or frame meets it (once: a fault on stays on)."""

    def commit_at_frame(self, settings: Any, frames_before: int) -> None:
        """Switch it on as the camera begins the frame after its next ``frames_before`` (cameras only);
        called again before then (a sequence started anew), the count starts over from this call."""

    def started(self) -> bool:
        """Whether the fault is on (one waiting for its frame is not yet)."""

    def fired(self) -> bool:
        """Whether the fault has spoiled an answer or a frame yet."""


@dataclass
class Opened(Generic[Device]):
    """What an opener returns."""

    device: Device
    close: Callable[[], None]
    simulator: Any = None                                  # the simulator playing this role, if any
    faults: FaultCommitter | None = None                   # commits a profile's FaultSettings
    ground_truth: Any = None                               # a GroundTruth (simulated cameras), or for an
                                                           # mda core: truth(x_um, y_um, channel_index)


@dataclass
class RigContext:
    """What openers share while one rig opens: the profile, and parts one opener leaves for another
    (a Micro-Manager core for its camera and focus; a simulated focus's optical state for the
    simulated camera that renders through it)."""

    profile: Profile
    shared: dict[str, Any] = field(default_factory=dict)


Opener = Callable[[RigContext], Opened]
_OPENERS: dict[tuple[str, str, bool], Opener] = {}
_built_in_loaded = False


def register_opener(role: str, driver: str, opener: Opener, simulated: bool = False) -> None:
    """Make ``opener`` open the ``role`` ("focus", "camera", "core", "mda_core") of profiles that name
    ``driver``; ``simulated``: for profiles that ask for that driver's simulator."""
    if role not in ROLES:
        raise ValueError(f"unknown rig role {role!r}; roles: {', '.join(ROLES)}")
    _OPENERS[(role, driver, simulated)] = opener


def opener_for(role: str, driver: str, simulated: bool) -> Opener:
    """The opener registered for (role, driver, simulated); a clear error when there is none."""
    key = (role, driver, simulated)
    if key not in _OPENERS and not _built_in_loaded:
        _load_built_in()
    if key not in _OPENERS:
        known = sorted(f"{'simulated ' if s else ''}{d}" for r, d, s in _OPENERS if r == role)
        hint = " (the simulators register theirs when simulators.rigs is imported)" if simulated else ""
        raise LookupError(f"no opener for a {'simulated ' if simulated else ''}{driver} {role}{hint}; "
                          f"known: {', '.join(known) or 'none'}")
    return _OPENERS[key]


def _load_built_in() -> None:
    global _built_in_loaded
    _built_in_loaded = True
    import acquisition.rig_openers  # noqa: F401  (registers the real drivers' openers)
