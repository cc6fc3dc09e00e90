"""The napari plugin, headless: the reader on our outputs, the fusion dock widget, following an MDA."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile
import useq

pytest.importorskip("napari", reason="the napari extra is not installed (pip install .[napari])")
pytestmark = pytest.mark.usefixtures("qt_signalled_cores")  # (conftest: as napari-micromanager's core)

from acquisition.profile import load_profile  # noqa: E402
from acquisition.session import run_profile  # noqa: E402
from fusion.mda import StreamingFusionHandler  # noqa: E402
from napari_ums_fusion.reader import get_reader  # noqa: E402
from tests.conftest import REPO_ROOT, rendered  # noqa: E402
from tests.test_sessions import small  # noqa: E402


@pytest.fixture(scope="module")
def session_folder(tmp_path_factory):
    profile = small(load_profile(REPO_ROOT / "profiles" / "simulated.yaml"))
    return run_profile(profile, tmp_path_factory.mktemp("sessions"), progress=False).folder


def layers_by_name(path):
    reader = get_reader(str(path))
    assert reader is not None, path
    return {attributes["name"]: (data, attributes, kind) for data, attributes, kind in reader(str(path))}


def test_npe2_finds_the_plugin():
    from npe2 import PluginManager

    manager = PluginManager.instance()
    manager.discover()
    assert "ums-fusion" in {m.name for m in manager.iter_manifests()}


def test_session_folder_opens_as_stack_fused_and_depth_at_their_scale(session_folder):
    layers = layers_by_name(session_folder)
    name = session_folder.name
    stack, stack_attrs, _ = layers[f"{name} stack"]
    fused, fused_attrs, _ = layers[f"{name} fused"]
    depth, depth_attrs, _ = layers[f"{name} depth (µm)"]
    assert stack.ndim == 4 and stack_attrs["rgb"] and fused_attrs["rgb"]  # (z, y, x, rgb)
    assert stack_attrs["scale"] == (3.0, 0.65, 0.65) and stack_attrs["translate"][0] == -4.0
    assert fused_attrs["scale"] == pytest.approx((0.65, 0.65)) and depth_attrs["scale"] == pytest.approx((0.65, 0.65))
    assert depth_attrs["colormap"] == "viridis" and depth.dtype == np.float32
    assert np.nanmin(depth) >= -4.0 and np.nanmax(depth) <= 44.0  # NaN: no texture, no depth


def test_a_lens_session_stack_opens_along_its_focal_powers_as_its_depth_map_does(tmp_path):
    """OME's PositionZ is a length: a tunable lens's dpt live in the stack's description."""
    profile = small(load_profile(REPO_ROOT / "profiles" / "simulated-etl.yaml"))
    outcome = run_profile(profile, tmp_path, progress=False)
    powers = [s.z for s in outcome.report.slices]
    layers = layers_by_name(outcome.folder)
    _, stack_attrs, _ = layers[f"{outcome.folder.name} stack"]
    assert stack_attrs["metadata"]["focus_unit"] == "dpt" and stack_attrs["metadata"]["z_um"] == []
    assert stack_attrs["translate"][0] == pytest.approx(powers[0])
    assert stack_attrs["scale"][0] == pytest.approx(float(np.median(np.diff(powers))))
    assert f"{outcome.folder.name} depth (dpt)" in layers


def test_mda_folder_opens_every_stack_and_single_files_open_too(tmp_path):
    from tests.test_mda_handler import slide_core

    with slide_core(["DAPI", "FITC"]) as (core, _):
        core.mda.run(useq.MDASequence(channels=["DAPI", "FITC"], z_plan={"absolute": [0, 10, 20]}),
                     output=StreamingFusionHandler(tmp_path, pixel_size_um=0.5))
    layers = layers_by_name(tmp_path)
    assert set(layers) == {f"c{c}-{ch} {kind}" for c, ch in enumerate(["DAPI", "FITC"])
                           for kind in ("stack", "fused", "depth (µm)")}
    assert layers["c1-FITC stack"][1]["scale"] == (10.0, 0.5, 0.5)
    single = layers_by_name(tmp_path / "c0-DAPI.fused.tif")
    assert list(single) == ["c0-DAPI fused"]


