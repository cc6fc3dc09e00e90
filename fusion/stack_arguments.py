"""Which stacks a refusion's arguments name: files and folders, globs, ``@list.txt`` files (one stack per line),
a folder of multi-page TIFFs as its files; our own outputs passed over; and names that two stacks would share."""
from __future__ import annotations

import glob
import os
import warnings
from pathlib import Path

from fusion.errors import StackError, StackNotFoundError
from fusion.output_names import DEPTH, FUSED, is_our_output, refusion_outputs
from fusion.readers import TIFF_SUFFIXES, stack_name
from fusion.readers.image_folder import IMAGE_SUFFIXES, image_files, multipage_tiffs
from fusion.readers.ndtiff_dataset import is_ndtiff_dataset

SUMMARY_FILE = "summary.json"  # the batch's summary, in --out beside the stacks' reports
# What a glob's match must be called to be taken for a stack, beside folders: the files that ``open_stack`` reads.
STACK_FILE_SUFFIXES = tuple(dict.fromkeys(TIFF_SUFFIXES + IMAGE_SUFFIXES))


def expand_stack_arguments(arguments: list[str]) -> list[Path]:
    """Files and folders as given; globs expanded (sorted); ``@list.txt`` names one stack per line, relative
    to the list's folder. A stack given more than once (by a glob and a list, say) is fused once, with a warning.
    Our own outputs (``is_our_output``), however they are given, are passed over with one warning.

    A glob that matches nothing, a list file that is missing or empty, a listed path that does not exist, or
    arguments that name only our outputs, is a StackNotFoundError.
    """
    stacks: list[Path] = []
    seen: set[Path] = set()
    named_outputs: list[Path] = []
    for path in _expanded(arguments, named_outputs):
        real = real_path(path)
        if real in seen:
            warnings.warn(f"{path}: given more than once; fused once", stacklevel=2)
        else:
            seen.add(real)
            stacks.append(path)
    skipped = _counted(named_outputs, "output of an earlier fusion", "outputs of earlier fusions", OUTPUTS_HINT)
    if skipped and not stacks:
        raise StackNotFoundError(f"the stacks given are only {skipped}")
    if skipped:
        warnings.warn(f"skipped {skipped}", stacklevel=2)
    return stacks


OUTPUTS_HINT = "our results, not stacks"


def _expanded(arguments: list[str], named_outputs: list[Path]) -> list[Path]:
    """The stacks ``arguments`` give; files named that are our outputs go to ``named_outputs`` instead."""
    stacks: list[Path] = []
    for argument in arguments:
        if argument.startswith("@"):
            stacks += _listed(Path(argument[1:]), named_outputs)
        elif glob.has_magic(argument):
            stacks += _globbed(argument)
        else:
            stacks += _named(Path(argument), named_outputs)
    return stacks


def _named(path: Path, named_outputs: list[Path]) -> list[Path]:
    if is_our_output(path):
        named_outputs.append(path)
        return []
    return _stacks_in(path)


def _globbed(pattern: str) -> list[Path]:
    matches = sorted(glob.glob(pattern))
    if not matches:
        raise StackNotFoundError("the pattern matches nothing", pattern)
    return _stacks_matched(pattern, [Path(match) for match in matches])


def _listed(list_file: Path, named_outputs: list[Path]) -> list[Path]:
    """The stacks a list file names, one per line (blank lines and ``#`` comments aside); a relative path is
    the list's folder's, as the list was written there. A line naming nothing is an error naming the line."""
    if not list_file.is_file():
        raise StackNotFoundError("no such list file", list_file)
    lines = enumerate((line.strip() for line in list_file.read_text().splitlines()), start=1)
    listed = [(number, line) for number, line in lines if line and not line.startswith("#")]
    if not listed:  # an empty run that exits 0 would look like success
        raise StackNotFoundError("the list file names no stacks", list_file)
    stacks: list[Path] = []
    for number, line in listed:
        path = list_file.parent / line.removeprefix("@")  # (an absolute path stays as it is)
        try:
            if line.startswith("@"):
                stacks += _listed(path, named_outputs)
            elif glob.has_magic(line):  # (the list's folder taken literally, whatever its name holds)
                stacks += _globbed(os.path.join(glob.escape(str(list_file.parent)), line))
            elif not os.path.lexists(path):  # (a broken link is that stack's failed row)
                raise StackNotFoundError("no such file or folder", path)
            else:
                stacks += _named(path, named_outputs)
        except StackNotFoundError as error:
            raise StackNotFoundError(f"{error.reason} (line {number} of {list_file})", error.path) from None
    return stacks


