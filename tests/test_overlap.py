"""Aligning, the engine registers slice k+1 while slice k is composed (fusion.overlap)."""
import threading
from dataclasses import dataclass

import numpy as np
import pytest

import fusion.engine
from fusion import FusionSettings, StreamingFusion
from fusion.overlap import OneAhead, kernels_may_run_concurrently, made_beside, started_beside
from simulators.motion import moving_sweep


def fuse(slices, z_um, overlapped: bool, monkeypatch):
    monkeypatch.setattr(fusion.engine, "kernels_may_run_concurrently", lambda: overlapped)
    engine = StreamingFusion(slices[0].shape, slices[0].dtype, FusionSettings(align="on"))
    assert (engine._overlap is not None) == overlapped
    for pixels, z in zip(slices, z_um):
        engine.push(pixels, z)
    return engine.finish()


def test_overlapped_composition_gives_the_same_result_as_one_slice_at_a_time(monkeypatch):
    stack = moving_sweep("coffee", "dome", (256, 320), 7, 0.02, 8.0, moving=True)
    overlapped = fuse(stack.slices, stack.z_um, True, monkeypatch)
    in_turn = fuse(stack.slices, stack.z_um, False, monkeypatch)
    assert np.array_equal(overlapped.fused, in_turn.fused)
    assert np.array_equal(overlapped.depth, in_turn.depth, equal_nan=True)
    assert overlapped.focus_scores == in_turn.focus_scores and overlapped.z_positions == in_turn.z_positions
    assert overlapped.alignment == in_turn.alignment


def test_kernels_run_from_two_threads_at_once_only_under_tbb():
    # Under OpenMP they crashed the process, rarely (fusion.parallel_kernels.CONCURRENT_LAYERS); workqueue aborts it.
    import numba

    assert kernels_may_run_concurrently() == (numba.threading_layer() == "tbb")


def test_a_job_that_failed_raises_at_the_next_submit_and_the_next_job_does_not_start():
    started = []
    overlap = OneAhead("test")

    def job(n):
        started.append(n)
        if n == 1:
            raise ValueError("slice 1: the focus map holds NaN")
        return n * 10

    assert overlap.submit(job, 0) is None
    assert overlap.submit(job, 1) == 0
    with pytest.raises(ValueError, match="slice 1"):
        overlap.submit(job, 2)
    assert started == [0, 1]
    overlap.close()


def test_close_waits_for_the_job_in_flight_and_keeps_quiet_about_its_error():
    overlap = OneAhead("test")
    overlap.submit(lambda: 1 / 0)
    overlap.close()  # the caller is already ending with its own error


def test_side_by_side_runs_the_second_job_on_another_thread_and_returns_both_in_order(monkeypatch):
    import threading

    import fusion.overlap
    from fusion.overlap import side_by_side

    monkeypatch.setattr(fusion.overlap, "kernels_may_run_concurrently", lambda: True)  # (as under TBB)
    here, beside = side_by_side(lambda: threading.current_thread().name, lambda: threading.current_thread().name)
    assert here == threading.current_thread().name and beside.startswith("beside")


@pytest.mark.parametrize("failing", ["here", "beside"])
def test_side_by_side_raises_either_jobs_error(failing):
    from fusion.overlap import side_by_side

    def job(name):
        if name == failing:
            raise ValueError(f"{name} failed")
        return name

    with pytest.raises(ValueError, match=f"{failing} failed"):
        side_by_side(lambda: job("here"), lambda: job("beside"))


