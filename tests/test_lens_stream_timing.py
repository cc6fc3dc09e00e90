"""A free-running tunable-lens stream on the real driver and the lens simulator over a pseudo-terminal: each
kept frame is stamped with the power the lens really had, even when the lens takes its commands late, and
a lens that errs or falls silent is met at its own step."""
from __future__ import annotations

import time

import pytest

from acquisition.acquisition_mode import acquirer_for
from acquisition.frame_stream import QUEUED_FRAMES_AT_MOST, FrameStream
from acquisition.lens_settling import LensTrajectory
from acquisition.lens_stream import ARRIVAL_LATENCY_S, LensStreamAcquirer
from acquisition.plans import planned_positions
from acquisition.profile import Profile, ProfileError, load_profile
from acquisition.rig import open_rig
from acquisition.session import run_profile
from devices.camera import Frame
from devices.errors import DeviceError
from tests.conftest import REPO_ROOT, small_profile

pytestmark = pytest.mark.hardware_sim

STREAM_PROFILE = REPO_ROOT / "profiles" / "simulated-etl-stream.yaml"
# A USB-serial adapter holds short writes up to its latency timer (1-16 ms), and a busy host delays a
# driver thread as long: 20 ms is four times the lens's 5 ms settle.
LATE_LENS_S = 0.02


def small_stream(**changes) -> Profile:
    """The lens-stream profile, small (quick), changed as given (dotted keys)."""
    return small_profile(load_profile(STREAM_PROFILE), **changes)


@pytest.mark.parametrize("start,end,seen,still", [
    (1.006, 1.016, 0, False),      # settled by the clock of the sending, but the lens took the command at 1.008
    (1.014, 1.019, 0, True),       # settled 5 ms after it was taken
    (1.021, 1.031, 1, False),      # command 1 (sent 1.020, taken at once)
    (1.026, 1.036, 1, True),
])
def test_the_settle_counts_from_when_the_lens_had_taken_the_command(start, end, seen, still):
    trajectory = LensTrajectory(settle_s=0.005, guard_s=0.0005)
    trajectory.command(1.000, 0.5, taken_by_s=1.008)
    trajectory.command(1.020, 0.8)
    focus = trajectory.frame_focus(start, end)
    assert (focus.command, focus.still) == (seen, still)


def test_a_command_cannot_be_taken_before_it_is_sent():
    with pytest.raises(ValueError, match="before it is sent"):
        LensTrajectory(settle_s=0.005).command(1.0, 0.5, taken_by_s=0.9)


@pytest.mark.parametrize("lens_late_s", [0.0, LATE_LENS_S])
def test_each_kept_frame_is_stamped_with_the_power_it_was_exposed_at_even_from_a_late_lens(lens_late_s):
    profile = small_stream()
    rig = open_rig(profile)
    try:
        lens = rig.simulated["focus"]
        takes = lens.handle

        def late(data: bytes) -> list[bytes]:  # the simulator hears each command lens_late_s after it was sent
            time.sleep(lens_late_s)
            return takes(data)

        lens.handle = late
        acquirer = acquirer_for(profile, rig)
        assert isinstance(acquirer, LensStreamAcquirer)
        positions = planned_positions(profile.plan, 0.0)
        items = list(acquirer.frames(positions, []))
    finally:
        rig.close()
    assert [item.planned_index for item in items] == list(range(len(positions)))
    um_per_dpt = profile.camera.optics.um_per_dpt
    # What the optics simulator rendered (the lens's power as the exposure began) is the power stamped.
    assert [round(item.frame.metadata["focus_um"], 1) for item in items] == \
        [round(um_per_dpt * item.z, 1) for item in items]
    report = acquirer.report()
    assert report["flagged_frames"] > 0  # the frame in flight when the lens was sent on is never kept
    assert report["frames_streamed"] == len(positions) + report["flagged_frames"] + report["spare_frames"]


def test_a_lens_error_in_a_stream_is_retried_at_its_step_and_the_sweep_completes(tmp_path):
    # Before, a stream never asked the lens anything mid-sweep: the fault spoiled the return move at the end.
    profile = small_stream(faults={"focus": {"error_reply": 3, "times": 2, "after_slices": 5}})
    outcome = run_profile(profile, tmp_path, progress=False)
    report = outcome.report.to_json()  # as session.json has it
    assert outcome.completed and report["acquired_slices"] == report["planned_slices"] == 17
    assert [(r["slice"], r["what"]) for r in report["retries"]] == [(5, "move"), (5, "move")]
    assert "error 3: command not recognised" in report["retries"][0]["error"]
    assert report["faults_injected"] == [{"device": "focus", "after_slices": 5, "error_reply": 3, "times": 2}]


