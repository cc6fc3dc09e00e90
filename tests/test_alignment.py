"""Slice alignment on stacks whose slices move by known transforms, on still stacks, and on real stacks."""

import cv2
import numpy as np
import pytest

from fusion import FusionSettings, StreamingFusion
from fusion.align.alignment import AlignSettings, SliceAligner, describe, max_displacement_px, warp_to_reference
from fusion.focus_measures import to_gray
from fusion.metrics import average_gradient, psnr, spatial_frequency
from fusion.readers import open_stack
from simulators.motion import moving_sweep

pytestmark = pytest.mark.slow

SHAPE = (384, 512)
MARGIN = 40  # compare inside the region every slice covers
INSIDE = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
# Specimen, surface, number of slices, total zoom over the sweep, largest shift (px).
MOTIONS = {"dome": ("astronaut", "dome", 9, 0.03, 20.0), "steps": ("coffee", "steps", 13, -0.03, 20.0)}


def render(name: str, moving: bool):
    texture, surface, n, zoom, shift = MOTIONS[name]
    return moving_sweep(texture, surface, SHAPE, n, zoom, shift, moving=moving)


@pytest.fixture(scope="module", params=sorted(MOTIONS))
def stacks(request):
    return render(request.param, moving=True), render(request.param, moving=False)


def fuse(slices, z_um, **settings):
    engine = StreamingFusion(slices[0].shape, slices[0].dtype, FusionSettings(**settings))
    for pixels, z in zip(slices, z_um):
        engine.push(pixels, z)
    return engine.finish()


def test_recovered_transforms_match_the_true_ones(stacks):
    moving, _ = stacks
    aligner = SliceAligner(SHAPE, AlignSettings())
    centre = np.array([(SHAPE[1] - 1) / 2, (SHAPE[0] - 1) / 2, 1.0])
    for pixels, truth in zip(moving.slices, moving.transforms):
        estimate = aligner.add(to_gray(pixels))
        true_scale = np.sqrt(np.linalg.det(truth[:2, :2]))
        assert describe(estimate)["scale"] == pytest.approx(true_scale, rel=1e-3)
        assert np.abs((estimate @ centre)[:2] - (truth @ centre)[:2]).max() < 0.5
        # Stronger than the centre: nowhere in the frame is a slice misplaced by half a pixel.
        assert max_displacement_px(estimate @ np.linalg.inv(truth), SHAPE) < 0.5
    assert aligner.fallbacks == []


def test_aligned_fusion_is_as_good_as_fusion_with_the_true_transforms(stacks):
    moving, still = stacks
    aligned = psnr(fuse(moving.slices, moving.z_um, align="on").fused[INSIDE], moving.truth[INSIDE])
    unaligned = psnr(fuse(moving.slices, moving.z_um).fused[INSIDE], moving.truth[INSIDE])
    true_warps = [warp_to_reference(p, t)[0].reshape(p.shape) for p, t in zip(moving.slices, moving.transforms)]
    with_true_transforms = psnr(fuse(true_warps, moving.z_um).fused[INSIDE], moving.truth[INSIDE])
    never_moved = psnr(fuse(still.slices, still.z_um).fused[INSIDE], still.truth[INSIDE])
    assert aligned > unaligned + 10
    # Registration errors stay under 0.1 px everywhere (test above); on the four-step specimen they
    # still cost 0.17 dB against the true transforms (44.12 against 44.29), hence 0.25.
    assert aligned > with_true_transforms - 0.25, (aligned, with_true_transforms)
    # Known and reported: against a stack that never moved, resampling the slices (cubic) costs
    # 1.1-1.8 dB even with the true transforms under the pyramid composition (it keeps more fine
    # detail than the single-scale blend, which lost 0.8-1.2 dB): this bound records where we are.
    assert aligned > never_moved - 2.1, (aligned, never_moved)


def test_a_still_stack_shows_no_false_motion(stacks):
    _, still = stacks
    aligner = SliceAligner(SHAPE, AlignSettings())
    # Focus changes move the sharp band across the frame; that must not read as motion.
    assert max(max_displacement_px(aligner.add(to_gray(p)), SHAPE) for p in still.slices) < 0.3
    automatic = fuse(still.slices, still.z_um, align="auto")
    assert not any(a["warped"] for a in automatic.alignment)
    np.testing.assert_array_equal(automatic.fused, fuse(still.slices, still.z_um).fused)