def test_an_mdas_positions_open_where_the_stage_put_them(tmp_path):
    """Every position's stack, fused image and depth map opened at the origin, one over the other (their OME
    planes record PositionX/Y); a single stack file too."""
    from tests.test_mda_handler import slide_core

    with slide_core(["DAPI"]) as (core, _):
        core.mda.run(useq.MDASequence(stage_positions=[(0, 0, 10), (300, -150, 10)], z_plan={"range": 4, "step": 2}),
                     output=StreamingFusionHandler(tmp_path, pixel_size_um=0.5))
    layers = layers_by_name(tmp_path)
    for stack, (x_um, y_um) in (("p0", (0.0, 0.0)), ("p1", (300.0, -150.0))):
        assert tuple(layers[f"{stack} stack"][1]["translate"][-2:]) == pytest.approx((y_um, x_um))
        for kind in ("fused", "depth (µm)"):
            assert tuple(layers[f"{stack} {kind}"][1]["translate"]) == pytest.approx((y_um, x_um)), kind
    single = layers_by_name(tmp_path / "p1.stack.ome.tif")
    assert tuple(single["p1 stack"][1]["translate"][-2:]) == pytest.approx((-150.0, 300.0))


def test_reader_declines_what_is_not_ours(tmp_path):
    tifffile.imwrite(tmp_path / "other.tif", np.zeros((4, 4), np.uint8))
    assert get_reader(str(tmp_path / "other.tif")) is None
    assert get_reader(str(tmp_path)) is None


def viewer_model():
    """napari's viewer without its OpenGL canvas (no GL here): layers, dims, open() through the plugins."""
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    _initialize_plugins()  # (a napari.Viewer does this; the model alone does not: this test may run first)
    return ViewerModel()


def test_viewer_opens_a_session_folder_with_the_plugin(session_folder):
    viewer = viewer_model()
    viewer.open(str(session_folder), plugin="ums-fusion")
    assert {layer.name.split(" ", 1)[1] for layer in viewer.layers} == {"stack", "fused", "depth (µm)"}
    # Scale bars and coordinates in micrometres, as the files say (not "pixel").
    for layer in viewer.layers:
        assert all(str(unit) == "micrometer" for unit in layer.units), (layer.name, layer.units)


@pytest.mark.parametrize("channels", [2, 3])
def test_fluorescence_channels_open_as_channels_not_as_a_spatial_axis(tmp_path, channels):
    """A 2-channel fused image (YXC) opened as one layer was a slider of 96 steps over a 128 x 2 image; 3
    fluorescence channels opened as one RGB picture."""
    from fusion.outputs import write_image_tiff

    write_image_tiff(tmp_path / "cells.fused.tif", np.zeros((96, 128, channels), np.uint16), pixel_size_um=0.5,
                     colour=False)
    viewer = viewer_model()
    viewer.open(str(tmp_path / "cells.fused.tif"), plugin="ums-fusion")
    assert [layer.name for layer in viewer.layers] == [f"cells fused c{k}" for k in range(channels)]
    assert all(layer.data.shape == (96, 128) and tuple(layer.scale) == (0.5, 0.5) for layer in viewer.layers)


def test_widget_fuses_the_selected_stack_layer(qtbot):
    from napari_ums_fusion.widget import FusionWidget

    stack = rendered(shape=(96, 128))
    viewer = viewer_model()
    viewer.add_image(np.stack(stack.slices), name="sweep", rgb=True, scale=(3.0, 0.5, 0.5), translate=(-3.0, 0, 0))
    viewer.add_image(np.zeros((8, 8), np.uint8), name="flat")
    widget = FusionWidget(viewer)
    qtbot.addWidget(widget)
    assert [widget.layer_box.itemText(i) for i in range(widget.layer_box.count())] == ["sweep"]
    widget.layer_box.setCurrentText("sweep")
    worker = widget.fuse_selected()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    fused, depth = viewer.layers["sweep fused"], viewer.layers["sweep depth"]
    assert fused.rgb and fused.data.shape == stack.slices[0].shape and tuple(fused.scale) == (0.5, 0.5)
    known = depth.data[np.isfinite(depth.data)]  # NaN where there is no texture to tell depth by
    assert known.size and min(stack.z_um) <= known.min() and known.max() <= max(stack.z_um)
    assert widget.progress.value() == len(stack.slices)
    from fusion.metrics import psnr

    assert psnr(fused.data, stack.truth, 255) > max(psnr(s, stack.truth, 255) for s in stack.slices) + 3


