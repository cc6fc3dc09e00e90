"""The dock widget's faults a hostile tester found: following MDAs on and off mid-MDA, folders it cannot use,
previews pushed forever, renamed and odd layers, result names taken, stacks placed off the origin."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import useq

pytest.importorskip("napari", reason="the napari extra is not installed (pip install .[napari])")
pytestmark = pytest.mark.usefixtures("qt_signalled_cores")  # (conftest: as napari-micromanager's core)

from tests.conftest import rendered  # noqa: E402
from tests.test_napari_plugin import viewer_model, wait_until_fused  # noqa: E402


def dock(qtbot):
    from napari_ums_fusion.widget import FusionWidget

    viewer = viewer_model()
    widget = FusionWidget(viewer)
    qtbot.addWidget(widget)
    return viewer, widget


def tick_follow(widget, core):
    """What ticking "Follow MDA" does, with this core (the box follows ``CMMCorePlus.instance()``)."""
    widget.follow_box.blockSignals(True)
    widget.follow_box.setChecked(True)
    widget.follow_box.blockSignals(False)
    widget.follow_mda(core)


def grey_stack(slices=7, shape=(64, 80)):
    return np.stack([s[..., 0] for s in rendered(shape=shape).slices[:slices]])


def test_unticking_follow_mid_mda_finishes_the_stack_so_far_and_says_so(qtbot, tmp_path):
    """Unticking only disconnected: a stack TIFF without its OME metadata, no fused image, a summary saying
    "being acquired", files left open, and a status still counting slices."""
    from tests.test_mda_handler import slide_core

    viewer, widget = dock(qtbot)
    widget.follow_folder.setText(str(tmp_path))
    with slide_core(["DAPI"]) as (core, camera):
        camera.set_exposure(40.0)
        tick_follow(widget, core)
        thread = core.run_mda(useq.MDASequence(z_plan={"range": 40, "step": 1}))
        qtbot.waitUntil(lambda: widget.follower.handler.latest is not None
                        and widget.follower.handler.latest.n_slices >= 4, timeout=30_000)
        widget.follow_box.setChecked(False)  # the user stops following
        qtbot.waitUntil(lambda: "stopped following MDAs mid-MDA" in widget.status.text(), timeout=60_000)
        thread.join(60)
    assert "1 stack fused" in widget.status.text() and str(tmp_path) in widget.status.text()
    summary = json.loads((tmp_path / "mda_fusion.json").read_text())
    assert summary["finished"] is True and summary["stacks"][0]["error"] is None
    assert 4 <= summary["stacks"][0]["slices"] < 41
    assert (tmp_path / "stack.fused.tif").exists() and (tmp_path / "stack.depth.tif").exists()
    with tifffile.TiffFile(tmp_path / "stack.stack.ome.tif") as tif:
        assert tif.is_ome and len(tif.pages) == summary["stacks"][0]["slices"]


def test_ticking_follow_mid_mda_says_it_starts_with_the_next_mda_and_leaves_no_half_stack(qtbot, tmp_path):
    from tests.test_mda_handler import slide_core

    viewer, widget = dock(qtbot)
    widget.follow_folder.setText(str(tmp_path / "out"))
    with slide_core(["DAPI"]) as (core, camera):
        camera.set_exposure(20.0)
        frames = []
        core.mda.events.frameReady.connect(lambda *args: frames.append(1))
        thread = core.run_mda(useq.MDASequence(z_plan={"range": 20, "step": 1}))
        qtbot.waitUntil(lambda: len(frames) >= 2, timeout=10_000)
        tick_follow(widget, core)
        assert "following starts with the next one" in widget.status.text()
        thread.join(60)
        qtbot.wait(200)
        assert not (tmp_path / "out").exists()  # nothing of the MDA it joined: no stack without its first slices
        camera.set_exposure(1.0)
        core.run_mda(useq.MDASequence(z_plan={"range": 2, "step": 1})).join(60)
        qtbot.waitUntil(widget.follower.handler.finished.is_set, timeout=60_000)
    assert json.loads((tmp_path / "out" / "mda_fusion.json").read_text())["stacks"][0]["slices"] == 3
    widget.stop_following()


@pytest.mark.parametrize("how", ["closed", "taken out of its dock"])
def test_a_dock_closed_while_following_stops_following(qtbot, tmp_path, how):
    """It went on fusing every MDA of the core into its folder, unseen, until napari quit. (napari's close button
    takes the widget out of its dock, setParent(None), without closing it.)"""
    from qtpy.QtWidgets import QDockWidget

    from tests.test_mda_handler import slide_core

    viewer, widget = dock(qtbot)
    holder = QDockWidget()
    holder.setWidget(widget)
    widget.follow_folder.setText(str(tmp_path / "out"))
    with slide_core(["DAPI"]) as (core, _camera):
        tick_follow(widget, core)
        if how == "closed":
            widget.close()
        else:
            widget.setParent(None)
        assert widget.follower is None and not widget.follow_box.isChecked()
        core.run_mda(useq.MDASequence(z_plan={"range": 2, "step": 1})).join(60)
        qtbot.wait(300)
    assert not (tmp_path / "out").exists()  # (made as an MDA it follows starts)
    widget.setParent(None)  # (the holder goes without it)


def test_a_preview_does_not_hold_the_gui_while_a_slice_is_fused(qtbot, tmp_path):
    """The timer composed the preview on the GUI's thread, waiting there for the slice being fused (the fusion's
    lock) and collapsing the pyramid: up to a second of frozen GUI per preview at 5 MP. A slice whose fusion takes
    long is played here by holding the fusion's lock from another thread."""
    import threading

    from tests.test_mda_handler import slide_core

    viewer, widget = dock(qtbot)
    widget.follow_folder.setText(str(tmp_path))
    with slide_core(["DAPI"]) as (core, camera):
        camera.set_exposure(30.0)
        tick_follow(widget, core)
        widget._timer.stop()  # (this test ticks it)
        thread = core.run_mda(useq.MDASequence(z_plan={"range": 12, "step": 1}))
        qtbot.waitUntil(lambda: widget.follower.handler.latest is not None
                        and widget.follower.handler.latest.n_slices >= 2, timeout=30_000)
        stream = widget.follower.handler.latest
        if widget.warming is not None:
            widget.warming.join(60)
        held, release, released = threading.Event(), threading.Event(), threading.Event()

        def fuse_a_long_slice():
            with stream.worker.lock:
                held.set()
                release.wait(10)
                released.set()

        threading.Thread(target=fuse_a_long_slice).start()
        held.wait(10)
        widget.show_mda_preview()
        assert not released.is_set()  # the GUI's thread came back while the slice was being fused
        release.set()
        qtbot.waitUntil(lambda: (widget.show_mda_preview(), "MDA fused" in viewer.layers)[1], timeout=30_000)
        thread.join(60)
        qtbot.waitUntil(widget.follower.handler.finished.is_set, timeout=60_000)
    widget.stop_following()