def test_auto_warps_the_slices_that_moved(stacks):
    moving, _ = stacks
    result = fuse(moving.slices, moving.z_um, align="auto")
    assert [a["warped"] for a in result.alignment] == [False] + [True] * (len(moving.slices) - 1)


def test_pixels_a_warped_slice_does_not_cover_come_from_other_slices(stacks):
    moving, _ = stacks
    fused = fuse(moving.slices, moving.z_um, align="on").fused.astype(int)
    truth = moving.truth.astype(int)
    border = np.ones(SHAPE, bool)
    border[INSIDE] = False
    assert not np.any((fused.sum(axis=2) == 0) & (truth.sum(axis=2) > 30))
    assert np.abs(fused - truth)[border].mean() < 25


def test_a_slice_that_cannot_be_registered_keeps_the_previous_transform(stacks):
    moving, _ = stacks
    aligner = SliceAligner(SHAPE, AlignSettings())
    aligner.add(to_gray(moving.slices[0]))
    second = aligner.add(to_gray(moving.slices[1]))
    noise = np.random.default_rng(0).random(SHAPE).astype(np.float32) * 255
    with pytest.warns(UserWarning, match=r"slice 2 \(counting from 0\) could not be aligned reliably"):
        third = aligner.add(noise)
    np.testing.assert_allclose(third, second)
    assert aligner.fallbacks == [2]
    # A folder's slices are named by their files (0-based numbers read as 1-based ones by people).
    named = SliceAligner(SHAPE, AlignSettings(), name="folder", label=lambda index: f"image_{index + 1}.png")
    named.add(to_gray(moving.slices[0]))
    with pytest.warns(UserWarning, match="folder: image_2.png could not be aligned reliably"):
        named.add(noise)


def test_a_fallback_after_a_heavily_defocused_slice_says_so(stacks):
    """The real scorpion stack starts far out of focus: its second slice cannot be registered to the
    first. The warning says why, so that a user knows the slice matters little."""
    import cv2
    moving, _ = stacks
    aligner = SliceAligner(SHAPE, AlignSettings())
    aligner.add(cv2.GaussianBlur(to_gray(moving.slices[0]), (0, 0), 25))   # next to nothing to register on
    with pytest.warns(UserWarning, match=r"slice 1 \(counting from 0\) could not be aligned reliably: the slice "
                                         r"before it is far out of focus, with little detail to register on;"):
        aligner.add(to_gray(moving.slices[1]))
    assert aligner.fallbacks == [1]
    # The blurred slice itself: it also has little to give the fused image.
    blurred_second = SliceAligner(SHAPE, AlignSettings())
    blurred_second.add(to_gray(moving.slices[0]))
    with pytest.warns(UserWarning, match=r"slice 1 \(counting from 0\) could not be aligned reliably: it is far "
                                         r"out of focus, .*\(and little to give the fused image\)"):
        blurred_second.add(cv2.GaussianBlur(to_gray(moving.slices[1]), (0, 0), 25))


def test_alignment_is_reported_per_slice(stacks):
    moving, _ = stacks
    result = fuse(moving.slices, moving.z_um, align="on", align_model="scale_shift")
    assert len(result.alignment) == len(moving.slices)
    assert result.alignment[0]["warped"] is False and all(a["warped"] for a in result.alignment[1:])
    assert all(abs(a["rotation_deg"]) < 1e-9 for a in result.alignment)  # scale_shift: no rotation
    assert "align" in result.seconds


def test_pick_composition_reads_slices_back_in_the_reference_frame(stacks):
    moving, _ = stacks
    aligned = psnr(fuse(moving.slices, moving.z_um, align="on", composition="pick").fused[INSIDE],
                   moving.truth[INSIDE])
    unaligned = psnr(fuse(moving.slices, moving.z_um, composition="pick").fused[INSIDE], moving.truth[INSIDE])
    assert aligned > unaligned + 10


# -- real stacks: no ground truth, so the motion is checked against feature matching --

class FeatureMatcher:
    """An independent estimate of motion (SIFT features, RANSAC), detecting each slice's features once."""

    def __init__(self, grays: list[np.ndarray]):
        sift = cv2.SIFT_create(4000)  # type: ignore[attr-defined]  # in OpenCV since 4.4; its stubs miss it
        self.features = [sift.detectAndCompute(g.astype(np.uint8), None) for g in grays]

    def similarity(self, i: int, j: int) -> tuple[np.ndarray, int]:
        """The similarity from slice i to slice j, and how many matches support it."""
        (keys_a, descriptors_a), (keys_b, descriptors_b) = self.features[i], self.features[j]
        pairs = cv2.BFMatcher().knnMatch(descriptors_a, descriptors_b, k=2)
        good = [m for m, n in pairs if m.distance < 0.7 * n.distance]
        points_a = np.array([keys_a[m.queryIdx].pt for m in good], np.float32)
        points_b = np.array([keys_b[m.trainIdx].pt for m in good], np.float32)
        matrix, inliers = cv2.estimateAffinePartial2D(points_a, points_b, method=cv2.RANSAC,
                                                      ransacReprojThreshold=1.5)
        return np.vstack([matrix, [0, 0, 1]]), int(inliers.sum())