def test_the_end_of_a_stack_gives_the_same_result_with_its_maps_made_beside_the_image_or_after_it(monkeypatch):
    import fusion.overlap

    stack = moving_sweep("coffee", "dome", (256, 320), 7, 0.0, 0.0, moving=False)

    def fused(concurrently):
        monkeypatch.setattr(fusion.overlap, "kernels_may_run_concurrently", lambda: concurrently)
        engine = StreamingFusion(stack.slices[0].shape, stack.slices[0].dtype, FusionSettings())
        for pixels, z in zip(stack.slices, stack.z_um):
            engine.push(pixels, z)
        return engine.finish()

    beside, after = fused(True), fused(False)
    assert np.array_equal(beside.fused, after.fused) and np.array_equal(beside.decision, after.decision)
    assert np.array_equal(beside.depth, after.depth, equal_nan=True)
    assert np.isfinite(beside.depth).mean() > 0.5 and len(np.unique(beside.decision)) > 2


def test_a_field_made_beside_is_its_value_when_read_and_its_error_where_read():
    from dataclasses import dataclass

    from fusion.overlap import made_beside, started_beside

    @made_beside("later")
    @dataclass
    class Result:
        image: str
        later: int

    release = threading.Event()
    made = Result("image", started_beside(lambda: release.wait(10) and 42))
    assert made.image == "image"   # at once, while the other field is still being made
    release.set()
    assert made.later == 42 and made.later == 42
    assert Result("image", 7).later == 7   # or given as it is

    def fails():
        raise ValueError("the mode filter failed")

    with pytest.raises(ValueError, match="mode filter failed"):
        assert Result("image", started_beside(fails)).later is None  # (never: reading it raises)
    with pytest.raises(TypeError, match="later"):
        Result("image")  # type: ignore[call-arg]  # (no default)


@made_beside("later")
@dataclass
class _PicklableResult:
    """(At module level: pickle finds a class by its name.)"""

    image: str
    later: int


def test_a_class_with_a_field_made_beside_pickles_with_its_value():
    """Each class pickled its fields made beside by a ``__getstate__`` of its own that named them again (a Future
    cannot be pickled): the decorator that names them now gives it."""
    import pickle

    copy = pickle.loads(pickle.dumps(_PicklableResult("image", started_beside(lambda: 42))))
    assert (copy.image, copy.later) == ("image", 42)


def test_a_result_s_decision_reads_as_the_map_it_is_and_has_no_default():
    """FusionResult's source read ``decision: MadeBeside[np.ndarray] = MadeBeside()``, a default it did not have, and
    its signature named the descriptor as the type."""
    import inspect
    from concurrent.futures import Future

    import numpy as np

    from fusion import FusionResult

    decision = inspect.signature(FusionResult).parameters["decision"]
    assert decision.default is inspect.Parameter.empty and decision.annotation == "np.ndarray"
    with pytest.raises(TypeError, match="decision"):
        FusionResult(fused=np.zeros((2, 2)), depth=np.zeros((2, 2)), depth_unit="um", focus_scores=[1.0],
                     z_positions=[0.0])
    later: Future[np.ndarray] = Future()
    later.set_result(np.ones((2, 2), np.int16))
    result = FusionResult(fused=np.zeros((2, 2)), depth=np.zeros((2, 2)), depth_unit="um",
                          decision=later, focus_scores=[1.0], z_positions=[0.0])
    assert result.decision.dtype == np.int16 and result.chosen_fraction() == [0.0, 1.0]


def test_the_pyramid_decision_map_made_after_the_image_is_the_cleaned_argmax():
    import numpy as np

    from fusion import FusionSettings, StreamingFusion
    from fusion.decision import clean_decision, default_mode_filter_px

    rng = np.random.default_rng(4)
    engine = StreamingFusion((120, 150), np.uint8, FusionSettings())
    for z in range(5):
        engine.push((rng.random((120, 150)) * 255).astype(np.uint8), float(z))
    composer = engine._composition._composer
    result = engine.finish()
    expected = clean_decision(np.maximum(composer.best_index, 0), 5, default_mode_filter_px((120, 150)),
                              [0.0, 1.0, 2.0, 3.0, 4.0])
    assert np.array_equal(result.decision, expected) and result.decision.dtype == expected.dtype
