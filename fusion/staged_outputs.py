"""A refused stack's outputs written aside and put in place together: all of one run's, or none.

Each writer stages its outputs in a hidden folder of its own, ``.<name>.partial/<pid>-<random>/`` beside their
places (hidden: no glob or folder of stacks takes it for one), and moves them into place as a set while it holds
the stack name's lock in the output folder (``.<name>.lock``). Two runs writing the same stack into the same
folder at once each keep their own files, and the set left is one run's, never a mix (a report of one run's
settings beside another's images, which ``--resume`` then kept for good).

A writer that died (SIGKILL, the OOM killer, a power cut) leaves its folder; the next writer of that name removes
it. A live writer holds a lock on its folder's ``.writer`` file, which the kernel lets go however the process ends.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from fusion.errors import OutputError
from fusion.held_signals import signals_held

try:
    import fcntl
except ImportError:  # Windows: no flock; each run still writes into a folder of its own
    fcntl = None  # type: ignore[assignment]

ORDER = ("fused", "depth", "report")  # the report last: --resume takes a set with a report for finished
WRITER_FILE = ".writer"  # in a writer's own folder, locked while it lives
REPORT_SET_ASIDE = ".replaced.json"  # the report of the set in place before, while this writer's set moves in
# Another writer holds a name's lock while it moves three files into place or clears a dead writer's folder:
# milliseconds. Much longer, and it is stuck.
LOCK_WAIT_S = 60.0
LOCK_POLL_S = 0.01


class StagedOutputs:
    """A stack's outputs, written into a hidden folder of this writer's own (``write``) and moved to their places
    together once all are written (``move_into_place``): a full disk, anything in the way, or another run writing
    the same stack leaves none of them, or another run's whole set, so neither ``--resume`` nor a person meets a
    fused image without its depth map and report, or with another run's."""

    def __init__(self, paths: dict[str, Path], stack: Path):
        self.paths = paths
        self.stack = stack
        report = paths["report"]
        self.out_dir = report.parent
        self.name = report.name.removesuffix(".json")
        self.staging = self.out_dir / f".{self.name}.partial"  # every writer's of this name, each in its own folder
        self.folder: Path | None = None  # this writer's, made at the first write
        self._writer_lock: int | None = None

    def write(self, kind: str, writer: Callable[[Path], None]) -> None:
        """``writer(path)`` writes output ``kind`` at the temporary ``path`` it is given."""
        try:
            writer(self._own_folder() / self.paths[kind].name)
        except OSError as error:
            raise self._cannot_write(kind, error) from None

    def move_into_place(self) -> None:
        """The outputs moved to their places, the report last, while no other writer of this name moves its own.
        The report of a set already there is set aside first: a reader meanwhile (another run's ``--resume``), or
        a kill midway, meets a set without a report, never one that is part this run's and looks finished."""
        folder = self._own_folder()
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self._name_lock())
            except OSError as error:
                raise self._cannot_write("fused", error) from None
            held.enter_context(signals_held())  # (in the main thread: a stop waits until the set is in place)
            aside = _set_aside(self.paths["report"], folder / REPORT_SET_ASIDE)
            moved = False
            for kind in ORDER:
                try:
                    os.replace(folder / self.paths[kind].name, self.paths[kind])
                except OSError as error:
                    if moved:  # a set of this run's and an earlier run's files would look finished: none, then
                        for path in self.paths.values():
                            with contextlib.suppress(OSError):  # (what stood in the way may not go either)
                                path.unlink()
                    elif aside:  # nothing of this run's in place: the set there stays whole
                        with contextlib.suppress(OSError):
                            os.replace(folder / REPORT_SET_ASIDE, self.paths["report"])
                    raise self._cannot_write(kind, error) from None
                moved = True

    def discard(self) -> None:
        """This writer's folder removed, with whatever is left in it (all of it, after a failure); the shared hidden
        folder too, once no writer of this name has one there."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        if self._writer_lock is not None:
            os.close(self._writer_lock)  # (after the folder went: until then, it was a live writer's)
            self._writer_lock = None
        # Only while holding the name's lock: a writer making its folder holds it. Held by another writer now,
        # that writer removes the shared folder when it is done.
        with contextlib.suppress(OSError), self._name_lock(wait_s=0.0):
            os.rmdir(self.staging)  # (fails where another writer's folder is still there)

    def new_folder(self) -> Path:
        """A new folder of this writer's own in the shared hidden one, which exists."""
        return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=self.staging))

    def _own_folder(self) -> Path:
        """This writer's folder, made (under the name's lock, clearing dead writers' folders first) at first use."""
        if self.folder is None:
            with self._name_lock():
                _remove_dead_writers(self.staging)
                self.staging.mkdir(exist_ok=True)
                self.folder = self.new_folder()  # (failing midway, ``discard`` removes what was made)
                self._writer_lock = os.open(self.folder / WRITER_FILE, os.O_CREAT | os.O_RDWR, 0o600)
                _lock_now(self._writer_lock)  # (new: no one else has it)
        return self.folder

    def _name_lock(self, wait_s: float = LOCK_WAIT_S) -> contextlib.AbstractContextManager[None]:
        """The stack name's lock in the output folder (``name_lock``)."""
        return name_lock(self.out_dir, self.name, wait_s)

    def _cannot_write(self, kind: str, error: OSError) -> OutputError:
        """One line naming the output and its folder (not the temporary one) and why."""
        path = self.paths[kind]
        # (fusion.outputs names the temporary file it was writing: the reason alone, after that)
        why = error.strerror if error.errno == errno.EAGAIN and error.strerror else \
            os.strerror(error.errno) if error.errno else \
            str(error).removeprefix(f"cannot write {path.name} into {self.folder}: ")
        advice = "; free some space there or write elsewhere" if error.errno == errno.ENOSPC else ""
        return OutputError(f"cannot write {path.name} into {path.parent}: {why}{advice}", self.stack)


