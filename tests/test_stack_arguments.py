"""Which stacks a refusion's arguments name, and the names their outputs are written under: dotted folders,
literal ``[ ]`` in names, list files as editors save them, lists that include themselves, every problem at once."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from fusion.batch import refuse_many, write_interrupted_summary
from fusion.engine import FusionSettings
from fusion.errors import StackNotFoundError
from fusion.readers import open_stack, stack_name
from fusion.stack_arguments import absolute_path, check_unique_names, expand_stack_arguments
from tests.conftest import REPO_ROOT

SHAPE = (128, 160)


def planes(n_slices: int, seed: int = 0) -> np.ndarray:
    """A texture at a few blur levels, cycled to ``n_slices``: something to fuse."""
    texture = ndimage.gaussian_filter(np.random.default_rng(seed).random(SHAPE), 1.0)
    levels = [ndimage.gaussian_filter(texture, sigma) for sigma in (0.1, 1, 2, 3, 2, 1)]
    return np.stack([(levels[i % len(levels)] * 255).astype(np.uint8) for i in range(n_slices)])


def multipage_stack(path: Path, n_slices: int = 5, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, planes(n_slices, seed), photometric="minisblack", metadata={"axes": "ZYX"})
    return path


def folder_of_slices(folder: Path, n_slices: int = 5, seed: int = 0) -> Path:
    folder.mkdir(parents=True)
    for index, plane in enumerate(planes(n_slices, seed)):
        tifffile.imwrite(folder / f"z{index:02d}.tif", plane, photometric="minisblack")
    return folder


def micro_manager_dataset(folder: Path) -> Path:
    multipage_stack(folder / "scan_1_MMStack_Pos0.ome.tif")
    return folder


def ndtiff_dataset(folder: Path) -> Path:
    from ndtiff import NDTiffDataset

    writer = NDTiffDataset(str(folder), summary_metadata={}, writable=True)
    for index, plane in enumerate(planes(3)):
        writer.put_image({"z": index}, plane.astype(np.uint16), {})  # (frames of 8 kB and more: ndtiff 3.1)
    writer.finish()
    writer.close()
    return folder


def single_image(path: Path) -> Path:
    import imageio.v3 as imageio

    imageio.imwrite(path, planes(1)[0])
    return path


def run_cli(*args):
    return subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)


# Each kind of stack, the path to give, and the name its outputs are written under.
STACK_KINDS = {
    "folder of slices, dotted": (lambda root: folder_of_slices(root / "exp.1"), "exp.1"),
    "folder of slices, a date": (lambda root: folder_of_slices(root / "2024.05.01"), "2024.05.01"),
    "folder of slices named like a file": (lambda root: folder_of_slices(root / "a.v1.tif"), "a.v1.tif"),
    "Micro-Manager dataset, dotted": (lambda root: micro_manager_dataset(root / "scan.v2"), "scan.v2"),
    "NDTiff dataset, dotted": (lambda root: ndtiff_dataset(root / "acq.1"), "acq.1"),
    "OME-TIFF": (lambda root: multipage_stack(root / "a.b.ome.tif"), "a.b"),
    "TIFF": (lambda root: multipage_stack(root / "pos.2.TIF"), "pos.2"),
    "live session's stack": (lambda root: multipage_stack(root / "2026.11.27" / "stack.ome.tif"), "2026.11.27"),
    "MDA session's stack": (lambda root: multipage_stack(root / "run" / "p0-A1_c0.stack.ome.tif"), "p0-A1_c0"),
    "single PNG": (lambda root: single_image(root / "one.v1.png"), "one.v1"),
}


@pytest.mark.parametrize("kind", STACK_KINDS)
def test_a_stacks_name_is_the_name_its_reader_writes_its_outputs_under(tmp_path, kind):
    make, expected = STACK_KINDS[kind]
    path = make(tmp_path)
    with open_stack(path) as stack:
        assert stack_name(path) == stack.name == expected


def test_a_folders_name_however_it_is_spelled_is_the_one_a_worker_writes_under(tmp_path, monkeypatch):
    folder = folder_of_slices(tmp_path / "exp.1")
    session = multipage_stack(tmp_path / "run.3" / "stack.ome.tif")
    monkeypatch.chdir(folder)
    for spelled in (Path("."), Path("../exp.1/"), Path("../run.3/../run.3/stack.ome.tif")):
        with open_stack(absolute_path(spelled)) as stack:  # (as refuse_many hands a stack to a worker)
            assert stack_name(spelled) == stack.name, spelled
    assert [stack_name(Path(".")), stack_name(Path("../run.3/stack.ome.tif"))] == ["exp.1", "run.3"]
    assert session.is_file()


def test_the_current_folder_refused_alone_is_named_as_the_folder_it_is(tmp_path):
    # `--refuse .` wrote hidden, nameless outputs (.fused.tif, .depth.tif, .json) that --resume never matched.
    folder = folder_of_slices(tmp_path / "exp.1")
    done = subprocess.run([sys.executable, str(REPO_ROOT / "run_session.py"), "--refuse", ".", "--out", "../out"],
                          capture_output=True, text=True, cwd=folder, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        ["exp.1.depth.tif", "exp.1.fused.tif", "exp.1.json", "summary.json"]


@pytest.mark.slow
def test_dotted_folders_fuse_in_one_batch_and_resume_skips_them(tmp_path):
    """``exp.1`` and ``exp.2`` were both "exp": the batch was refused as if they would overwrite each other."""
    for index, name in enumerate(("exp.1", "exp.2")):
        folder_of_slices(tmp_path / "data" / name, seed=index)
    out = tmp_path / "out"
    done = run_cli("--refuse", tmp_path / "data" / "*", "--out", out, "--workers", "2", "--align", "off")
    assert done.returncode == 0, done.stderr
    assert "would both write" not in done.stderr
    assert sorted(path.name for path in out.iterdir()) == [
        "exp.1.depth.tif", "exp.1.fused.tif", "exp.1.json", "exp.2.depth.tif", "exp.2.fused.tif", "exp.2.json",
        "summary.json"]
    rows = json.loads((out / "summary.json").read_text())["stacks"]
    assert [(row["name"], row["status"]) for row in rows] == [("exp.1", "done"), ("exp.2", "done")]
    assert [json.loads((out / f"{name}.json").read_text())["name"] for name in ("exp.1", "exp.2")] == \
        ["exp.1", "exp.2"]

    again = run_cli("--refuse", tmp_path / "data" / "*", "--out", out, "--workers", "2", "--align", "off",
                    "--resume")
    assert again.returncode == 0, again.stderr
    rows = json.loads((out / "summary.json").read_text())["stacks"]
    assert [(row["name"], row["status"]) for row in rows] == [("exp.1", "skipped"), ("exp.2", "skipped")]
    assert [line.split()[::3] for line in again.stdout.splitlines()[1:3]] == [["exp.1", "skipped"],
                                                                                ["exp.2", "skipped"]]


def test_an_interrupted_batchs_summary_names_dotted_folders_and_counts_the_finished_one(tmp_path):
    """Ctrl-C's summary named the rows "a" and "b" and took the finished a.v1 for interrupted."""
    stacks = [folder_of_slices(tmp_path / "data" / name, seed=index) for index, name in enumerate(("a.v1", "b.v1"))]
    out = tmp_path / "out"
    settings = FusionSettings(align="off")
    finished = refuse_many(stacks[:1], out, settings, progress=False)  # (one stack: no cluster)
    assert [(outcome.name, outcome.status) for outcome in finished] == [("a.v1", "done")]
    for came in (finished, []):  # its outcome came, or the run stopped before it did
        summary = json.loads(write_interrupted_summary(out, stacks, came, settings, 1.0, None).read_text())
        assert [(row["name"], row["status"]) for row in summary["stacks"]] == [("a.v1", "done"),
                                                                               ("b.v1", "interrupted")]
        assert summary["counts"]["done"] == 1
    assert refuse_many(stacks[:1], out, settings, resume=True, progress=False)[0].status == "skipped"


