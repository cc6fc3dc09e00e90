"""Which z-stack an MDA event belongs to, what its files are called, how many slices it will have, and whether the
depth map tells its z apart.

A useq-schema ``MDAEvent`` carries an index per axis (``t`` time, ``p`` position, ``g`` grid,
``c`` channel, ``z``...). Every index but ``z`` names a stack: the events that share them are
the slices of one focus stack, whatever the sequence's ``axis_order``.

A core whose camera has several channels (Micro-Manager's Multi Camera) gives each event one
frame per physical camera: pymmcore-plus adds a ``cam`` index to each, so every camera's frames
are stacks of their own (``p0_cam1``), planned as such (``planned_stacks(..., cameras=2)``).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from fusion.depth_z import too_fine_plan

# Axes in the order their parts appear in file names; any other axis follows, sorted.
_NAME_ORDER = ("p", "g", "t", "c")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CAMERA_PART = re.compile(r"cam\d+")  # (other parts start with their axis, a position's or channel's "p0-")

StackKey = tuple[tuple[str, int], ...]


def stack_key(event) -> StackKey:
    """The event's indices without ``z``, in a fixed order: equal for the slices of one stack."""
    return _key_of(event.index)


def _key_of(event_index) -> StackKey:
    index = {str(axis): int(value) for axis, value in event_index.items() if str(axis) != "z"}
    order = [a for a in _NAME_ORDER if a in index] + sorted(a for a in index if a not in _NAME_ORDER)
    return tuple((axis, index[axis]) for axis in order)


def _label(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("_")


def stack_name(event) -> str:
    """A file-name stem for the event's stack: ``p0-A1_t2_c1-FITC``; ``stack`` with no axes but z.

    Position names and channel configurations are added where the sequence has them, so the
    files say what they hold; the indices keep two stacks from sharing a name.
    """
    return _name_of(event, stack_key(event))


def _name_of(event, key: StackKey) -> str:
    parts = []
    for axis, value in key:
        part = f"{axis}{value}"
        if axis == "p" and event.pos_name:
            part += f"-{_label(event.pos_name)}"
        elif axis == "c" and event.channel is not None:
            part += f"-{_label(event.channel.config)}"
        parts.append(part)
    return "_".join(parts) or "stack"


def camera_index(name: str) -> int | None:
    """The ``cam`` index (a Multi Camera's physical camera) that a stack's name says ("p0_t3_cam1": 1), as
    ``stack_name`` makes it; None where it says none. For stacks that have no record to say it (never started)."""
    parts = [part for part in name.split("_") if _CAMERA_PART.fullmatch(part)]
    return int(parts[-1][3:]) if parts else None


def channel_name(event) -> str | None:
    return None if event.channel is None else event.channel.config


@dataclass(frozen=True)
class PlannedStack:
    """A stack as the sequence plans it: its file-name stem and how many slices it will have."""

    name: str
    slices: int


def planned_stacks(sequence: Any, cameras: int = 1) -> dict[StackKey, PlannedStack] | None:
    """The stacks of ``sequence``, in the order they begin; None when the events are not known in advance.

    Iterating the sequence is what pymmcore-plus's runner does too, so per-position
    sub-sequences (a different z-plan at one position, or none) are counted as they will run.
    ``cameras``: the core camera's channels (a Multi Camera's physical cameras, ``getNumberOfCameraChannels``);
    with more than one, each event is a frame of each camera's stack, keyed by its ``cam`` index as
    pymmcore-plus tags them.
    """
    if not _known_in_advance(sequence):
        return None
    counts: Counter[StackKey] = Counter()
    names: dict[StackKey, str] = {}
    for event in sequence:
        for index in ([event.index] if cameras <= 1 else
                      [{**event.index, "cam": camera} for camera in range(cameras)]):
            key = _key_of(index)
            counts[key] += 1
            if key not in names:
                names[key] = _name_of(event, key)
    return {key: PlannedStack(names[key], counts[key]) for key in names}



def too_fine_z_plan(sequence: Any) -> str | None:
    """Where the depth map cannot tell apart the z of one of ``sequence``'s stacks: the z_plan to change, and why in
    ``fusion.depth_z.too_fine_plan``'s words (with the least step the depth map holds there); None where it tells
    every stack's apart, or where the events are not known in advance. Fusion refused such a stack only once it was
    acquired."""
    if not _known_in_advance(sequence):
        return None
    z_by_stack: dict[StackKey, dict[float, None]] = {}  # (in the order visited, each z once)
    first_events: dict[StackKey, Any] = {}
    # (Without the time plan: each time point visits the same z, and a long time-lapse has millions of events.)
    for event in sequence.model_copy(update={"time_plan": None}):
        if event.z_pos is None:
            continue
        key = stack_key(event)
        z_by_stack.setdefault(key, {})[float(event.z_pos)] = None
        first_events.setdefault(key, event)
    for key, positions in z_by_stack.items():
        said = too_fine_plan(list(positions), "um")
        if said is not None:
            return f"{_z_plan_words(sequence, first_events[key])}: its slices' {said}"
    return None


def _z_plan_words(sequence: Any, event) -> str:
    """The z_plan that gives ``event`` its z, as a user of useq names it: "the sequence's z_plan at stage position 0
    (z 250 µm)", "the z_plan of stage position 1's own sequence"."""
    p = event.index.get("p")
    position = sequence.stage_positions[p] if p is not None and p < len(sequence.stage_positions) else None
    if position is not None and position.sequence is not None and position.sequence.z_plan is not None:
        return f"the z_plan of stage position {p}'s own sequence"
    if position is None:
        return "the sequence's z_plan"
    return f"the sequence's z_plan at stage position {p}" + ("" if position.z is None else f" (z {position.z:g} µm)")


def _known_in_advance(sequence: Any) -> bool:
    """Whether ``sequence`` describes its events: pymmcore-plus runs a bare iterable of events under a placeholder
    sequence that describes none."""
    import useq

    return isinstance(sequence, useq.MDASequence) and type(sequence).__name__ != "GeneratorMDASequence"