def test_widget_result_layers_keep_the_units_of_the_stack_they_fuse(qtbot, session_folder):
    """A session's stack layer, in micrometres, was fused into layers at its scale but in pixels: their scale bars
    and coordinates disagreed with the stack's and with the reader's own fused and depth layers."""
    from napari_ums_fusion.widget import FusionWidget

    viewer = viewer_model()
    viewer.open(str(session_folder), plugin="ums-fusion")
    name = f"{session_folder.name} stack"
    widget = FusionWidget(viewer)
    qtbot.addWidget(widget)
    widget.layer_box.setCurrentText(name)
    wait_until_fused(qtbot, widget, widget.fuse_selected())
    read_fused = viewer.layers[f"{session_folder.name} fused"]
    for result in (viewer.layers[f"{name} fused"], viewer.layers[f"{name} depth"]):
        assert tuple(str(unit) for unit in result.units) == ("micrometer", "micrometer"), result.name
        assert tuple(result.units) == tuple(read_fused.units) == tuple(viewer.layers[name].units)[-2:]
        assert tuple(result.scale) == pytest.approx((0.65, 0.65))
    assert viewer.layers[f"{name} depth"].metadata == {"depth_unit": "um"}  # the depth values' unit, as before


def test_widget_says_why_a_single_image_cannot_be_fused(qtbot):
    from napari_ums_fusion.widget import FusionWidget

    viewer = viewer_model()
    widget = FusionWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.fuse_selected() is None and "open a stack first" in widget.status.text()


def test_widget_follows_an_mda_and_shows_the_fused_image_building_up(qtbot, tmp_path):
    from napari_ums_fusion.widget import FusionWidget
    from tests.test_mda_handler import slide_core

    viewer = viewer_model()
    widget = FusionWidget(viewer)
    qtbot.addWidget(widget)
    widget.follow_folder.setText(str(tmp_path))
    with slide_core(["DAPI", "FITC"]) as (core, camera):
        camera.set_exposure(30.0)  # slow enough for several previews per stack
        widget.follow_mda(core)    # what the "Follow MDA" box does with napari-micromanager's core
        thread = core.run_mda(useq.MDASequence(channels=["DAPI", "FITC"], z_plan={"bottom": -2, "top": 22, "step": 2}))
        qtbot.waitUntil(lambda: "MDA fused" in viewer.layers, timeout=30_000)
        qtbot.waitUntil(lambda: widget.follower.handler.finished.is_set(), timeout=60_000)
        thread.join(30)
        widget.show_mda_preview()
    assert widget.previews_shown >= 3
    assert len(list(tmp_path.glob("*.fused.tif"))) == 2
    last = tifffile.imread(tmp_path / "c1-FITC.fused.tif")
    np.testing.assert_array_equal(viewer.layers["MDA fused"].data, last)  # the final image replaced the preview
    widget.stop_following()


def test_widget_keeps_mda_outputs_under_the_home_folder_and_expands_a_tilde(qtbot, tmp_path, monkeypatch):
    """Not a temporary folder (lost at the next reboot, or at once where /tmp is in memory); nothing made before
    an MDA runs; a folder typed as ~/... goes where the user meant."""
    from napari_ums_fusion.widget import FusionWidget
    from tests.test_mda_handler import slide_core

    monkeypatch.setenv("HOME", str(tmp_path))
    widget = FusionWidget(viewer_model())
    qtbot.addWidget(widget)
    assert widget.follow_folder.text() == str(tmp_path / "ums-fusion" / "mda")
    assert not (tmp_path / "ums-fusion").exists()
    widget.follow_folder.setText("  ")
    with slide_core(["DAPI"]) as (core, _):
        widget.follow_mda(core)
        assert widget.follower is None and "name the folder" in widget.status.text()
        widget.follow_folder.setText("~/stacks")
        widget.follow_mda(core)
        assert str(tmp_path / "stacks") in widget.status.text()
        core.run_mda(useq.MDASequence(channels=["DAPI"], z_plan={"bottom": 0, "top": 8, "step": 2})).join(60)
        qtbot.waitUntil(lambda: widget.follower.handler.finished.is_set(), timeout=60_000)
    widget.stop_following()
    assert len(list((tmp_path / "stacks").glob("*.fused.tif"))) == 1
    assert not (tmp_path / "ums-fusion").exists()


