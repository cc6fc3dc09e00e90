"""What a Python caller of the engine and of refuse_stack sees: settings, shapes, byte orders, threads, a second
finish(), flat stacks' depth, float stacks on a large offset (found by a hostile API round)."""
from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest
import tifffile

from fusion import FusionSettings, StreamingFusion
from fusion.errors import SliceMismatchError, StackLayoutError
from fusion.refuse import refuse_stack

COMPOSITIONS = ("pyramid", "blend", "pick")


def ramp_stack(n: int = 6, height: int = 64, width: int = 80, seed: int = 0) -> list[np.ndarray]:
    """Float slices 0..1: a noisy texture whose sharp column band moves across x with the slice."""
    rng = np.random.default_rng(seed)
    texture = rng.random((height, width))
    slices = []
    for k in range(n):
        blurred = texture.copy()
        for _ in range(3):  # a cheap blur, everywhere but the slice's band
            blurred = (blurred + np.roll(blurred, 1, 0) + np.roll(blurred, 1, 1) + np.roll(blurred, -1, 1)) / 4
        band = slice(k * width // n, (k + 1) * width // n)
        blurred[:, band] = texture[:, band]
        slices.append((blurred + rng.normal(0, 0.005, blurred.shape)).astype(np.float32))
    return slices


def as_uint16(slices: list[np.ndarray]) -> list[np.ndarray]:
    return [np.clip(s * 60000, 0, 65535).astype(np.uint16) for s in slices]


def fuse(slices, settings: FusionSettings | None = None, z=None):
    engine = StreamingFusion(slices[0].shape, slices[0].dtype, settings)
    for k, pixels in enumerate(slices):
        engine.push(pixels, float(k) if z is None else z[k])
    return engine.finish()


# -- settings are checked, by name, as they are made ---------------------------------------------------------------

@pytest.mark.parametrize("given, error, words", [
    ({"mode_filter_px": 2.5}, ValueError, "mode_filter_px must be a whole number of pixels, got 2.5"),
    ({"window_px": 4.5}, ValueError, "window_px must be a whole number of pixels, got 4.5"),
    ({"window_px": "7"}, TypeError, "window_px must be a whole number of pixels, got str '7'"),
    ({"window_px": True}, TypeError, "window_px must be a whole number of pixels, got bool True"),
    ({"sharpness": "32"}, TypeError, "sharpness must be a number, got str '32'"),
    ({"feather_px": "2"}, TypeError, "feather_px must be a number, got str '2'"),
    ({"pyramid": None}, TypeError, "pyramid must be a PyramidWeighting or a mapping of its fields, got NoneType"),
    ({"composition": None}, TypeError, "composition must be a string, got NoneType None"),
    ({"device": 0}, TypeError, "device must be a string, got int 0"),
])
def test_a_setting_of_the_wrong_kind_is_named_when_the_settings_are_made(given, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        FusionSettings(**given)


@pytest.mark.parametrize("composition", COMPOSITIONS)
def test_whole_numbers_of_any_kind_are_widths_and_fuse(composition):
    # numpy ints and whole floats (as YAML and JSON give them) are kept as ints: the kernels and reports take them.
    settings = FusionSettings(composition=composition, window_px=np.int64(7), mode_filter_px=5.0,
                              feather_px=np.float32(1.5), sharpness=np.float32(16))
    assert (settings.window_px, settings.mode_filter_px) == (7, 5)
    assert type(settings.window_px) is int and type(settings.mode_filter_px) is int
    assert type(settings.sharpness) is float and type(settings.feather_px) is float
    assert settings.to_json()["window_px"] == 7  # (a numpy int made json.dumps fail)
    result = fuse(as_uint16(ramp_stack(n=3)), settings)
    assert result.fused.shape == (64, 80)


def test_settings_from_a_mapping_name_an_unknown_key():
    assert FusionSettings.from_mapping({"method": "laplacian", "composition": "pick"}) == \
        FusionSettings(measure="laplacian", composition="pick")
    with pytest.raises(ValueError, match="unknown fusion setting 'windw_px'; known: .*window_px"):
        FusionSettings.from_mapping({"windw_px": 7})


# -- refuse_stack takes a mapping, and says where its warnings go ---------------------------------------------------

def test_refuse_stack_takes_settings_as_a_mapping(tmp_path):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, np.stack(as_uint16(ramp_stack(n=4))), photometric="minisblack")
    report = refuse_stack(path, tmp_path / "out", settings={"composition": "pick", "mode_filter_px": 0},
                          progress=False)
    assert report.settings["composition"] == "pick" and report.settings["mode_filter_px"] == 0
    with pytest.raises(TypeError, match="settings must be a FusionSettings or a mapping of its fields, got str"):
        refuse_stack(path, tmp_path / "out2", settings="pick", progress=False)


def test_refuse_stack_aligns_as_refuse_does_where_its_settings_do_not_say(tmp_path):
    """Python's refuse_stack and the command line's --refuse fuse a saved stack alike: a saved stack's origin is
    unknown, so alignment is auto (fusion.align.defaults); it was off from Python (a tunable lens's stack was not
    aligned at all). A FusionSettings says everything, and is taken as it is."""
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, np.stack(as_uint16(ramp_stack(n=4))), photometric="minisblack")
    given = {None: "auto", "mapping": "auto", "mapping with align": "off", "FusionSettings()": "off"}
    settings = {None: None, "mapping": {"composition": "pick"}, "mapping with align": {"align": "off"},
                "FusionSettings()": FusionSettings()}
    for n, (case, align) in enumerate(given.items()):
        report = refuse_stack(path, tmp_path / f"out{n}", settings=settings[case], progress=False)
        assert report.settings["align"] == align, case