def test_a_follow_folder_that_is_a_file_unticks_the_box_and_says_why(qtbot, tmp_path):
    viewer, widget = dock(qtbot)
    (tmp_path / "afile").write_text("x")
    widget.follow_folder.setText(str(tmp_path / "afile"))
    widget.follow_box.setChecked(True)  # raised ValueError into napari and stayed ticked
    assert not widget.follow_box.isChecked() and widget.follower is None
    assert "is a file" in widget.status.text()


def test_a_follow_folder_that_cannot_be_made_unticks_the_box_and_says_why(qtbot):
    from tests.test_mda_handler import slide_core

    viewer, widget = dock(qtbot)
    widget.follow_folder.setText("/proc/ums-fusion-no-such/mda")
    with slide_core(["DAPI"]) as (core, _camera):
        tick_follow(widget, core)
        core.run_mda(useq.MDASequence(z_plan={"range": 4, "step": 1})).join(30)
        qtbot.waitUntil(lambda: not widget.follow_box.isChecked(), timeout=10_000)
    assert "could not be made" in widget.status.text() and "stopped following" in widget.status.text()
    assert widget.follower is None


def test_after_an_mda_the_preview_is_not_pushed_again_over_the_users_contrast_or_deletions(qtbot, tmp_path):
    from tests.test_mda_handler import slide_core

    viewer, widget = dock(qtbot)
    widget.follow_folder.setText(str(tmp_path))
    with slide_core(["DAPI"]) as (core, camera):
        camera.set_exposure(10.0)
        tick_follow(widget, core)
        core.run_mda(useq.MDASequence(z_plan={"range": 6, "step": 1})).join(60)
        qtbot.waitUntil(widget.follower.handler.finished.is_set, timeout=60_000)
        qtbot.waitUntil(lambda: "MDA fused" in viewer.layers, timeout=10_000)
        widget.show_mda_preview()  # the final image
        shown = widget.previews_shown
        viewer.layers["MDA fused"].contrast_limits = (0, 10)
        qtbot.wait(1000)  # three timer ticks
        assert tuple(viewer.layers["MDA fused"].contrast_limits) == (0, 10)
        viewer.layers.remove("MDA fused")
        viewer.layers.remove("MDA depth")
        qtbot.wait(1000)
        assert "MDA fused" not in viewer.layers and "MDA depth" not in viewer.layers
        assert widget.previews_shown == shown
        # The next MDA's stack is shown again.
        core.run_mda(useq.MDASequence(z_plan={"range": 6, "step": 1})).join(60)
        qtbot.waitUntil(lambda: "MDA fused" in viewer.layers, timeout=30_000)
    widget.stop_following()