def test_a_stack_never_finalized_opens_at_its_z_and_pixel_size(tmp_path):
    """After kill -9 (or a full disk) the stack has no OME-XML; each page's record still gives z and pixel size."""
    from fusion.stack_buffer import StackBuffer

    buffer = StackBuffer(tmp_path / "stack.ome.tif", pixel_size_um=0.65)
    for index in range(4):
        buffer.append(np.full((32, 48), index * 5, np.uint8), z=10.0 + 2.5 * index, time_s=index, exposure_ms=10.0)
    buffer._file.close()  # as if the process died: never finalized
    data, attributes, _ = layers_by_name(tmp_path / "stack.ome.tif")[f"{tmp_path.name} stack"]
    assert data.shape == (4, 32, 48)
    assert attributes["scale"] == pytest.approx((2.5, 0.65, 0.65)) and attributes["translate"][0] == 10.0
    assert attributes["units"] == ("um", "um", "um")


def test_fused_channels_keep_the_names_and_colours_the_stack_gave_them(tmp_path):
    from fusion.channel_look import ChannelLook, lut_towards
    from fusion.outputs import write_image_tiff

    look = ChannelLook(("DAPI", "FITC"), (lut_towards(0, 0, 255), lut_towards(0, 255, 0)))
    write_image_tiff(tmp_path / "cells.fused.tif", np.zeros((96, 128, 2), np.uint16), colour=False, channel_look=look)
    viewer = viewer_model()
    viewer.open(str(tmp_path / "cells.fused.tif"), plugin="ums-fusion")
    assert [layer.name for layer in viewer.layers] == ["cells fused DAPI", "cells fused FITC"]
    brightest = [tuple(layer.colormap.colors[-1][:3]) for layer in viewer.layers]
    assert brightest == [(0.0, 0.0, 1.0), (0.0, 1.0, 0.0)]


def wait_until_fused(qtbot, widget, worker):
    """Until the worker has finished and the widget has heard so (a worker that fails at once may have finished
    before a waitSignal would connect)."""
    assert worker is not None, widget.status.text()
    qtbot.waitUntil(lambda: widget.fuse_button.isEnabled() and not worker.is_running, timeout=60_000)


def saved_stack(path, slices, z, pixel_size_um=0.5):
    """A stack as a session or an MDA saves it (finalized: an OME-TIFF with each plane's z)."""
    from fusion.stack_buffer import StackBuffer

    buffer = StackBuffer(path, pixel_size_um=pixel_size_um)
    for index, (pixels, position) in enumerate(zip(slices, z)):
        buffer.append(pixels, z=float(position), time_s=float(index), exposure_ms=10.0)
    buffer.finalize({}, "um")
    return path


def test_files_without_a_pixel_size_open_in_pixels_and_record_none(tmp_path):
    """The fused and depth layers' metadata said pixel_size_um 1.0 for files that give none (their units said pixel)."""
    from fusion.outputs import write_depth_tiff, write_image_tiff

    write_image_tiff(tmp_path / "plain.fused.tif", np.zeros((16, 16), np.uint8))
    write_depth_tiff(tmp_path / "plain.depth.tif", np.zeros((16, 16), np.float32), "um")
    saved_stack(tmp_path / "plain.stack.ome.tif", [np.zeros((16, 16), np.uint8)] * 3, [0.0, 1.0, 2.0],
                pixel_size_um=None)
    layers = layers_by_name(tmp_path)
    for name in ("plain fused", "plain depth (µm)", "plain stack"):
        attributes = layers[name][1]
        assert attributes["metadata"]["pixel_size_um"] is None, name
        assert tuple(attributes["scale"])[-2:] == (1.0, 1.0) and tuple(attributes["units"])[-2:] == ("pixel",) * 2