def test_refuse_stacks_docstring_says_its_warnings_are_in_the_report():
    assert "report's ``warnings``" in refuse_stack.__doc__ and "not shown" in refuse_stack.__doc__


# -- frame shapes --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5.5, 7), (4, 4, 0), ("4", 4), (0, 10)])
def test_a_frame_shape_that_is_not_whole_positive_numbers_is_refused_at_once(shape):
    with pytest.raises(ValueError, match="frame shape must be"):
        StreamingFusion(shape, np.uint16)


def test_numpy_integers_make_a_shape():
    assert StreamingFusion((np.int64(8), np.int32(9)), np.uint16).shape == (8, 9)


@pytest.mark.parametrize("shape", [(3, 512, 512), (1, 64, 80), (4, 100, 120), (32, 40, 33)])
def test_a_channels_first_frame_is_refused_saying_how_to_turn_it(shape):
    """A (C, H, W) slice was fused without a word as a frame C pixels high with W channels."""
    with pytest.raises(ValueError, match=r"reads as channels first \(C, H, W\).* pass np.moveaxis\(pixels, 0, -1\)"):
        StreamingFusion(shape, np.uint8)


@pytest.mark.parametrize("shape", [(16, 200, 40), (1, 64, 80)])
def test_a_low_frame_with_many_channels_is_fused_once_its_caller_says_its_channels_are_last(shape):
    """A frame 16 pixels high with 40 spectral channels reads as channels first: it was refused, with no way to say
    what it is. The refusal says how, and with ``channels_last=True`` it is fused as (H, W, C)."""
    with pytest.raises(ValueError, match=r"If it is a frame \d+ pixels high with \d+ channels, say so: "
                                         r"StreamingFusion\(shape, dtype, channels_last=True\)"):
        StreamingFusion(shape, np.uint16)
    rng = np.random.default_rng(0)
    engine = StreamingFusion(shape, np.uint16, channels_last=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (frames too small for some windows say so)
        for _ in range(3):
            engine.push(rng.integers(0, 4000, shape, dtype=np.uint16))
        assert engine.finish().fused.shape == shape


def test_a_frame_said_to_be_channels_first_is_refused_saying_how_to_turn_it():
    with pytest.raises(ValueError, match=r"is channels first \(C, H, W\).*make it for shape \(512, 640, 3\) and "
                                         r"push np.moveaxis\(pixels, 0, -1\)"):
        StreamingFusion((3, 512, 640), np.uint8, channels_last=False)


def test_a_saved_stack_whose_axes_say_channels_last_is_fused_however_low_its_frames(tmp_path):
    """A TIFF whose axes say ZYXC, 16 pixels high with 40 channels: --refuse refused it as channels first and told
    the user to call np.moveaxis. A reader knows its axes: the stack is fused, its 40 channels kept."""
    path = tmp_path / "spectral.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(0, 4000, (4, 16, 200, 40), dtype=np.uint16), photometric="minisblack",
                     planarconfig="contig", metadata={"axes": "ZYXC"})
    report = refuse_stack(path, tmp_path / "out", progress=False)
    fused = tifffile.imread(report.outputs["fused"])
    assert sorted(fused.shape) == sorted((16, 200, 40))   # (written with its channels in pages of their own)


