"""The stacks an MDA sequence plans (``fusion.mda_stacks.planned_stacks``): what the handler expects of each stack and
what a session checks the disk for, before anything moves."""
from __future__ import annotations

from collections import Counter

import pytest
import useq

from fusion.mda_stacks import PlannedStack, planned_stacks, stack_key, stack_name

BASE = {"stage_positions": [(0, 0, 1), (10, 0, 2)], "channels": ["DAPI", "FITC"], "z_plan": {"range": 4, "step": 1},
        "time_plan": {"interval": 0, "loops": 7}}
SUB_Z = {"x": 1, "y": 1, "z": 3, "sequence": {"z_plan": {"range": 2, "step": 1}}}
SUB_GRID = {"x": 1, "y": 1, "z": 3, "sequence": {"grid_plan": {"rows": 2, "columns": 1}}}
SUB_TIME = {"x": 1, "y": 1, "z": 3, "sequence": {"time_plan": {"interval": 0, "loops": 2}}}

CASES = {
    **{f"axis order {order}": {"axis_order": order} for order in ("tpcz", "ptcz", "pctz", "tpzc", "ctpz", "pzct")},
    "a channel every other time point": {"channels": [{"config": "DAPI"}, {"config": "FITC", "acquire_every": 2}]},
    "a channel without a stack": {"channels": [{"config": "DAPI"}, {"config": "FITC", "do_stack": False}]},
    "a position's own z_plan": {"stage_positions": [(0, 0, 1), SUB_Z]},
    "a position's own grid": {"stage_positions": [(0, 0, 1), SUB_GRID]},
    "a position's own time plan": {"stage_positions": [(0, 0, 1), SUB_TIME]},
    "autofocus at each time point": {"autofocus_plan": {"autofocus_device_name": "Z", "autofocus_motor_offset": 1,
                                                        "axes": ("t", "p")}},
    "a grid": {"grid_plan": {"rows": 2, "columns": 2}},
    "a time plan of two phases": {"time_plan": {"phases": [{"interval": 0, "loops": 3}, {"interval": 1, "loops": 4}]}},
    "named positions": {"stage_positions": [{"x": 0, "y": 0, "z": 1, "name": "A1"},
                                            {"x": 1, "y": 0, "z": 1, "name": "well B/2"}]},
}


def walked(sequence: useq.MDASequence, cameras: int) -> dict:
    """Every event of the sequence walked, as pymmcore-plus's runner walks them: each stack's name and slices, in the
    order the stacks begin."""
    counts: Counter = Counter()
    names: dict = {}
    for event in sequence:
        for camera in range(cameras):
            index = {**event.index, "cam": camera} if cameras > 1 else event.index
            key = stack_key(event.model_copy(update={"index": index}))
            counts[key] += 1
            names.setdefault(key, stack_name(event.model_copy(update={"index": index})))
    return {key: PlannedStack(names[key], counts[key]) for key in names}


@pytest.mark.parametrize("cameras", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_planned_stacks_are_those_the_mda_runs_in_the_order_they_begin(case, cameras):
    sequence = useq.MDASequence(**{**BASE, **CASES[case]})
    assert list(planned_stacks(sequence, cameras).items()) == list(walked(sequence, cameras).items())


def test_a_long_time_lapse_is_planned_without_walking_every_time_point(monkeypatch):
    """4 positions x 3 channels x 20 z x 1000 time points: every event was walked (~85 µs each in useq), 20 s of
    silence before anything moved (a loops: 100000, half an hour). One time point's stacks are repeated at each."""
    walked_events = 0
    iter_events = useq.MDASequence.iter_events

    def counting(self):
        nonlocal walked_events
        for event in iter_events(self):
            walked_events += 1
            yield event

    monkeypatch.setattr(useq.MDASequence, "iter_events", counting)
    sequence = useq.MDASequence(stage_positions=[{"x": 0, "y": 0, "z": 1, "name": "A1"}, (1, 0, 1), (0, 1, 1),
                                                 (1, 1, 1)],
                                channels=["DAPI", "FITC", "Cy5"], z_plan={"range": 38, "step": 2},
                                time_plan={"interval": 0, "loops": 1000})
    events_per_time_point = 4 * 3 * 20
    stacks = planned_stacks(sequence)
    assert stacks is not None and len(stacks) == 1000 * 4 * 3
    assert {stack.slices for stack in stacks.values()} == {20}
    names = [stack.name for stack in stacks.values()]
    assert names[:4] == ["p0-A1_t0_c0-DAPI", "p0-A1_t0_c1-FITC", "p0-A1_t0_c2-Cy5", "p1_t0_c0-DAPI"]
    assert names[-1] == "p3_t999_c2-Cy5"
    assert walked_events <= 5 * events_per_time_point  # (every event: 1000 times as many)


def test_a_z_plan_of_more_slices_than_fusion_takes_plans_no_stacks_and_lists_no_positions():
    """{range: 38, step: 1e-7}: useq would list 380 million positions (a MemoryError). Fusion refuses such stacks
    (``oversized_z_plan`` says why): none is planned."""
    from fusion.mda_stacks import oversized_z_plan, too_fine_z_plan

    sequence = useq.MDASequence(stage_positions=[(0, 0, 1)], z_plan={"range": 38, "step": 1e-7})
    said = ("the sequence's z_plan: it visits 380,000,001 positions; a stack is fused from 32,767 slices at most: "
            "make the step 0.0012 µm or larger")
    assert oversized_z_plan(sequence) == too_fine_z_plan(sequence) == said
    assert planned_stacks(sequence) is None