def test_a_folder_of_one_slice_stacks_opens_them_as_images(tmp_path):
    """A session stopped after its first slice, or an MDA without a z-plan, saves stacks of one slice: the reader
    gave their 2-D images a z scale, napari refused them, and nothing in the folder opened."""
    from fusion.outputs import write_image_tiff

    for name, colour in (("t0_c0-DAPI", False), ("t0_rgb", True)):
        image = np.full((32, 48, 3) if colour else (32, 48), 7, np.uint8)
        saved_stack(tmp_path / f"{name}.stack.ome.tif", [image], [10.0])
        write_image_tiff(tmp_path / f"{name}.fused.tif", image, pixel_size_um=0.5, colour=colour)
    viewer = viewer_model()
    viewer.open(str(tmp_path), plugin="ums-fusion")
    assert sorted(layer.name for layer in viewer.layers) == sorted(
        f"{name} {kind}" for name in ("t0_c0-DAPI", "t0_rgb") for kind in ("stack", "fused"))
    for name, shape in (("t0_c0-DAPI", (32, 48)), ("t0_rgb", (32, 48, 3))):
        stack = viewer.layers[f"{name} stack"]
        assert stack.data.shape == shape and stack.ndim == 2 and tuple(stack.scale) == (0.5, 0.5)
        assert stack.metadata["focus_positions"] == [10.0]  # (its z, which a 2-D layer cannot show)


def test_a_damaged_file_in_a_folder_is_skipped_with_a_warning_and_the_rest_opens(tmp_path):
    from fusion.outputs import write_image_tiff

    (tmp_path / "broken.stack.ome.tif").write_bytes(b"II*\x00 not a TIFF after all")
    write_image_tiff(tmp_path / "good.fused.tif", np.zeros((16, 16), np.uint8), pixel_size_um=0.5, colour=False)
    viewer = viewer_model()
    with pytest.warns(UserWarning, match=r"broken\.stack\.ome\.tif was not opened"):
        viewer.open(str(tmp_path), plugin="ums-fusion")
    assert [layer.name for layer in viewer.layers] == ["good fused"]


def test_a_stack_at_uneven_z_says_so_and_the_widget_fuses_it_at_its_true_z(tmp_path, qtbot):
    """An MDA's ``absolute: [3, 1, 7, 2]`` z-plan: napari spaces a layer's slices evenly, so the reader showed them
    at 3, 1, -1, -3 (scale -2, translate 3) and the widget fused a depth map from -3 to 3; the stack's own runs
    1..7. The widget fuses at the positions the layer's metadata keeps, as the MDA handler fused them."""
    from fusion.engine import StreamingFusion
    from napari_ums_fusion.widget import FusionWidget

    sweep = rendered(shape=(64, 96), color=False, depth_um=6.0, step_um=1.0)  # z -1..7
    z = [3.0, 1.0, 7.0, 2.0]
    slices = [sweep.slices[list(sweep.z_um).index(position)] for position in z]
    path = saved_stack(tmp_path / "p0.stack.ome.tif", slices, z)
    viewer = viewer_model()
    with pytest.warns(UserWarning, match=r"\(3, 1, 7, 2 µm\) are not evenly spaced.*focus_positions"):
        viewer.open(str(path), plugin="ums-fusion")
    layer = viewer.layers["p0 stack"]
    assert layer.metadata["focus_positions"] == z
    widget = FusionWidget(viewer)
    qtbot.addWidget(widget)
    widget.layer_box.setCurrentText("p0 stack")
    worker = widget.fuse_selected()
    wait_until_fused(qtbot, widget, worker)
    depth = viewer.layers["p0 stack depth"].data
    known = depth[np.isfinite(depth)]
    assert known.size and known.min() >= 1.0 and known.max() <= 7.0 and known.max() > 3.0
    engine = StreamingFusion(slices[0].shape, slices[0].dtype, widget.settings())
    for pixels, position in zip(slices, z):
        engine.push(pixels, position)
    np.testing.assert_allclose(depth, engine.finish().depth, equal_nan=True)
    assert "not evenly spaced" in widget.status.text()


@pytest.mark.parametrize("z, scale, translate", [([0.0, 2.0, 4.0, 6.0], 2.0, 0.0),
                                                 ([0.0, 2.1, 3.9, 6.0], 2.0, 0.0),     # a stage's jitter
                                                 ([0.0, 1.0, 2.0, 6.0], 2.0, 0.0),     # in order, uneven
                                                 ([3.0, 1.0, 7.0, 2.0], 1.0, 0.0)])   # out of order