def test_a_renamed_layer_is_offered_under_its_new_name_and_fuses(qtbot):
    viewer, widget = dock(qtbot)
    viewer.add_image(grey_stack(), name="stack")
    viewer.add_image(np.zeros((64, 80), np.uint8), name="grows")
    viewer.layers["stack"].name = "my stack"
    assert [widget.layer_box.itemText(i) for i in range(widget.layer_box.count())] == ["my stack"]
    widget.layer_box.setCurrentText("my stack")
    wait_until_fused(qtbot, widget, widget.fuse_selected())
    assert "my stack fused" in viewer.layers and widget.status.text().startswith("fused 7 slices of my stack")
    viewer.layers["grows"].data = grey_stack()  # a 2-D layer that becomes a stack
    assert "grows" in [widget.layer_box.itemText(i) for i in range(widget.layer_box.count())]


def test_result_names_taken_by_another_kind_of_layer_or_shape(qtbot):
    viewer, widget = dock(qtbot)
    stack = rendered(shape=(64, 80))
    viewer.add_image(grey_stack(), name="s")
    viewer.add_points(np.zeros((1, 2)), name="s fused")
    widget.layer_box.setCurrentText("s")
    wait_until_fused(qtbot, widget, widget.fuse_selected())
    assert widget.status.text().startswith("fused 7 slices of s") and "'s fused [2]'" in widget.status.text()
    assert viewer.layers["s fused"].__class__.__name__ == "Points" and viewer.layers["s fused [2]"].data.ndim == 2
    viewer.add_image(np.stack(stack.slices), name="c", rgb=True)
    widget.layer_box.setCurrentText("c")
    wait_until_fused(qtbot, widget, widget.fuse_selected())
    assert viewer.layers["c fused"].rgb
    viewer.layers.remove("c")
    viewer.add_image(np.stack([s[..., 0] for s in stack.slices]), name="c")
    widget.layer_box.setCurrentText("c")
    wait_until_fused(qtbot, widget, widget.fuse_selected())
    assert widget.status.text().startswith("fused")
    assert not viewer.layers["c fused"].rgb and viewer.layers["c fused"].data.shape == (64, 80)


def test_results_overlay_a_stack_placed_off_the_origin(qtbot):
    viewer, widget = dock(qtbot)
    viewer.add_image(grey_stack(), name="field", scale=(2.0, 0.5, 0.5), translate=(0.0, 1500.0, 3200.0))
    widget.layer_box.setCurrentText("field")
    wait_until_fused(qtbot, widget, widget.fuse_selected())
    for name in ("field fused", "field depth"):
        assert tuple(viewer.layers[name].translate) == (1500.0, 3200.0)
        assert tuple(viewer.layers[name].scale) == (0.5, 0.5)