def test_a_name_with_brackets_that_exists_is_taken_as_it_is(tmp_path, monkeypatch):
    """``s[1].tif`` fused ``s1.tif`` instead; ``well[A1].tif`` with no ``wellA.tif`` "matched nothing"."""
    plain = multipage_stack(tmp_path / "s1.tif")
    bracketed = multipage_stack(tmp_path / "s[1].tif", seed=1)
    well = multipage_stack(tmp_path / "well[A1].tif", seed=2)
    position = folder_of_slices(tmp_path / "Pos[3]")
    plate = multipage_stack(tmp_path / "plate[B]" / "p.tif", seed=3)
    assert expand_stack_arguments([str(bracketed), str(well), str(position)]) == [bracketed, well, position]
    assert expand_stack_arguments([str(tmp_path / "plate[B]" / "*.tif")]) == [plate]  # its folder as it is
    assert expand_stack_arguments([str(tmp_path / "s[12].tif")]) == [plain]  # no such file: a glob
    listing = tmp_path / "stacks.txt"
    listing.write_text("s[1].tif\nwell[A1].tif\nPos[3]\nplate[B]/*.tif\n")
    monkeypatch.chdir(tmp_path)
    assert expand_stack_arguments(["@stacks.txt"]) == [
        Path("s[1].tif"), Path("well[A1].tif"), Path("Pos[3]"), Path("plate[B]/p.tif")]
    assert expand_stack_arguments(["s[1].tif"]) == [Path("s[1].tif")]