def test_stack_z_placement_is_even_where_the_positions_are(tmp_path, z, scale, translate):
    from napari_ums_fusion.layers import stack_layer

    path = saved_stack(tmp_path / "s.stack.ome.tif", [np.zeros((8, 8), np.uint8)] * len(z), z)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, attributes, _ = stack_layer(path, "s")
    uneven = z in ([0.0, 1.0, 2.0, 6.0], [3.0, 1.0, 7.0, 2.0])
    assert any("not evenly spaced" in str(w.message) for w in caught) == uneven
    assert attributes["scale"][0] == pytest.approx(scale) and attributes["translate"][0] == pytest.approx(translate)
    assert attributes["metadata"]["focus_positions"] == z


def test_widget_holds_a_layers_leading_axes_where_the_viewers_sliders_are(qtbot):
    """napari lines a layer's axes up with the viewer's last ones: with a 5-D layer in the viewer, a 4-D (c, z, y,
    x) layer's channel is the viewer's axis 1. The widget took the viewer's axis 0 and fused channel 0."""
    from napari_ums_fusion.widget import FusionWidget

    rng = np.random.default_rng(0)
    viewer = viewer_model()
    viewer.add_image(np.zeros((3, 2, 4, 64, 64), np.uint8), name="five")
    channels = np.zeros((3, 4, 64, 64), np.uint8)
    channels[2] = rng.integers(0, 255, (4, 64, 64))
    viewer.add_image(channels, name="cz", scale=(1.0, 2.0, 0.5, 0.5))
    viewer.dims.set_current_step(0, 0)
    viewer.dims.set_current_step(1, 2)
    widget = FusionWidget(viewer)
    qtbot.addWidget(widget)
    widget.layer_box.setCurrentText("cz")
    worker = widget.fuse_selected()
    wait_until_fused(qtbot, widget, worker)
    assert viewer.layers["cz fused"].data.max() > 0  # channel 2, the only one with anything in it


@pytest.mark.parametrize("dtype, fused_dtype, note", [(np.int16, np.float32, "int16 pixels are fused as float32"),
                                                      (np.int8, np.float32, "int8 pixels are fused as float32"),
                                                      (np.bool_, np.uint8, "bool pixels are fused as uint8")])
def test_widget_fuses_the_pixel_types_refusion_converts_and_says_so(qtbot, dtype, fused_dtype, note):
    """The widget refused int8, int16 and bool ("unsupported pixel type int16") where --refuse converts them."""
    from napari_ums_fusion.widget import FusionWidget

    rng = np.random.default_rng(1)
    data = rng.integers(-100, 4000, (4, 64, 64)) if dtype != np.bool_ else rng.random((4, 64, 64)) > 0.5
    viewer = viewer_model()
    viewer.add_image(np.asarray(data).astype(dtype), name="odd")
    widget = FusionWidget(viewer)
    qtbot.addWidget(widget)
    worker = widget.fuse_selected()
    assert worker is not None, widget.status.text()
    wait_until_fused(qtbot, widget, worker)
    assert viewer.layers["odd fused"].data.dtype == fused_dtype
    assert "fused 4 slices of odd" in widget.status.text() and note in widget.status.text()


def test_widget_says_why_a_fusion_failed_in_its_status_instead_of_raising(qtbot):
    """A layer whose pixels cannot be read (a lazy array over a disk that went away): the worker's error came back
    through superqt's own "errored" connection and was raised in Qt's thread (a plain Qt host aborts; pytest-qt
    fails the test)."""
    import dask
    import dask.array as da

    from napari_ums_fusion.widget import FusionWidget

    disk = {"there": True}

    def read_plane():
        if not disk["there"]:
            raise OSError("the disk went away")
        return np.zeros((32, 32), np.uint16)

    planes = [da.from_delayed(dask.delayed(read_plane, pure=False)(), (32, 32), dtype=np.uint16) for _ in range(3)]
    viewer = viewer_model()
    viewer.add_image(da.stack(planes), name="remote", contrast_limits=(0, 1))
    disk["there"] = False
    widget = FusionWidget(viewer)
    qtbot.addWidget(widget)
    worker = widget.fuse_selected()
    wait_until_fused(qtbot, widget, worker)
    assert widget.status.text() == "fusion of remote failed: OSError: the disk went away"
    assert widget.fuse_button.isEnabled() and "remote fused" not in viewer.layers


