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

import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fusion.depth_z import too_fine_plan
from fusion.engine import MAX_SLICES

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
    return "_".join(_name_parts(event, key)) or "stack"


def _name_parts(event, key: StackKey) -> list[str]:
    """A part of the name per axis of ``key``."""
    parts = []
    for axis, value in key:
        part = f"{axis}{value}"
        if axis == "p" and event.pos_name:
            part += f"-{_label(event.pos_name)}"
        elif axis == "c" and event.channel is not None:
            part += f"-{_label(event.channel.config)}"
        parts.append(part)
    return parts


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
    """The stacks of ``sequence``, in the order they begin; None when the events are not known in advance, or when
    a z_plan gives a stack more slices than fusion takes (``oversized_z_plan``: its stacks are refused, not planned).

    Iterating the sequence is what pymmcore-plus's runner does too, so per-position
    sub-sequences (a different z-plan at one position, or none) are counted as they will run.
    ``cameras``: the core camera's channels (a Multi Camera's physical cameras, ``getNumberOfCameraChannels``);
    with more than one, each event is a frame of each camera's stack, keyed by its ``cam`` index as
    pymmcore-plus tags them.

    A long time plan is not walked event by event (~85 µs each in useq: 1000 time points of 240 events took 20 s
    before anything moved): one time point's stacks are repeated at every time point, once a walk of a few time
    points shows that the sequence does so (a channel acquired every other time point does not: walked whole).
    """
    import useq

    if not _known_in_advance(sequence) or oversized_z_plan(sequence) is not None:
        return None
    time_points = _time_points(sequence)
    if time_points <= _TIME_POINTS_WALKED or _has_own_time_plan(sequence):
        return _walked_stacks(sequence, cameras)
    few = sequence.model_copy(update={"time_plan": useq.TIntervalLoops(interval=0, loops=_TIME_POINTS_WALKED)})
    if list(_repeated_over_time(sequence, cameras, _TIME_POINTS_WALKED).items()) \
            != list(_walked_stacks(few, cameras).items()):
        return _walked_stacks(sequence, cameras)
    return _repeated_over_time(sequence, cameras, time_points)


# Time points walked event by event, to see whether each time point has the same stacks.
_TIME_POINTS_WALKED = 3


def _walked_stacks(sequence: Any, cameras: int) -> dict[StackKey, PlannedStack]:
    """Every event of ``sequence`` walked, as pymmcore-plus's runner walks them."""
    counts, first_events = _count_stacks(sequence, cameras)
    return {key: PlannedStack(_name_of(event, key), counts[key]) for key, event in first_events.items()}


def _count_stacks(sequence: Any, cameras: int) -> tuple[Counter[StackKey], dict[StackKey, Any]]:
    """Each stack's slices, and its first event (in the order the stacks begin)."""
    counts: Counter[StackKey] = Counter()
    first_events: dict[StackKey, Any] = {}
    for event in sequence:
        for index in ([event.index] if cameras <= 1 else
                      [{**event.index, "cam": camera} for camera in range(cameras)]):
            key = _key_of(index)
            counts[key] += 1
            first_events.setdefault(key, event)
    return counts, first_events


def _repeated_over_time(sequence: Any, cameras: int, time_points: int) -> dict[StackKey, PlannedStack]:
    """The stacks of one time point (the sequence walked without its time plan), at each of ``time_points``: in
    the order they begin, the axes before ``t`` in the sequence's ``axis_order`` outermost."""
    counts, first_events = _count_stacks(sequence.model_copy(update={"time_plan": None}), cameras)
    order = [str(axis) for axis in sequence.axis_order]
    outer = order[:order.index("t")]
    groups: dict[tuple, list[StackKey]] = {}  # (by the outer axes' indices, in the order they begin)
    for key in first_events:
        index = dict(key)
        groups.setdefault(tuple(index.get(axis) for axis in outer), []).append(key)
    stacks = {}
    for keys in groups.values():
        # (Each key and name made once, its t set at each time point: a plate's long time-lapse has millions.)
        timed = []
        for key in keys:
            at_t0 = _key_of({**dict(key), "t": 0})
            timed.append((at_t0, _name_parts(first_events[key], at_t0), [a for a, _ in at_t0].index("t"), counts[key]))
        for t in range(time_points):
            for key, parts, at, slices in timed:
                parts[at] = f"t{t}"
                stacks[key[:at] + (("t", t),) + key[at + 1:]] = PlannedStack("_".join(parts), slices)
    return stacks