def _stacks_matched(pattern: str, matches: list[Path]) -> list[Path]:
    """The matches of a glob that can be stacks, by their names: folders (as ``_stacks_in`` reads a folder named
    alone) and image files (``STACK_FILE_SUFFIXES``) that are not our own outputs (``is_our_output``: a glob over a
    folder that is also ``--out`` meets the fused images and depth maps of the run before). The rest (those
    outputs, a README, a .json beside the stacks) are passed over, with one warning that counts them; a matched
    image file that cannot be read stays, and is that stack's failed row. A pattern that matches no stack is a
    StackNotFoundError."""
    stacks: list[Path] = []
    outputs: list[Path] = []
    others: list[Path] = []
    for path in matches:
        if path.is_dir():
            stacks += _stacks_in(path)
        elif is_our_output(path):
            outputs.append(path)
        elif path.suffix.lower() in STACK_FILE_SUFFIXES:
            stacks.append(path)
        else:
            others.append(path)
    skipped = [_counted(outputs, "output of an earlier fusion", "outputs of earlier fusions", OUTPUTS_HINT),
               _counted(others, "file that is not an image stack", "files that are not image stacks",
                        f"stacks are folders and {', '.join(STACK_FILE_SUFFIXES)} files")]
    counted = " and ".join(part for part in skipped if part)
    if counted and not stacks:
        raise StackNotFoundError(f"the pattern matches only {counted}", pattern)
    if counted:
        warnings.warn(f"{pattern}: skipped {counted}", stacklevel=2)
    return stacks


def _counted(paths: list[Path], one: str, many: str, hint: str) -> str:
    """'2 files that ... (a, b); hint', naming the first three; '' for none."""
    if not paths:
        return ""
    more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
    names = ", ".join(path.name for path in paths[:3]) + more
    return f"{len(paths)} {one if len(paths) == 1 else many} ({names}); {hint}"


def _stacks_in(path: Path) -> list[Path]:
    """``path``, or, for a folder whose images are all multi-page TIFFs, each of those files:
    such a folder holds stacks, not slices. A folder that cannot be listed is one stack: reading it
    is then that stack's failure, and the others go on. A refusion's outputs written into the folder
    (``<name>.fused.tif``, ...: ``--out`` was the folder) are passed over, with a warning."""
    try:
        if not path.is_dir() or is_ndtiff_dataset(path) or any(path.glob("*MMStack*.ome.tif")):
            return [path]
        files = image_files(path)
        # (A live session's own fused.tif and depth.tif beside its stack go without saying.)
        outputs = [file for file in path.iterdir() if file.name.endswith((f".{FUSED}", f".{DEPTH}"))
                   and is_our_output(file)]
    except (OSError, StackError):  # permission denied, a slice's link broken: reading it says so
        return [path]
    if outputs:
        counted = _counted(sorted(outputs), "output of an earlier fusion", "outputs of earlier fusions", OUTPUTS_HINT)
        warnings.warn(f"{path}: skipped {counted}", stacklevel=2)
    stacks = multipage_tiffs(files)
    if files and len(stacks) == len(files):
        return [file for file, _ in stacks]
    return [path]


def check_unique_names(stacks: list[Path]) -> None:
    """Two stacks with one name would overwrite each other's outputs: refuse up front."""
    seen: dict[str, Path] = {}
    for path in stacks:
        name = stack_name(path)
        if f"{name}.json".casefold() == SUMMARY_FILE:  # (one file on macOS and Windows, whatever the case)
            raise ValueError(f"{path}: its report would be {SUMMARY_FILE}, which the batch's summary overwrites; "
                             "rename the stack")
        if name in seen and real_path(seen[name]) != real_path(path):
            raise ValueError(f"{seen[name]} and {path} would both write {refusion_outputs(Path(), name)['fused']}; "
                             "refuse them into different --out folders")
        seen[name] = path


def real_path(path: Path) -> Path:
    """``path`` with its links resolved, as far as they lead (a symlink loop stays as it is)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return absolute_path(path)


def absolute_path(path: Path) -> Path:
    """An absolute path without following links: a remote worker does not share our working folder,
    and a broken link must reach the worker to be reported as that stack's failure."""
    return Path(os.path.abspath(path))