def test_widget_says_so_when_a_lazily_opened_stack_went_away(qtbot, tmp_path):
    from napari_ums_fusion.widget import FusionWidget

    path = saved_stack(tmp_path / "gone.stack.ome.tif", [np.full((32, 32), k, np.uint16) for k in range(3)],
                       [0.0, 1.0, 2.0])
    viewer = viewer_model()
    viewer.open(str(path), plugin="ums-fusion")
    path.unlink()
    widget = FusionWidget(viewer)
    qtbot.addWidget(widget)
    worker = widget.fuse_selected()
    wait_until_fused(qtbot, widget, worker)
    assert "fusion of gone stack failed" in widget.status.text() and "gone.stack.ome.tif" in widget.status.text()
    assert widget.fuse_button.isEnabled() and "gone stack fused" not in viewer.layers


def test_a_raw_stack_opens_lazily(tmp_path):
    """Opening a folder read the whole raw stack (a 391 MB one peaked at 641 MB): its pages are read when shown."""
    import tracemalloc

    from napari_ums_fusion.reader import read

    slices = [np.full((512, 512), k, np.uint16) for k in range(40)]  # 20 MB
    path = saved_stack(tmp_path / "big.stack.ome.tif", slices, np.arange(40.0))
    tracemalloc.start()
    try:
        [(data, attributes, _)] = read(str(path))
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < 2_000_000, peak_bytes
    assert not isinstance(data, np.ndarray) and data.shape == (40, 512, 512) and data.dtype == np.uint16
    assert attributes["scale"] == pytest.approx((1.0, 0.5, 0.5))
    np.testing.assert_array_equal(np.asarray(data[17]), slices[17])
    np.testing.assert_array_equal(np.asarray(data[::13, :3, :3]), np.stack(slices[::13])[:, :3, :3])


def fused_in_widget(qtbot, data, name, **attributes):
    """The widget's status after fusing ``data`` added as layer ``name``, and the viewer."""
    from napari_ums_fusion.widget import FusionWidget

    viewer = viewer_model()
    viewer.add_image(data, name=name, **attributes)
    widget = FusionWidget(viewer)
    qtbot.addWidget(widget)
    widget.layer_box.setCurrentText(name)
    wait_until_fused(qtbot, widget, widget.fuse_selected())
    return widget.status.text(), viewer


def test_widget_says_what_refusion_says_of_blank_slices_and_of_one_slice(qtbot):
    """An all-zero stack said "fused 5 slices of zeros." and nothing of the depth map meaning nothing; one slice
    said "fused 1 slices of one." and nothing of there being nothing to fuse."""
    status, _ = fused_in_widget(qtbot, np.zeros((5, 64, 64), np.uint8), "zeros")
    assert status == ("fused 5 slices of zeros. zeros: no focus information: all 5 slices are blank; the fused image "
                      "is their average and the depth map says nothing")
    one = np.random.default_rng(0).integers(0, 255, (1, 64, 64)).astype(np.uint8)
    status, viewer = fused_in_widget(qtbot, one, "one")
    assert status == "fused 1 slice of one. Only one slice: it is shown as it is, with nothing to fuse."
    np.testing.assert_array_equal(viewer.layers["one fused"].data, one[0])


def test_widget_depth_of_a_layer_without_physical_scale_is_in_slice_indices(qtbot):
    """A layer in pixels (napari's default: scale 1, no unit) got a depth layer that said µm of slice indices."""
    stack = rendered(shape=(96, 128))
    status, viewer = fused_in_widget(qtbot, np.stack(stack.slices), "plain", rgb=True)
    depth = viewer.layers["plain depth"]
    assert depth.metadata == {"depth_unit": "slice index"}, status
    known = depth.data[np.isfinite(depth.data)]
    assert known.size and known.min() >= 0 and known.max() <= len(stack.slices) - 1
    # Given a length unit, its positions stand: depth in µm, within the layer's z.
    _, viewer = fused_in_widget(qtbot, np.stack(stack.slices), "um", rgb=True, scale=(3.0, 0.5, 0.5),
                                translate=(-3.0, 0, 0), units=("um", "um", "um"))
    depth = viewer.layers["um depth"]
    known = depth.data[np.isfinite(depth.data)]
    assert depth.metadata == {"depth_unit": "um"} and known.min() >= -3.0 and known.max() > len(stack.slices)