def real_slices(folder):
    with open_stack(folder) as stack:
        return [pixels for pixels, _ in stack]


@pytest.mark.parametrize("name", ["pcb", "keyboard-phone"])
def test_real_stack_motion_agrees_with_feature_matching(shared_data, name):
    slices = real_slices(shared_data / name)
    grays = [to_gray(p) for p in slices]
    aligner = SliceAligner(grays[0].shape, AlignSettings())
    transforms = [aligner.add(g) for g in grays]
    assert aligner.fallbacks == []
    matcher = FeatureMatcher(grays)
    n = len(grays)
    pairs = sorted({(i, i + gap) for gap in (1, 3, 9, 27) for i in range(n - gap)} | {(0, n - 1)})
    scale_differences = []
    for i, j in pairs:
        reference, inliers = matcher.similarity(i, j)
        if inliers < 100:  # too blurred in one of them for features to say much
            continue
        ours = transforms[j] @ np.linalg.inv(transforms[i])
        scale_differences.append(abs(describe(ours)["scale"] - describe(reference)["scale"]))
        # Feature positions in defocused slices are not exact either: measured, the two
        # estimates differ by 0.03% in scale and 0.2-0.3 px at the median, 0.14% and 0.9 px at worst.
        assert scale_differences[-1] < 2e-3, (i, j)
        assert max_displacement_px(ours @ np.linalg.inv(reference), grays[0].shape) < 1.5, (i, j)
    assert len(scale_differences) >= 3
    assert np.median(scale_differences) < 5e-4


def test_pcb_fused_aligned_is_sharper_than_every_slice(shared_data):
    """pcb moves by 3.6% zoom and 57 px over 7 slices. Unaligned, its fused image has double
    edges, which raise spatial frequency and average gradient too (so those two numbers
    cannot rank aligned against unaligned; the benchmark writes crops to look at)."""
    slices = real_slices(shared_data / "pcb")
    fused = fuse(slices, [None] * len(slices), align="on").fused
    assert spatial_frequency(fused) > max(spatial_frequency(p) for p in slices)
    assert average_gradient(fused) > max(average_gradient(p) for p in slices)


@pytest.mark.parametrize("name, pair, refined", [("scorpion-microscope", (4, 5), False), ("pcb", (0, 1), True)])
def test_a_registration_whose_fine_tiles_scatter_is_not_refined(shared_data, monkeypatch, name, pair, refined):
    """The scorpion's slices 5 and 6 (from 1; bright field, a glow about the specimen): the fine level's first
    look agrees with no one similarity, and a defocus refinement from there steps further than
    MAX_REFINEMENT_PX (4.9 px), so it failed every time it ran (0.7 of the scorpion's 0.9 CPU s of
    refinement): it is not run, and the coarse fit stands. pcb's fine passes hold, and are refined."""
    from itertools import islice

    from fusion.align import alignment, defocus_refine

    with open_stack(shared_data / name) as stack:
        grays = [to_gray(pixels) for pixels, _ in islice(stack, pair[1] + 1)][pair[0]:]
    calls = []
    refine = defocus_refine.refine
    monkeypatch.setattr(defocus_refine, "refine", lambda *args, **kwargs: calls.append(refine(*args, **kwargs)))
    aligner = SliceAligner(grays[0].shape, AlignSettings())
    aligner.add(grays[0])
    template = aligner._previous[1]   # (the fine level)
    transform = aligner.add(grays[1])
    assert aligner.fallbacks == []
    assert len(calls) == refined and all(call is not None for call in calls)
    if not refined:
        # Run anyway, the refinement goes astray at its first step.
        assert refine(template.pixels, aligner._previous[1].pixels, template.on_level(transform), "similarity",
                      max_step_px=alignment.MAX_REFINEMENT_PX) is None