def test_a_folder_of_planar_rgb_tiffs_is_fused_as_rgb(tmp_path):
    """A TIFF page stored planar (its samples one plane after another) was read as (3, H, W), and a folder of them
    was refused as channels first with advice for code that pushes slices."""
    rng = np.random.default_rng(0)
    for k in range(3):
        tifffile.imwrite(tmp_path / f"image_{k}.tif", rng.integers(0, 255, (3, 64, 80), dtype=np.uint8),
                         photometric="rgb", planarconfig="separate")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (too small to align, little focus information: random pixels)
        report = refuse_stack(tmp_path, tmp_path / "out", progress=False)
    assert tifffile.imread(report.outputs["fused"]).shape == (64, 80, 3)


def test_a_tiff_holding_a_volume_per_page_is_refused_not_fused_as_channels(tmp_path):
    """A page of 8 planes of 64 x 64 (TIFF's ImageDepth, axes ZYX) was fused as a frame 8 pixels high with 64
    channels, and reported a success, once saved stacks' frames were taken as (H, W, C) (a regression round)."""
    path = tmp_path / "volumes.tif"
    tifffile.imwrite(path, np.zeros((5, 8, 64, 64), np.uint8), volumetric=True)
    folder = tmp_path / "folder"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", np.zeros((8, 64, 64), np.uint8), volumetric=True)
    tifffile.imwrite(folder / "b.tif", np.zeros((8, 64, 64), np.uint8), volumetric=True)
    for stack in (path, folder):
        with pytest.raises(StackLayoutError, match=r"each page holds ZYX 8x64x64, not one frame \(a volume per "
                                                   r"page\); save the stack one 2-D frame per page"):
            refuse_stack(stack, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_more_channels_than_the_pyramid_takes_are_refused_plainly_and_blend_fuses_them(tmp_path):
    """A frame of 200 channels failed deep in the first slice's fold with an OpenCV assertion ("unexpected error"),
    once the engine took it as (H, W, C) as told (a regression round)."""
    path = tmp_path / "spectral.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(0, 4000, (4, 16, 256, 200), dtype=np.uint16), photometric="minisblack",
                     planarconfig="contig", metadata={"axes": "ZYXC"})
    with pytest.raises(StackLayoutError, match=r"spectral.tif: a frame of 200 channels; the pyramid composition "
                                               r"takes at most 128 \(OpenCV's filters\): fuse it with composition "
                                               r"'blend'"):
        refuse_stack(path, tmp_path / "out", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (too small to align, little focus information: random pixels)
        report = refuse_stack(path, tmp_path / "out", {"composition": "blend"}, progress=False)
    assert sorted(tifffile.imread(report.outputs["fused"]).shape) == sorted((16, 256, 200))


@pytest.mark.parametrize("shape", [(64, 80, 2), (64, 80, 5), (16, 200, 40)])
def test_pick_of_pushed_slices_with_separate_channels_copies_each_pixel_from_its_chosen_slice(shape):
    """Pushed without a source, "pick" keeps the slices in a temporary TIFF, which wrote an (H, W, 2) or (H, W, 5)
    frame as H pages of W x C: finish() failed with an IndexError."""
    rng = np.random.default_rng(0)
    slices = [rng.integers(0, 255, shape, dtype=np.uint8) for _ in range(3)]
    engine = StreamingFusion(shape, np.uint8, FusionSettings(composition="pick"), channels_are_colour=False,
                             channels_last=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (random pixels: little focus information)
        for k, pixels in enumerate(slices):
            engine.push(pixels, z=float(k))
        result = engine.finish()
    chosen = np.take_along_axis(np.stack(slices), result.decision[None, :, :, None], axis=0)[0]
    assert np.array_equal(result.fused, chosen)


@pytest.mark.parametrize("shape", [(3, 5), (1, 200), (3, 5, 3), (2, 2, 4), (64, 80, 32), (33, 40, 40), (5, 7, 1)])
def test_small_frames_and_channels_as_many_as_a_detector_has_are_fused(shape):
    rng = np.random.default_rng(0)
    slices = [rng.integers(0, 255, shape, dtype=np.uint8) for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (frames too small for some windows say so)
        assert fuse(slices).fused.shape == shape


# -- pixel types the engine does not take: how to convert them --------------------------------------------------

@pytest.mark.parametrize("dtype, advice", [
    (np.int32, r"push each slice as pixels.astype\(np.float32\) \(values beyond 2\^24 = 16777216 keep 7 significant "
               r"digits\)"),
    (np.uint32, r"pixels.astype\(np.float32\)"), (np.int16, r"pixels.astype\(np.float32\), as --refuse does"),
    (np.float16, r"pixels.astype\(np.float32\)"), (np.float64, r"pixels.astype\(np.float32\) \(7 significant"),
    (np.bool_, r"make the engine for uint8 and push each slice as pixels.astype\(np.uint8\)"),
])
def test_an_unsupported_pixel_type_says_how_to_convert(dtype, advice):
    """(It said which types it takes, not how to get there; the engine converts nothing itself.)"""
    with pytest.raises(ValueError, match=rf"unsupported pixel type {np.dtype(dtype)}; use one of .*{advice}"):
        StreamingFusion((8, 8), dtype)


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.int16, np.int32, np.uint32, np.int64, np.float16, np.float64])
def test_the_engine_s_advice_is_what_a_saved_stack_s_reader_does(tmp_path, dtype):
    """The engine restated the readers' conversion rule in words of its own; both now come from one rule."""
    from fusion.readers.base import conversion_note, convert_dtype

    converted = convert_dtype(np.zeros((8, 8), dtype), tmp_path, "slice 0").dtype
    with pytest.raises(ValueError) as refused:
        StreamingFusion((8, 8), dtype)
    said = str(refused.value)
    assert f"make the engine for {converted} and push each slice as pixels.astype(np.{converted})" in said
    if converted == np.float32:
        assert said.endswith(conversion_note(np.dtype(dtype), tmp_path).split("is float32")[1] + ", as --refuse does")


def test_a_slice_of_another_type_says_how_to_convert():
    engine = StreamingFusion((8, 8), np.float32)
    with pytest.raises(SliceMismatchError, match=r"is \(8, 8\) float64, but the stack is \(8, 8\) float32: push "
                                                 r"pixels.astype\(np.float32\)$"):
        engine.push(np.zeros((8, 8), np.float64))
    engine = StreamingFusion((8, 8), np.uint8)
    with pytest.raises(SliceMismatchError, match=r"uint8: push pixels.astype\(np.uint8\) where its values fit, or "
                                                 r"make the engine StreamingFusion\(shape, np.float32\)"):
        engine.push(np.zeros((8, 8), np.uint16))


# -- big-endian pixels ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("declared", [np.uint16, ">u2"])
def test_big_endian_frames_fuse_as_their_values(declared):
    slices = as_uint16(ramp_stack(n=4))
    expected = fuse(slices)
    engine = StreamingFusion(slices[0].shape, declared)
    for k, pixels in enumerate(slices):
        engine.push(pixels.astype(">u2"), float(k))
    result = engine.finish()
    assert result.fused.dtype == np.dtype(np.uint16)
    assert np.array_equal(result.fused, expected.fused)
    assert np.array_equal(result.depth, expected.depth, equal_nan=True)


# -- result() and preview() from another thread --------------------------------------------------------------------

@pytest.mark.parametrize("composition", COMPOSITIONS)
def test_result_and_preview_from_another_thread_while_pushing(composition):
    slices = as_uint16(ramp_stack(n=12, height=256, width=256))
    low = min(int(s.min()) for s in slices)
    engine = StreamingFusion(slices[0].shape, slices[0].dtype, FusionSettings(composition=composition))
    stop, problems = threading.Event(), []

    def read() -> None:
        while not stop.is_set():
            try:
                preview = engine.preview()
                if preview is not None:
                    image, depth = preview
                    if composition != "pyramid" and int(image.min()) < low:  # (the pyramid's sums may overshoot)
                        problems.append(f"torn image: {image.min()} below every slice's {low}")
                    assert depth.shape == image.shape
            except Exception as error:  # noqa: BLE001 -- collected for the assertion below
                problems.append(repr(error))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for k, pixels in enumerate(slices):
            engine.push(pixels, float(k))
    finally:
        stop.set()
        reader.join()
    assert problems == []
    engine.finish()


@pytest.mark.parametrize("composition", COMPOSITIONS)
def test_pushes_from_several_threads_are_fused_each_once_in_the_order_they_got_in(composition):
    """Four threads pushing into one engine: "pick" corrupted its temporary slice store (finish() failed in tifffile)
    and every composition counted slices outside its lock. Each push is now taken whole, one at a time."""
    slices = as_uint16(ramp_stack(n=16, height=96, width=96))
    engine = StreamingFusion(slices[0].shape, slices[0].dtype, FusionSettings(composition=composition))
    if engine._own_store is not None:  # (a store slow to append, as a busy disk is: the pushes overlap there)
        append = engine._own_store.append
        engine._own_store.append = lambda pixels: (time.sleep(0.002), append(pixels))[1]
    errors: list[BaseException] = []

    def push(first: int) -> None:
        try:
            for k in range(first, len(slices), 4):
                engine.push(slices[k], float(k))
        except BaseException as error:  # noqa: BLE001 -- collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=push, args=(first,)) for first in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    result = engine.finish()
    order = [int(z) for z in result.z_positions]
    assert sorted(order) == list(range(len(slices)))
    expected = fuse([slices[k] for k in order], FusionSettings(composition=composition), z=[float(k) for k in order])
    assert np.array_equal(result.fused, expected.fused)
    assert np.array_equal(result.depth, expected.depth, equal_nan=True)


def test_finish_waits_for_a_push_under_way():
    """finish() on one thread while another pushes: it fused the slices before the one under way, and that push
    then failed inside the engine ("running sums became the final image"). It now waits for the push to end."""
    slices = as_uint16(ramp_stack(n=4))
    engine = StreamingFusion(slices[0].shape, slices[0].dtype)
    for k in range(3):
        engine.push(slices[k], float(k))
    entered, go_on = threading.Event(), threading.Event()
    fill = engine._with_missing_filled

    def slow_fill(pixels):  # (the last push stops halfway, until the test lets it go on)
        entered.set()
        go_on.wait(5)
        return fill(pixels)

    engine._with_missing_filled = slow_fill
    errors: list[BaseException] = []
    pusher = threading.Thread(target=lambda: _collect(errors, engine.push, slices[3], 3.0))
    pusher.start()
    assert entered.wait(5)
    finished: list = []
    finisher = threading.Thread(target=lambda: finished.append(engine.finish()))
    finisher.start()
    finisher.join(0.2)
    assert finisher.is_alive()  # waiting for the push under way
    go_on.set()
    pusher.join(5)
    finisher.join(10)
    assert errors == []
    assert finished[0].z_positions == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(RuntimeError, match="push\\(\\) after finish\\(\\)"):
        engine.push(slices[0], 4.0)


def test_finish_s_warnings_point_at_the_caller():
    """(finish() waiting for a push under way put a frame between it and its warnings: they pointed into the
    engine.)"""
    engine = StreamingFusion((8, 8), np.uint8)
    engine.push(np.zeros((8, 8), np.uint8))
    with pytest.warns(UserWarning, match="only one slice") as caught:
        engine.finish()
    assert caught[0].filename == __file__


def _collect(errors: list, call, *args) -> None:
    try:
        call(*args)
    except BaseException as error:  # noqa: BLE001 -- collected for the assertion
        errors.append(error)


# -- finish() twice ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("composition", COMPOSITIONS)
def test_a_second_finish_gives_the_same_result_for_every_composition(composition):
    slices = as_uint16(ramp_stack(n=4))
    engine = StreamingFusion(slices[0].shape, slices[0].dtype, FusionSettings(composition=composition))
    for k, pixels in enumerate(slices):
        engine.push(pixels, float(k))
    first = engine.finish()
    again = engine.finish()
    assert np.array_equal(again.fused, first.fused)
    assert np.array_equal(again.depth, first.depth, equal_nan=True)
    assert np.array_equal(engine.result(), first.fused)  # (pick gave its running image, before cleaning)


# -- a featureless stack has no depth ------------------------------------------------------------------------------

@pytest.mark.parametrize("composition", COMPOSITIONS)
@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0)])
def test_a_featureless_stack_has_no_depth_in_any_composition(composition, order):
    rng = np.random.default_rng(1)
    flat = [np.full((64, 64), 1000, np.uint16) + rng.integers(0, 3, (64, 64)).astype(np.uint16) for _ in order]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fuse(flat, FusionSettings(composition=composition), z=[float(z) for z in order])
    assert np.isnan(result.depth).all()  # not the first pushed slice's z everywhere


@pytest.mark.parametrize("composition", ("blend", "pick"))
def test_the_single_scale_depth_is_defined_where_there_is_texture(composition):
    result = fuse(as_uint16(ramp_stack()), FusionSettings(composition=composition, mode_filter_px=0))
    assert np.isfinite(result.depth).mean() > 0.8
    width = result.depth.shape[1]  # the band sharp in slice k is at z = k
    assert np.nanmedian(result.depth[8:-8, 2:width // 6 - 2]) == 0
    assert np.nanmedian(result.depth[8:-8, 5 * width // 6 + 2:-2]) == 5


# -- float stacks on a large offset ----------------------------------------------------------------------------------

@pytest.mark.parametrize("offset", [3e5, 1e6, 4e6])
def test_the_pyramid_fuses_float_detail_on_a_large_offset(offset):
    slices = [(s + np.float32(offset)).astype(np.float32) for s in ramp_stack()]
    result = fuse(slices)  # raised "noise floors must be positive" on the first push
    assert np.isfinite(result.fused).all()
    assert np.isfinite(result.depth).mean() > 0.5