def test_a_lens_stack_s_z_step_is_rounded_as_positions_are(tmp_path):
    """A tunable lens's step of 0.3 dpt was the scale 0.30000000000000004."""
    from fusion.stack_buffer import StackBuffer
    from napari_ums_fusion.layers import stack_layer

    path = tmp_path / "lens.stack.ome.tif"
    buffer = StackBuffer(path)
    for index, power in enumerate([0.2, 0.5, 0.8]):  # ((0.8 - 0.2) / 2 = 0.30000000000000004)
        buffer.append(np.zeros((8, 8), np.uint8), z=power, time_s=float(index), exposure_ms=10.0, unit="dpt")
    buffer.finalize({}, "dpt")
    _, attributes, _ = stack_layer(path, "lens")
    assert attributes["scale"][0] == 0.3 and attributes["metadata"]["focus_unit"] == "dpt"


def test_widget_depth_of_a_layer_in_millimetres_is_in_micrometres(qtbot):
    """A layer whose z was in mm got a depth map of its z in mm said to be µm: depths 1000 times too small."""
    stack = rendered(shape=(96, 128))
    step_mm = 0.003
    status, viewer = fused_in_widget(qtbot, np.stack(stack.slices), "mm", rgb=True, scale=(step_mm, 0.5, 0.5),
                                     units=("mm", "um", "um"))
    depth = viewer.layers["mm depth"]
    known = depth.data[np.isfinite(depth.data)]
    top_um = step_mm * 1000 * (len(stack.slices) - 1)
    assert depth.metadata == {"depth_unit": "um"}
    assert known.min() >= -0.01 and top_um / 2 < known.max() <= top_um + 0.01, (known.min(), known.max())
    assert "Its z scale is in millimeter: fused in µm, and the depth map is in µm." in status


def test_widget_depth_of_a_layer_in_another_kind_of_unit_is_in_that_unit(qtbot):
    """A z axis in seconds (a time series fused as if a focus sweep) is no length: kept as it is, and said so."""
    stack = rendered(shape=(96, 128))
    _, viewer = fused_in_widget(qtbot, np.stack(stack.slices), "timed", rgb=True, scale=(2.0, 0.5, 0.5),
                                units=("s", "um", "um"))
    depth = viewer.layers["timed depth"]
    assert depth.metadata == {"depth_unit": "second"}
    assert np.nanmax(depth.data) <= 2.0 * (len(stack.slices) - 1)


def test_widget_refuses_a_z_step_the_depth_map_cannot_hold(qtbot):
    """A z scale of 1e-300 gave a depth map of 0 everywhere: the depth map's float32 cannot tell the slices apart."""
    from napari_ums_fusion.widget import FusionWidget

    viewer = viewer_model()
    viewer.add_image(grey_frames(5), name="tiny", scale=(1e-300, 0.5, 0.5), units=("um", "um", "um"))
    widget = FusionWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.fuse_selected() is None
    assert widget.status.text() == (
        "layer 'tiny': its slices' z (0, 1e-300, 2e-300, ... µm: a step of 1e-300 µm) cannot be told apart in the "
        "depth map, which holds z as float32 (about 7 significant digits): check the layer's z scale and unit, or "
        "place its slices nearer 0")
    assert "tiny depth" not in viewer.layers
    # Positions far from 0 with a step finer than float32 holds there: the same.
    viewer.layers["tiny"].scale, viewer.layers["tiny"].translate = (1e-3, 0.5, 0.5), (1e5, 0, 0)
    assert widget.fuse_selected() is None and "a step of 0.001 µm" in widget.status.text()


def test_widget_says_float64_values_beyond_float32_s_range_are_so_not_infinity(qtbot):
    """A float64 layer of values up to 1e300 (finite) failed with 'slice 0 holds infinity', which it does not."""
    data = np.random.default_rng(0).random((4, 64, 64)) * 1e300
    status, viewer = fused_in_widget(qtbot, data, "huge")
    assert status.startswith("fusion of huge failed: ValueError: huge: slice 0 (counting from 0) holds values up to "
                             "1e+300, beyond float32's range (±3.4e+38), which fusion computes in: scale the "
                             "layer's values down (divide them by 1e263, say)"), status
    assert "infinity" not in status and "huge fused" not in viewer.layers
    # Within float32's range, float64 fuses as before.
    status, viewer = fused_in_widget(qtbot, data / 1e290, "large")
    assert status.startswith("fused 4 slices of large.") and "large fused" in viewer.layers


def grey_frames(count: int) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 255, (count, 64, 64)).astype(np.uint8)