def test_following_warms_the_fusion_kernels_off_the_gui_thread(qtbot, tmp_path):
    from tests.test_mda_handler import slide_core

    viewer, widget = dock(qtbot)
    widget.follow_folder.setText(str(tmp_path))
    with slide_core(["DAPI"]) as (core, _camera):
        tick_follow(widget, core)
        assert widget.warming is not None and widget.warming.name == "fusion-warm"
        widget.warming.join(120)
        assert not widget.warming.is_alive()
    widget.stop_following()
    assert widget.status.text() == "stopped following MDAs"


def test_a_multiscale_layer_fuses_its_full_resolution_level(qtbot):
    viewer, widget = dock(qtbot)
    stack = grey_stack()
    viewer.add_image([stack, stack[:, ::2, ::2].copy()], multiscale=True, name="pyr", scale=(2, 0.5, 0.5))
    widget.layer_box.setCurrentText("pyr")
    wait_until_fused(qtbot, widget, widget.fuse_selected())
    assert "full-resolution level" in widget.status.text() and widget.status.text().startswith("fused 7 slices")
    assert viewer.layers["pyr fused"].data.shape == (64, 80)


def test_a_window_larger_than_the_frame_is_said_so(qtbot):
    viewer, widget = dock(qtbot)
    viewer.add_image(grey_stack(), name="s")
    widget.window_box.setValue(255)
    widget.layer_box.setCurrentText("s")
    wait_until_fused(qtbot, widget, widget.fuse_selected())
    assert "The window (255 px) is larger than the frame (64 x 80 px)" in widget.status.text()


def test_the_status_says_when_the_mda_stack_is_fused_not_slices_so_far(qtbot, tmp_path):
    from tests.test_mda_handler import slide_core

    viewer, widget = dock(qtbot)
    widget.follow_folder.setText(str(tmp_path))
    with slide_core(["DAPI"]) as (core, _camera):
        tick_follow(widget, core)
        core.run_mda(useq.MDASequence(z_plan={"range": 4, "step": 1})).join(60)
        qtbot.waitUntil(widget.follower.handler.finished.is_set, timeout=60_000)
        qtbot.waitUntil(lambda: "stack, fused from 5 slices" in widget.status.text(), timeout=10_000)
    widget.stop_following()


def gated_stack(slices: int, open_from: int):
    """A lazy stack (as one opened from a slow disk) whose slices from ``open_from`` on are read, off the GUI's
    thread, only once the gate is opened: a fusion known to be mid-stack. Returns (dask array, gate, indices the
    fusion read, and ``armed``: set it before fusing)."""
    import threading

    import dask
    import dask.array as da

    gate, armed, read = threading.Event(), threading.Event(), []
    frames = grey_stack(slices)

    def read_plane(index):
        if not armed.is_set():  # (napari showing a slice as the layer is added: not the fusion)
            return frames[index]
        if index >= open_from:
            assert gate.wait(60), "the test never opened the gate"
        read.append(index)
        return frames[index]

    planes = [da.from_delayed(dask.delayed(read_plane, pure=False)(k), frames.shape[1:], dtype=frames.dtype)
              for k in range(slices)]
    return da.stack(planes), gate, armed, read


@pytest.mark.parametrize("how", ["cancelled", "closed", "taken out of its dock"])
def test_a_fusion_cancelled_or_whose_dock_closed_stops_and_adds_nothing(qtbot, how):
    """The widget had no cancel, and a fusion went on after its dock was closed, adding its layers to the viewer.
    Cancel (or the dock closed) stops it after the slice being fused; nothing is added."""
    from qtpy.QtWidgets import QDockWidget

    viewer, widget = dock(qtbot)
    holder = QDockWidget()
    holder.setWidget(widget)
    data, gate, armed, read = gated_stack(7, open_from=3)
    viewer.add_image(data, name="slow", contrast_limits=(0, 255))
    widget.layer_box.setCurrentText("slow")
    armed.set()
    worker = widget.fuse_selected()
    assert worker is not None and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: widget.progress.value() == 3, timeout=60_000)  # slice 3 is being read
    {"cancelled": widget.cancel_button.click, "closed": widget.close,
     "taken out of its dock": lambda: widget.setParent(None)}[how]()
    gate.set()
    qtbot.waitUntil(lambda: not worker.is_running and widget.fuse_button.isEnabled(), timeout=60_000)
    qtbot.wait(100)  # (a result already on its way would arrive now)
    assert "slow fused" not in viewer.layers and "slow depth" not in viewer.layers
    assert sorted(read) == [0, 1, 2, 3]  # (the slice being fused went in; none after it was read)
    assert widget.status.text() == "fusion of slow cancelled after 4 of 7 slices: nothing was added"
    assert not widget.cancel_button.isEnabled()
    if how != "taken out of its dock":
        widget.setParent(None)  # (the holder goes without it)