def _time_points(sequence: Any) -> int:
    """How many time points ``sequence`` visits: 0 without a time plan (or a ``t`` in its axis order). (Not its
    ``sizes``: a copy with another time plan keeps the original's.)"""
    if sequence.time_plan is None or "t" not in map(str, sequence.axis_order):
        return 0
    return int(sequence.time_plan.num_timepoints())


def _has_own_time_plan(sequence: Any) -> bool:
    """Whether a stage position's own sequence has a time plan (its time index replaces the sequence's)."""
    return any(p.sequence is not None and p.sequence.time_plan is not None for p in sequence.stage_positions)


def z_plans(sequence: Any) -> Iterator[tuple[str, Any]]:
    """Each z_plan of ``sequence`` with its key there: ``z_plan``, ``stage_positions.1.sequence.z_plan``."""
    if sequence.z_plan is not None:
        yield "z_plan", sequence.z_plan
    for number, position in enumerate(sequence.stage_positions):
        if position.sequence is not None:
            for key, plan in z_plans(position.sequence):
                yield f"stage_positions.{number}.sequence.{key}", plan


def too_many_slices(z_plan: Any) -> str | None:
    """Why fusion would refuse each stack of ``z_plan``, and the step (or number of positions) to give it; None where
    it takes them. Counted from the plan's numbers: useq lists every position (a typo's step of 1e-7 µm over 38 µm
    is 380 million of them, a MemoryError)."""
    n_positions = z_plan.num_positions()
    if n_positions <= MAX_SLICES:
        return None
    step = getattr(z_plan, "step", None)
    advice = (f"make the step {_step_that_fits(z_plan):g} µm or larger" if step is not None else
              f"give {MAX_SLICES:,} positions at most")
    return f"it visits {n_positions:,} positions; a stack is fused from {MAX_SLICES:,} slices at most: {advice}"


def _step_that_fits(z_plan: Any) -> float:
    """The least step of two significant digits at which ``z_plan`` visits ``MAX_SLICES`` positions at most."""
    least = z_plan.step * (z_plan.num_positions() - 1) / (MAX_SLICES - 1)
    digit = 10.0 ** (math.floor(math.log10(least)) - 1)
    step = math.ceil(least / digit) * digit
    while z_plan.model_copy(update={"step": step}).num_positions() > MAX_SLICES:
        step += digit
    return float(f"{step:.2g}")


def oversized_z_plan(sequence: Any) -> str | None:
    """The first z_plan of ``sequence`` that gives a stack more slices than fusion takes, in a user's words, and the
    step to give it; None where there is none, or where the events are not known in advance."""
    if not _known_in_advance(sequence):
        return None
    for key, plan in z_plans(sequence):
        said = too_many_slices(plan)
        if said is not None:
            return f"{_z_plan_key_words(key)}: {said}"
    return None


def _z_plan_key_words(key: str) -> str:
    """``z_plans``'s key as a user of useq names it: "the sequence's z_plan", "the z_plan of stage position 1's own
    sequence"."""
    if key == "z_plan":
        return "the sequence's z_plan"
    return f"the z_plan of stage position {key.split('.')[1]}'s own sequence"


def too_fine_z_plan(sequence: Any) -> str | None:
    """Where the depth map cannot tell apart the z of one of ``sequence``'s stacks: the z_plan to change, and why in
    ``fusion.depth_z.too_fine_plan``'s words (with the least step the depth map holds there); None where it tells
    every stack's apart, or where the events are not known in advance. Fusion refused such a stack only once it was
    acquired."""
    if not _known_in_advance(sequence):
        return None
    oversized = oversized_z_plan(sequence)  # (first: its positions are too many to list)
    if oversized is not None:
        return oversized
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