@contextlib.contextmanager
def name_lock(out_dir: Path, name: str, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """The lock of ``name`` in the output folder (``.<name>.lock``) held while the block runs: by one writer at a
    time, in this process or any other. An OSError where it cannot be made there, or is held by another for
    ``wait_s``."""
    path = out_dir / f".{name}.lock"
    deadline = time.monotonic() + wait_s
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        if not _lock_now(fd):
            os.close(fd)
            if time.monotonic() >= deadline:
                raise OSError(errno.EAGAIN, f"another run has held {path} for over {wait_s:g} s; if none is "
                                            "writing there any more, remove that file") from None
            time.sleep(LOCK_POLL_S)
            continue
        # The holder before removes the file as it lets go: locked, this one must still be the one there.
        if _same_file(fd, path):
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # (locked: those waiting on this file see it gone and make another)
        os.close(fd)


def _lock_now(fd: int) -> bool:
    """Whether an exclusive lock on the open file ``fd`` was taken, without waiting: False where another holds it.
    True where the system has no flock (Windows: two runs writing one stack at once are the user's to keep apart)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        there = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (held.st_dev, held.st_ino)


def _set_aside(report: Path, aside: Path) -> bool:
    """``report`` (a file, where there is one) moved to ``aside``; whether it was."""
    if not report.is_file():  # (a folder in the way stays where it is, and the move fails on it)
        return False
    try:
        os.replace(report, aside)
    except OSError:  # (then the move fails on it, or replaces it)
        return False
    return True


def _remove_dead_writers(staging: Path) -> None:
    """Every writer's folder in ``staging`` whose writer is gone (its ``.writer`` file unlocked, or never made),
    and anything else there (an earlier version's staged files); call it holding the name's lock."""
    try:
        entries = list(staging.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if not entry.is_dir() or entry.is_symlink():
            with contextlib.suppress(OSError):
                entry.unlink()
        elif not _writer_alive(entry):
            shutil.rmtree(entry, ignore_errors=True)


def _writer_alive(folder: Path) -> bool:
    """Whether the writer of ``folder`` still runs: it holds its ``.writer`` file's lock (without flock: taken for
    alive, the folder left alone)."""
    if fcntl is None:
        return True
    try:
        fd = os.open(folder / WRITER_FILE, os.O_RDWR)
    except OSError:  # none: its writer died making it (a live one makes it holding the name's lock)
        return False
    try:
        return not _lock_now(fd)
    finally:
        os.close(fd)


def writing_now(out_dir: Path, name: str) -> bool:
    """Whether a live writer (of any process on any machine that shares ``out_dir``, where flock reaches it) is
    writing the outputs of stack ``name`` into ``out_dir`` now."""
    try:
        folders = [entry for entry in (Path(out_dir) / f".{name}.partial").iterdir() if entry.is_dir()]
    except OSError:  # none: nobody writes that stack
        return False
    return any(_writer_alive(folder) for folder in folders)
