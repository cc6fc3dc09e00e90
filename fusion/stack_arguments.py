"""Which stacks a refusion's arguments name: files and folders, globs, ``@list.txt`` files (one stack per line),
a folder of multi-page TIFFs as its files; our own outputs passed over; and names that two stacks would share."""
from __future__ import annotations

import codecs
import glob
import os
import warnings
from pathlib import Path

import tifffile

from fusion.errors import StackError, StackNotFoundError
from fusion.output_names import DEPTH, FUSED, SESSION_REPORT, STACK, is_our_output, refusion_outputs
from fusion.readers import TIFF_SUFFIXES, stack_name
from fusion.readers.image_folder import IMAGE_SUFFIXES, image_files, is_tiff, multipage_tiffs, tiff_pages
from fusion.readers.ndtiff_dataset import is_ndtiff_dataset

SUMMARY_FILE = "summary.json"  # the batch's summary, in --out beside the stacks' reports
# What a glob's match must be called to be taken for a stack, beside folders: the files that ``open_stack`` reads.
STACK_FILE_SUFFIXES = tuple(dict.fromkeys(TIFF_SUFFIXES + IMAGE_SUFFIXES))


def expand_stack_arguments(arguments: list[str]) -> list[Path]:
    """Files and folders as given; globs expanded (sorted); ``@list.txt`` names one stack per line, relative
    to the list's folder. An argument or line that names an existing file or folder is taken as it is, even
    with ``[ ]``, ``*`` or ``?`` in its name (``well[A1].tif``); only otherwise is it a glob. A stack given more
    than once (by a glob and a list, say) is fused once, with a warning. Our own outputs (``is_our_output``),
    however they are given, are passed over with one warning.

    A glob that matches nothing, a list file that is missing, empty, not text or that includes itself, a listed
    path that does not exist, or arguments that name only our outputs, is a StackNotFoundError; every such
    problem is told in one error, so that one run shows all there is to fix.
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
MOST_PROBLEMS_TOLD = 10  # beyond these, "and N more": the first screenful is enough to start fixing


def _expanded(arguments: list[str], named_outputs: list[Path]) -> list[Path]:
    """The stacks ``arguments`` give; files named that are our outputs go to ``named_outputs`` instead.
    Every argument is looked at before a StackNotFoundError tells all their problems."""
    stacks: list[Path] = []
    problems: list[StackNotFoundError] = []
    for argument in arguments:
        try:
            if argument.startswith("@"):
                stacks += _listed(Path(argument[1:]), named_outputs, problems, ())
            elif glob.has_magic(argument) and not os.path.lexists(argument):
                stacks += _globbed(argument)
            else:
                stacks += _named(Path(argument), named_outputs)
        except StackNotFoundError as error:
            problems.append(error)
    if problems:
        raise _all_told(problems)
    return stacks


def _all_told(problems: list[StackNotFoundError]) -> StackNotFoundError:
    """One error for all ``problems``: the one itself, or each on a line of its own."""
    if len(problems) == 1:
        return problems[0]
    told = "".join(f"\n  {problem}" for problem in problems[:MOST_PROBLEMS_TOLD])
    more = f"\n  and {len(problems) - MOST_PROBLEMS_TOLD} more" if len(problems) > MOST_PROBLEMS_TOLD else ""
    return StackNotFoundError(f"{len(problems)} of the stacks given cannot be found or read:{told}{more}\n"
                              "fix or remove each of them, then run again")


def _named(path: Path, named_outputs: list[Path]) -> list[Path]:
    if is_our_output(path):
        named_outputs.append(path)
        return []
    return stacks_in(path)


def _globbed(pattern: str) -> list[Path]:
    matches = sorted(glob.glob(_with_literal_folder(pattern)))
    if not matches:
        raise StackNotFoundError("the pattern matches nothing", pattern)
    return _stacks_matched(pattern, [Path(match) for match in matches])


def _with_literal_folder(pattern: str) -> str:
    """``pattern`` with the longest folder it starts with that exists taken literally: ``Pos[3]/*.tif`` is the
    .tif files in the folder ``Pos[3]``, as the folder named alone would be, not in ``Pos3``."""
    folder = os.path.dirname(pattern)
    while folder and not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:  # (the root, or a drive)
            return pattern
        folder = parent
    return glob.escape(folder) + pattern[len(folder):] if folder else pattern


def _listed(list_file: Path, named_outputs: list[Path], problems: list[StackNotFoundError],
            including: tuple[tuple[Path, int, str], ...]) -> list[Path]:
    """The stacks a list file names, one per line (blank lines and ``#`` comments aside); a relative path is
    the list's folder's, as the list was written there. A line naming nothing is a problem naming the line,
    added to ``problems`` while the other lines are read. ``including``: the lists, line numbers and lines
    by which an ``@list`` line led here (a list that includes itself, however far round, is a problem)."""
    if not list_file.is_file():
        raise StackNotFoundError("no such list file", list_file)
    lines = enumerate((line.strip() for line in _list_text(list_file).splitlines()), start=1)
    listed = [(number, line) for number, line in lines if line and not line.startswith("#")]
    if not listed:  # an empty run that exits 0 would look like success
        raise StackNotFoundError("the list file names no stacks", list_file)
    place = "".join(f", included by line {number} of {outer}" for outer, number, _ in reversed(including))
    stacks: list[Path] = []
    for number, line in listed:
        path = list_file.parent / line.removeprefix("@")  # (an absolute path stays as it is)
        try:
            if line.startswith("@"):
                chain = (*including, (list_file, number, line))
                stacks += _listed(path, named_outputs, problems, chain) if not _loop(path, chain, problems) else []
            elif os.path.lexists(path):  # (named as it is, [ ] and all; a broken link is that stack's failed row)
                stacks += _named(path, named_outputs)
            elif glob.has_magic(line):
                stacks += _globbed(str(path))
            else:
                raise StackNotFoundError("no such file or folder", path)
        except StackNotFoundError as error:
            problems.append(StackNotFoundError(f"{error.reason} (line {number} of {list_file}{place})", error.path))
    return stacks


def _loop(list_file: Path, chain: tuple[tuple[Path, int, str], ...], problems: list[StackNotFoundError]) -> bool:
    """Whether ``list_file`` is one of the lists that ``chain`` of ``@list`` lines went through, which would include
    one another for ever; if so, a problem that names those lines is added to ``problems``."""
    real = real_path(list_file)
    start = next((index for index, (outer, _, _) in enumerate(chain) if real_path(outer) == real), None)
    if start is None:
        return False
    steps = ", ".join(f"line {number} of {outer} is {line}" for outer, number, line in chain[start:])
    which = "that line" if len(chain) - start == 1 else "one of those lines"
    problems.append(StackNotFoundError(f"the list includes itself ({steps}); remove {which}", list_file))
    return True


def _list_text(list_file: Path) -> str:
    """A list file's text: UTF-8, with or without the byte-order mark Notepad and Excel write, or UTF-16 by its
    byte-order mark (PowerShell 5's ``>``). Anything else is a StackNotFoundError saying how to save it."""
    try:
        data = list_file.read_bytes()
    except OSError as error:
        raise StackNotFoundError(f"cannot read the list file ({error.strerror or error})", list_file) from None
    encoding = "utf-16" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[: error.start].decode(encoding, errors="replace").count("\n") + 1
        written = "UTF-16" if encoding == "utf-16" else "UTF-8"
        guess = " (saved as ANSI or Latin-1?)" if written == "UTF-8" else ""
        raise StackNotFoundError(
            f"the list file is not {written} text: line {line} holds byte 0x{data[error.start]:02x}, which {written} "
            f"cannot{guess}; save it as UTF-8 (in Notepad: Save As, Encoding UTF-8) and run again", list_file) from None


def _stacks_matched(pattern: str, matches: list[Path]) -> list[Path]:
    """The matches of a glob that can be stacks, by their names: folders (as ``stacks_in`` reads a folder named
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
            stacks += stacks_in(path)
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
    slices = _slices_of_one_folder(stacks)
    if slices is not None:
        warnings.warn(f"{pattern}: each of the {len(slices)} images of {slices[0].parent} it matches is fused as a "
                      f"stack of one slice; to fuse them as one stack, give the folder ({slices[0].parent})",
                      stacklevel=2)
    return stacks


def _slices_of_one_folder(stacks: list[Path]) -> list[Path] | None:
    """The image files among ``stacks`` of the first folder that gives at least two of them, where its first two
    hold one image each: "folder/*" over a folder of slices makes each slice a stack of its own. (Two files are
    looked into, not all: a glob over a thousand multi-page stacks stays quick.)"""
    by_folder: dict[Path, list[Path]] = {}
    for path in stacks:
        if path.is_file():
            by_folder.setdefault(path.parent, []).append(path)
    for files in by_folder.values():
        if len(files) >= 2 and all(_one_image(file) for file in files[:2]):
            return files
    return None


def _one_image(file: Path) -> bool:
    """Whether an image file holds one image (a PNG or JPEG; a TIFF of one page), as far as can be told quickly."""
    if file.suffix.lower() not in TIFF_SUFFIXES:
        return True
    try:
        with tifffile.TiffFile(file) as tiff:
            tiff.pages[1]  # (reads two pages' headers, not all of a long stack's)
    except IndexError:
        return True
    except Exception:  # unreadable: reading it as a stack will say so
        return False
    return False


def _counted(paths: list[Path], one: str, many: str, hint: str) -> str:
    """'2 files that ... (a, b); hint', naming the first three; '' for none."""
    if not paths:
        return ""
    more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
    names = ", ".join(path.name for path in paths[:3]) + more
    return f"{len(paths)} {one if len(paths) == 1 else many} ({names}); {hint}"


def stacks_in(path: Path, tell_outputs: bool = True) -> list[Path]:
    """``path``, or, for a folder of multi-page TIFFs (``_stacks_of_a_folder``: a damaged one among them too), each
    of those files: such a folder holds stacks, not slices (a live session's folder: its ``stack.ome.tif``, as
    ``open_stack`` opens it too). A folder that cannot be listed is one stack: reading it
    is then that stack's failure, and the others go on. A refusion's outputs written into the folder
    (``<name>.fused.tif``, ...: ``--out`` was the folder) are passed over, with a warning where ``tell_outputs``."""
    try:
        if not path.is_dir() or is_ndtiff_dataset(path) or any(path.glob("*MMStack*.ome.tif")):
            return [path]
        if (path / STACK).is_file() and (path / SESSION_REPORT).is_file():
            return [path / STACK]  # a live session's folder: its stack, of one page too (not a folder of images)
        files = image_files(path)
        # (A live session's own fused.tif and depth.tif beside its stack go without saying.)
        outputs = [file for file in path.iterdir() if file.name.endswith((f".{FUSED}", f".{DEPTH}"))
                   and is_our_output(file)]
    except (OSError, StackError):  # permission denied, a slice's link broken: reading it says so
        return [path]
    if outputs and tell_outputs:
        counted = _counted(sorted(outputs), "output of an earlier fusion", "outputs of earlier fusions", OUTPUTS_HINT)
        warnings.warn(f"{path}: skipped {counted}", stacklevel=2)
    return _stacks_of_a_folder(files) or [path]


def _stacks_of_a_folder(files: list[Path]) -> list[Path] | None:
    """Each of a folder's ``files``, where it holds multi-page TIFF stacks: every file a TIFF, and more of them of
    several pages than not. The others (one page, or none readable) are most likely stacks damaged or cut short in
    a copy: each is a stack of its own, whose row says what is wrong with it (``damaged_among_stacks``); the folder
    failing as a whole fused none of the good ones. None for a folder of slices, or of both."""
    stacks = multipage_tiffs(files)
    if files and all(is_tiff(file) for file in files) and len(stacks) > len(files) - len(stacks):
        return files
    return None


# How many TIFFs beside a stack of one page (or none readable) are looked into for multi-page ones: enough for a
# folder of stacks, few for a folder of a thousand slices.
NEIGHBOURS_LOOKED_AT = 3


def damaged_among_stacks(stack: Path) -> str | None:
    """Where the TIFF ``stack`` holds one page, or none readable, and multi-page TIFF stacks are beside it in its
    folder: the words that say it is most likely one of them, damaged or cut short (a copy that stopped); else
    None. Its own reading says what is wrong with the file; this says what it most likely was."""
    if not (is_tiff(stack) and stack.is_file()):
        return None
    pages = tiff_pages(stack)
    if pages is not None and pages > 1:
        return None
    try:
        neighbours = [file for file in image_files(stack.parent) if is_tiff(file) and file.name != stack.name]
    except (OSError, StackError):
        return None
    stacks = multipage_tiffs(neighbours[:NEIGHBOURS_LOOKED_AT])
    if not stacks:
        return None
    this = ("this empty file (0 bytes)" if stack.stat().st_size == 0 else "this file, unreadable as a TIFF" if
            pages is None else "this file of one page" if pages == 1 else "this file of no page")
    example, example_pages = stacks[0]
    return (f"{this}, in a folder of multi-page TIFF stacks (e.g. {example.name}, {example_pages} pages), "
            "is most likely one of them damaged or cut short (a copy that stopped): copy it again from its source")


def check_unique_names(stacks: list[Path]) -> None:
    """Two stacks with one name would overwrite each other's outputs, and a stack named ``summary`` the batch's
    summary: refuse up front, with one ValueError that names every such stack."""
    by_name: dict[str, list[Path]] = {}
    for path in stacks:
        sharing = by_name.setdefault(stack_name(path), [])
        if all(real_path(other) != real_path(path) for other in sharing):  # (one stack twice is not two)
            sharing.append(path)
    told: list[tuple[str, str, str]] = []  # what would happen; what to do, said of it alone; said of several
    for name, paths in by_name.items():
        if f"{name}.json".casefold() == SUMMARY_FILE:  # (one file on macOS and Windows, whatever the case)
            told.append((f"{paths[0]}: its report would be {SUMMARY_FILE}, which the batch's summary overwrites",
                         "rename the stack", f"rename a stack named {name}"))
        if len(paths) > 1:
            told.append((f"{_together(paths)} would {'both' if len(paths) == 2 else 'all'} write "
                         f"{refusion_outputs(Path(), name)['fused']}", "refuse them into different --out folders",
                         "refuse stacks that share a name into different --out folders"))
    if len(told) == 1:
        raise ValueError(f"{told[0][0]}; {told[0][1]}")
    if told:
        more = f"\n  and {len(told) - MOST_PROBLEMS_TOLD} more" if len(told) > MOST_PROBLEMS_TOLD else ""
        raise ValueError(f"{len(told)} stack names would overwrite outputs:"
                         + "".join(f"\n  {what}" for what, _, _ in told[:MOST_PROBLEMS_TOLD])
                         + f"{more}\n{'; '.join(dict.fromkeys(advice for _, _, advice in told))}; then run again")


def _together(paths: list[Path]) -> str:
    """'a and b', 'a, b and c'."""
    return " and ".join(filter(None, [", ".join(map(str, paths[:-1])), str(paths[-1])]))


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