def test_a_fusion_cancelled_while_composing_says_so(qtbot, monkeypatch):
    """Cancel pressed once every slice was in, while the image was being composed, said "cancelled after 7 of 7
    slices", as if the fusion had been done: it says the image was being composed."""
    import threading

    from fusion.engine import StreamingFusion

    composing, gate = threading.Event(), threading.Event()
    compose = StreamingFusion.finish

    def gated_compose(engine, *args, **kwargs):  # (the real compose, once the test has pressed Cancel)
        composing.set()
        assert gate.wait(60), "the test never opened the gate"
        return compose(engine, *args, **kwargs)

    monkeypatch.setattr(StreamingFusion, "finish", gated_compose)
    viewer, widget = dock(qtbot)
    viewer.add_image(grey_stack(7), name="slow", contrast_limits=(0, 255))
    widget.layer_box.setCurrentText("slow")
    worker = widget.fuse_selected()
    assert worker is not None
    qtbot.waitUntil(lambda: composing.is_set() and widget.progress.value() == 7, timeout=60_000)
    widget.cancel_button.click()
    gate.set()
    qtbot.waitUntil(lambda: not worker.is_running and widget.fuse_button.isEnabled(), timeout=60_000)
    qtbot.wait(100)  # (a result already on its way would arrive now)
    assert "slow fused" not in viewer.layers
    assert widget.status.text() == ("fusion of slow cancelled while composing the image from its 7 slices: nothing "
                                    "was added")


def test_following_a_multi_camera_over_unlike_cameras_unticks_the_box_and_says_why(qtbot, tmp_path):
    """Its MDAs cannot run (Micro-Manager's Multi Camera takes one pixel type from all its cameras): the follower is
    refused as it starts, and the error went into napari as a traceback with the box left ticked."""
    from devices.micromanager import open_mmcore
    from tests.test_mda_sessions import multi_camera_config, multi_camera_properties

    core = open_mmcore(multi_camera_config(tmp_path))
    properties = multi_camera_properties((12, 12)) | {"Camera2": {"PixelType": "8bit", "BitDepth": 8}}
    for device, values in properties.items():
        for name, value in values.items():
            core.setProperty(device, name, value)
    viewer, widget = dock(qtbot)
    widget.follow_folder.setText(str(tmp_path / "mda"))
    tick_follow(widget, core)
    assert not widget.follow_box.isChecked() and widget.follower is None
    assert "not following MDAs" in widget.status.text() and "differ in pixel type" in widget.status.text()


def test_following_an_mda_whose_z_plan_is_finer_than_the_depth_map_holds_says_the_step_to_give(qtbot, tmp_path):
    """Steps of 1e-5 µm around 250 µm (the demo stage goes there exactly): the MDA was acquired whole and its stack's
    fusion then failed, with advice for a caller of the engine. The status says the step to give the z_plan, and the
    box stays ticked: the next MDA is followed."""
    from tests.devices_fixtures import small_demo_core

    core = small_demo_core()
    viewer, widget = dock(qtbot)
    widget.follow_folder.setText(str(tmp_path))
    tick_follow(widget, core)
    thread = core.run_mda(useq.MDASequence(stage_positions=[(0, 0, 250)], z_plan={"range": 0.00008, "step": 0.00001}))
    qtbot.waitUntil(lambda: widget.follower.handler.finished.is_set(), timeout=60_000)
    thread.join(60)
    qtbot.waitUntil(lambda: "MDA not fused" in widget.status.text(), timeout=10_000)
    assert "give it a step of at least 1.53e-05 µm" in widget.status.text()
    assert widget.follow_box.isChecked() and widget.follower is not None
    assert "MDA fused" not in viewer.layers and not list(tmp_path.glob("*.fused.tif"))
    widget.stop_following()