@pytest.mark.parametrize("saved_as", ["utf-8-sig", "utf-16", "utf-16-be-with-bom"])
def test_a_list_saved_by_windows_editors_is_read(tmp_path, saved_as):
    """Notepad and Excel write a UTF-8 byte-order mark; PowerShell 5's ``>`` writes UTF-16."""
    stacks = [multipage_stack(tmp_path / "µ-stäcks" / "a b.tif"), multipage_stack(tmp_path / "c.tif", seed=1)]
    text = "# my list\r\n\r\nµ-stäcks/a b.tif\r\n  c.tif  \r\n"
    listing = tmp_path / "list.txt"
    if saved_as == "utf-16-be-with-bom":
        listing.write_bytes("\ufeff".encode("utf-16-be") + text.encode("utf-16-be"))
    else:
        listing.write_bytes(text.encode(saved_as))
    assert expand_stack_arguments([f"@{listing}"]) == stacks


def test_a_list_that_is_not_utf8_says_which_file_and_how_to_save_it(tmp_path):
    multipage_stack(tmp_path / "a.tif")
    listing = tmp_path / "latin.txt"
    listing.write_bytes("a.tif\ncafé.tif\n".encode("latin-1"))
    with pytest.raises(StackNotFoundError) as raised:
        expand_stack_arguments([f"@{listing}"])
    assert str(raised.value) == (f"{listing}: the list file is not UTF-8 text: line 2 holds byte 0xe9, which UTF-8 "
                                 "cannot (saved as ANSI or Latin-1?); save it as UTF-8 (in Notepad: Save As, "
                                 "Encoding UTF-8) and run again")


def test_lists_that_include_themselves_name_the_lines_that_loop(tmp_path):
    (tmp_path / "self.txt").write_text("@self.txt\n")
    with pytest.raises(StackNotFoundError) as raised:
        expand_stack_arguments([f"@{tmp_path / 'self.txt'}"])
    assert str(raised.value) == (f"{tmp_path / 'self.txt'}: the list includes itself (line 1 of "
                                 f"{tmp_path / 'self.txt'} is @self.txt); remove that line")
    (tmp_path / "a.txt").write_text("# positions\n@b.txt\n")
    (tmp_path / "b.txt").write_text("@a.txt\n")
    with pytest.raises(StackNotFoundError) as raised:
        expand_stack_arguments([f"@{tmp_path / 'a.txt'}"])
    assert str(raised.value) == (f"{tmp_path / 'a.txt'}: the list includes itself (line 2 of {tmp_path / 'a.txt'} "
                                 f"is @b.txt, line 1 of {tmp_path / 'b.txt'} is @a.txt); remove one of those lines")


def test_a_list_included_twice_but_not_by_itself_is_no_loop(tmp_path):
    stack = multipage_stack(tmp_path / "a.tif")
    (tmp_path / "shared.txt").write_text("a.tif\n")
    (tmp_path / "b.txt").write_text("@shared.txt\n")
    (tmp_path / "main.txt").write_text("@shared.txt\n@b.txt\n")
    with pytest.warns(UserWarning, match="given more than once; fused once"):
        assert expand_stack_arguments([f"@{tmp_path / 'main.txt'}"]) == [stack]