def test_a_lens_that_falls_silent_mid_stream_ends_the_session_there_with_its_slices_saved(tmp_path):
    profile = small_stream(faults={"focus": {"silent": True, "after_slices": 6}})
    outcome = run_profile(profile, tmp_path, progress=False)
    report = outcome.report.to_json()
    assert not outcome.completed
    assert report["acquired_slices"] == 6 and [s["planned_index"] for s in report["slices"]] == list(range(6))
    assert any("Optotune" in error and "no complete answer" in error for error in report["errors"])


# -- the stream's bound on its frames follows the settle and the exposure --

@pytest.mark.parametrize("settle_ms,exposure_ms,sweep", [
    (60, 1, None),                                         # a realistic settle, a short exposure: 60 frames a step
    (300, 10, {"start": -0.4, "stop": 1.4, "step": 0.3}),  # the shipped exposure, a slow lens: 30 frames a step
])
def test_a_settle_of_many_exposures_loses_no_slice(tmp_path, settle_ms, exposure_ms, sweep):
    # The stream was bounded at 20 frames a position: it ran out (at 60 ms / 1 ms, 3 of 17 slices lost and
    # "the stream ended after 340 frames" ended the session). Its bound now counts the settle's frames.
    changes = {"focus.settle_ms": settle_ms, "camera.exposure_ms": exposure_ms}
    profile = small_stream(**changes, **({"plan.sweep": sweep} if sweep else {}))
    outcome = run_profile(profile, tmp_path, progress=False)
    report = outcome.report.to_json()  # as session.json has it
    assert outcome.completed and report["errors"] == [] and report["dropped_frames"] == []
    assert report["acquired_slices"] == report["planned_slices"] == len(planned_positions(profile.plan, 0.0))
    assert report["acquisition"]["flagged_frames"] >= report["planned_slices"]  # frames exposed while it settled


def test_a_settle_too_long_for_a_stream_is_refused_naming_the_settings_before_anything_moves(tmp_path):
    # focus.settle_ms 30000 (the profile allows up to 60000) ended the stream before its first slice, and the
    # error blamed the camera's stream ("the stream ended after 60 frames").
    profile = small_stream(**{"focus.settle_ms": 30000})
    with pytest.raises(ProfileError, match=r"focus.settle_ms: 30000 ms is 3000 exposures of camera.exposure_ms "
                                           r"\(10 ms\).*at most 1000.*set plan.stream: false"):
        run_profile(profile, tmp_path / "sessions", progress=False)
    assert list((tmp_path / "sessions").iterdir()) == []  # no session folder left behind


def test_a_stream_keeps_few_frames_while_its_reader_is_away_and_still_gives_all_it_allows():
    # While the session stores a slice the camera streams on: the frames that pile up are old ones. The stream
    # keeps the newest QUEUED_FRAMES_AT_MOST (they were all kept, the stream's whole bound at worst) and starts
    # the camera again for the frames its run spent on discarded ones.
    rig = open_rig(small_stream(**{"camera.exposure_ms": 2}))
    try:
        with FrameStream(rig.camera, max_frames=60, frame_timeout_s=1.0, bound="as a test sets it") as stream:
            deadline = time.monotonic() + 10
            while stream.discarded < 40 and time.monotonic() < deadline:  # the camera's first run is spent
                time.sleep(0.05)
            waiting = [item for item in list(stream._queue.queue) if isinstance(item, Frame)]
            assert len(waiting) == QUEUED_FRAMES_AT_MOST  # (after them, the end of the camera's run)
            frames = [stream.next_frame(timeout_s=2.0) for _ in range(60)]
            assert all(frame is not None for frame in frames)
            times = [frame.timestamp_s for frame in frames if frame is not None]
            assert times == sorted(times)  # in the order they were exposed
            with pytest.raises(DeviceError, match=r"the stream ended after 60 frames, all it was allowed "
                                                  r"\(as a test sets it\)"):
                stream.next_frame(timeout_s=2.0)
            assert stream.restarts == 0  # none was started again after an error
    finally:
        rig.close()


@pytest.mark.parametrize("arrival_latency_ms,expected_s", [(None, ARRIVAL_LATENCY_S), (120, 0.12), (0, 0.0)])
def test_the_profile_sets_the_arrival_margin_of_frames_without_an_exposure_start(arrival_latency_ms, expected_s):
    # A GigE camera's full frames can take longer than 50 ms from exposure end to arrival: the margin is the rig's.
    profile = small_stream(**{"camera.arrival_latency_ms": arrival_latency_ms})
    rig = open_rig(profile)
    try:
        acquirer = acquirer_for(profile, rig)
    finally:
        rig.close()
    assert isinstance(acquirer, LensStreamAcquirer)
    assert acquirer.arrival_latency_s == pytest.approx(expected_s)