def test_frames_too_small_to_align_are_left_alone_with_a_warning(stacks):
    moving, _ = stacks
    small = [p[:128, :160] for p in moving.slices]
    with pytest.warns(UserWarning, match="frames of 160x128 px are too small to align"):
        result = fuse(small, moving.z_um, align="on")
    assert not any(a["warped"] for a in result.alignment)
    np.testing.assert_array_equal(result.fused, fuse(small, moving.z_um).fused)


@pytest.mark.parametrize("model", ["similarity", "affine"])
def test_rotation_and_12_bit_mono_slices_are_aligned(model):
    from simulators.motion import render_moving_stack, similarity
    from simulators.optics import CameraNoise, Optics
    from simulators.specimens import VirtualSpecimen, load_texture, make_height_map

    big = (SHAPE[0] + 200, SHAPE[1] + 200)
    specimen = VirtualSpecimen(load_texture("coffee", big, color=False),
                               make_height_map("irregular", big, 21.0, np.random.default_rng(0)))
    z_um = np.linspace(-3, 22, 9)
    truths = [np.eye(3)] + [similarity(1 + 0.002 * k, (3 * k, -2 * k), 0.4 * k, SHAPE) for k in range(1, 9)]
    moving = render_moving_stack(specimen, SHAPE, z_um, truths, Optics(0.3), CameraNoise(bit_depth=12))
    result = fuse(moving.slices, z_um, align="on", align_model=model)
    assert result.fused.dtype == np.uint16
    estimates = [np.vstack([np.array(a["matrix"]), [0, 0, 1]]) for a in result.alignment]
    assert max(max_displacement_px(e @ np.linalg.inv(t), SHAPE) for e, t in zip(estimates, truths)) < 0.5
    assert result.alignment[-1]["rotation_deg"] == pytest.approx(3.2, abs=0.05)


def test_a_warped_slice_keeps_to_the_values_the_slice_holds():
    # Cubic interpolation rings at a hard edge; unclipped, a 12-bit stack's fused image reached 4136.
    step = np.full((64, 80), 200, np.uint16)
    step[:, 40:] = 4000
    shift = np.array([[1, 0, 0.5], [0, 1, 0.25], [0, 0, 1.0]])
    for pixels in (step, step.astype(np.float32) / 4095, np.dstack([step] * 3)):
        warped, _ = warp_to_reference(pixels, shift)
        assert warped.min() >= pixels.min() and warped.max() <= pixels.max()
        assert warped.dtype == pixels.dtype


def test_a_small_still_stack_is_not_moved_by_a_registration_across_its_focus_range():
    """A still 192x256 dome: registered straight to its sharpest slice, slice 5 showed a 1.4% zoom (apparent
    motion from the change of blur across the frame, which the defocus refinement could not undo) and it and
    every later slice were warped by it: 24.7 dB against 40.9 unaligned."""
    from tests.conftest import rendered

    still = rendered("astronaut", "dome", color=False, bit_depth=16, shape=(192, 256))
    unaligned = fuse(still.slices, still.z_um, align="off")
    aligned = fuse(still.slices, still.z_um, align="auto")
    assert psnr(aligned.fused, still.truth, 65535.0) > psnr(unaligned.fused, still.truth, 65535.0) - 0.1
    moved_px = [max_displacement_px(np.array(a["matrix"] + [[0, 0, 1]]), still.truth.shape) for a in aligned.alignment]
    assert max(moved_px) < 0.5


def test_a_stack_of_nothing_but_noise_says_it_was_not_aligned():
    """Faint structure under strong noise, drifting 4 px a slice: every slice reads as noise only, so none became
    the reference (dark frames before the light are skipped so) and none was registered, without a word; the
    report read as slices registered and found still (a regression round). It is said, and each is a fallback."""
    import warnings

    rng = np.random.default_rng(2)
    size, n = 256, 6
    scene = cv2.GaussianBlur(rng.normal(0, 1, (size + 64, size + 64)).astype(np.float32), (0, 0), 6)
    scene = scene / scene.std() * 3 + 100
    engine = StreamingFusion((size, size), np.uint16, FusionSettings(align="on"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(n):
            frame = scene[4 * k:4 * k + size, 3 * k:3 * k + size] + rng.normal(0, 10, (size, size))
            engine.push(np.clip(frame, 0, 65535).astype(np.uint16), float(k))
        result = engine.finish()
    said = [str(w.message) for w in caught if "register" in str(w.message)]
    assert said == ["pushed stack: no slice shows more than noise (or one value throughout) to register the others "
                    "on: the slices were not aligned (see 'fallback' in the report)"]
    assert [entry["fallback"] for entry in result.alignment] == [False] + [True] * (n - 1)