def test_every_missing_line_of_a_list_is_told_at_once(tmp_path):
    """The user fixed one line, ran again, met the next, twelve times over."""
    multipage_stack(tmp_path / "found.tif")
    listing = tmp_path / "stacks.txt"
    listing.write_text("found.tif\n" + "".join(f"gone{index}.tif\n" for index in range(12)))
    with pytest.raises(StackNotFoundError) as raised:
        expand_stack_arguments([f"@{listing}"])
    lines = str(raised.value).splitlines()
    assert lines[0] == "12 of the stacks given cannot be found or read:"
    assert lines[1:11] == [f"  {tmp_path / f'gone{index}.tif'}: no such file or folder (line {index + 2} of {listing})"
                           for index in range(10)]
    assert lines[11:] == ["  and 2 more", "fix or remove each of them, then run again"]


def test_problems_in_several_arguments_and_nested_lists_are_told_together(tmp_path):
    (tmp_path / "inner.txt").write_text("gone.tif\n")
    (tmp_path / "outer.txt").write_text("@inner.txt\n@nolist.txt\n")
    with pytest.raises(StackNotFoundError) as raised:
        expand_stack_arguments([f"@{tmp_path / 'outer.txt'}", str(tmp_path / "none*.tif")])
    assert str(raised.value).splitlines() == [
        "3 of the stacks given cannot be found or read:",
        f"  {tmp_path / 'gone.tif'}: no such file or folder (line 1 of {tmp_path / 'inner.txt'}, included by "
        f"line 1 of {tmp_path / 'outer.txt'})",
        f"  {tmp_path / 'nolist.txt'}: no such list file (line 2 of {tmp_path / 'outer.txt'})",
        f"  {tmp_path / 'none*.tif'}: the pattern matches nothing",
        "fix or remove each of them, then run again"]


def test_every_name_two_stacks_share_is_told_at_once(tmp_path):
    stacks = [tmp_path / folder / name for folder, name in
              (("a", "s.tif"), ("b", "s.tif"), ("c", "s.tif"), ("a", "t.tif"), ("b", "t.tif"), ("a", "u.tif"),
               ("a", "Summary.tif"))]
    with pytest.raises(ValueError) as raised:
        check_unique_names(stacks)
    a, b, c = (tmp_path / folder for folder in "abc")
    assert str(raised.value).splitlines() == [
        "3 stack names would overwrite outputs:",
        f"  {a / 's.tif'}, {b / 's.tif'} and {c / 's.tif'} would all write s.fused.tif",
        f"  {a / 't.tif'} and {b / 't.tif'} would both write t.fused.tif",
        f"  {a / 'Summary.tif'}: its report would be summary.json, which the batch's summary overwrites",
        "refuse stacks that share a name into different --out folders; rename a stack named Summary; then run again"]


def test_one_stack_named_twice_is_no_clash(tmp_path):
    stack = multipage_stack(tmp_path / "a" / "s.tif")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "s.tif").symlink_to(stack)
    check_unique_names([stack, tmp_path / "a" / ".." / "a" / "s.tif", tmp_path / "b" / "s.tif"])


def test_a_glob_over_a_folder_of_slices_says_to_give_the_folder(tmp_path):
    """"slices/*" fuses each slice as a stack of its own: legal, but rarely meant, so a warning says how to fuse
    them as one stack. A glob over a folder of multi-page stacks (the usual batch) says nothing of the kind."""
    slices = tmp_path / "slices"
    slices.mkdir()
    for k, plane in enumerate(planes(3)):
        tifffile.imwrite(slices / f"z{k}.tif", plane)
    with pytest.warns(UserWarning, match=r"each of the 3 images of .*slices it matches is fused as a stack of one "
                                         r"slice; to fuse them as one stack, give the folder"):
        assert len(expand_stack_arguments([str(slices / "*")])) == 3
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    for k in range(2):
        multipage_stack(stacks / f"s{k}.tif", seed=k)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(expand_stack_arguments([str(stacks / "*.tif")])) == 2
