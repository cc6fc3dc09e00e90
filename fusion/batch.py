"""Refusing many saved stacks on dask.distributed, from a laptop to a cluster.

Workers read stacks by path and write their outputs straight to the output folder; only
small reports (a few numbers per stack) travel through the scheduler. A stack that cannot
be fused is one failed row, never the end of the batch. A worker that dies mid-stack has
its stack rescheduled on another worker by dask (up to ``distributed.scheduler.allowed-failures``);
a stack whose workers all died is tried once more, alone, once the others are done (dask gave up
on every stack queued beside the one that killed them). An output folder that fills up, turns read-only or denies
permission to write, or whose writes fail with an I/O error for ``IO_ERRORS_TO_STOP`` stacks in a row, ends the batch:
the stacks left are not run, but for those a worker finished meanwhile (done). A scheduler that goes
away mid-batch ends it: each stack whose outputs are then complete is done, the others lost (its workers stop them
when they lose it). A batch's task keys carry a token of its own: on a scheduler that others use, nobody else's task is
ever taken for its own. On the local cluster, workers that die as they start, again and again, end the batch: the
stacks left are not run, and one line says why.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
import unicodedata
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tifffile
from tqdm import tqdm

from fusion.allocator import keep_freed_memory
from fusion.batch_progress import ProgressLines, is_terminal
from fusion.engine import FusionSettings
from fusion.errors import FusionError
from fusion.held_signals import signals_deferred, signals_held
from fusion.local_workers import GivingUpNanny, WorkerDeaths, watched_worker_deaths, workers_gave_up
from fusion.errors import OutputError
from fusion.outputs import DENIED, FULL, READ_ONLY, io_error, make_folder, unwritable_folder, write_json
from fusion.readers import stack_name
from fusion.stack_fingerprint import stack_fingerprint
from fusion.staged_outputs import name_lock, writing_now
from fusion.output_names import refusion_outputs
from fusion.refuse import RefusionStopped, refuse_stack
from fusion.refuse_report import RefuseReport
from fusion.stack_arguments import (SUMMARY_FILE, absolute_path, check_unique_names, damaged_among_stacks,
                                    real_path)

# The status of a stack left unfused because the output folder could not be written any more, or because the local
# cluster's workers could not start again
NOT_RUN = "not run"
WORKERS_CANNOT_START = "the local cluster's worker processes could not start again"
LOST = "lost"  # the status of a stack left unfused because the scheduler went away mid-batch
NO_WORKERS_NOTE_S = 10.0  # a scheduler without workers for this long is said, once; the batch waits on
WORKERS_CHECK_S = 2.0  # while no stack completes, how often the batch asks whether the scheduler still has workers
STOP_WAIT_S = 10.0  # after a stop, how long a scheduler's workers are given to let go of the batch's stacks
# After the scheduler went away: how long without a worker writing one of the batch's stacks into --out before the
# stacks are counted (a worker that loses its scheduler stops its stacks at their next slice: well under a second)
SETTLE_S = 1.5
# Writes into --out that failed with EIO, for this many stacks in a row (none written between): the disk is failing,
# and the batch stops as for a full one. Fewer are each stack's own failure (one bad block is not a dead disk).
IO_ERRORS_TO_STOP = 3
# Why the output folder took no more writes (``fusion.outputs.unwritable_folder``, and ``IO_FAILING``): how the
# stacks left say it ("not run: OUT is full"), and what to do before --resume.
IO_FAILING = "I/O errors"
UNWRITABLE_SAID = {
    FULL: ("is full", "free some space there"),
    READ_ONLY: ("is read-only", "make it writable again (its file system turned read-only, most often after a disk "
                "error: check the disk, remount it read-write)"),
    DENIED: ("cannot be written: permission denied", "give this user write permission there again (ls -ld shows its "
             "owner and mode)"),
    IO_FAILING: (f"gives I/O errors (EIO) on write, for {IO_ERRORS_TO_STOP} stacks in a row",
                 "check its disk (dmesg, smartctl), or write elsewhere"),
}


class ClusterStartError(FusionError):
    """Raised when the local cluster cannot start its worker processes (one died as it started: most often for
    lack of memory)."""


@dataclass
class StackOutcome:
    """One row of a batch: what became of one stack."""

    stack: str
    name: str
    status: str                 # "done", "failed", "skipped" (outputs already complete), "not run" (--out full,
    #                             read-only, not writable or failing) or "lost" (the scheduler went away before it was
    #                             fused)
    slices: int | None = None
    seconds: float | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)   # e.g. one slice only, no focus information
    # Failed as every stack after it would: the output folder is ``FULL``, ``READ_ONLY`` or ``DENIED`` (the batch
    # stops; not in the summary)
    out_unwritable: str | None = None
    # Failed writing its outputs with EIO: ``IO_ERRORS_TO_STOP`` of these in a row stop the batch (not in the summary)
    out_io_error: bool = False
    # Not run: the local cluster's workers died as they started, again and again; why (not in the summary)
    no_workers: str | None = None


def finished_report(out_dir: Path, stack: Path, settings: FusionSettings) -> RefuseReport | None:
    """The report of ``stack`` when all its outputs are in place (the report is written last) and whole
    (``_tiff_of_size``), were made with ``settings`` (those that change the outputs: ``that_count``; an option with
    no effect fuses nothing again) and from this stack as it is now (``stack_fingerprint``: not another one of the
    same name, nor this one before slices were added or replaced); None when it must be fused (again)."""
    paths = refusion_outputs(out_dir, stack_name(stack))
    if not all(path.is_file() for path in paths.values()):
        return None
    try:
        report = RefuseReport.from_json(json.loads(paths["report"].read_text()))
    except (OSError, ValueError, TypeError):  # unreadable, or written by another version: fuse again
        return None
    # Those that change the outputs, as the report stores them: through JSON, so 32 and 32.0 or a tuple and a list
    # compare equal. A setting added since the report was written is taken at its default, which is what the version
    # before it did (a report from before --weights was made with the shipped weights). Settings of another version's
    # (keys this one does not know, values it took and this one does not): fuse again.
    recorded = with_later_settings_at_their_defaults(report.settings, FusionSettings().to_json())
    if recorded is None:
        return None
    try:
        made_with = FusionSettings(**recorded).that_count()
    except (TypeError, ValueError):
        return None
    if made_with != settings.that_count():
        return None
    if report.source_fingerprint is None or report.source_fingerprint != stack_fingerprint(stack):
        return None
    height, width = report.shape[:2]
    if not (_tiff_of_size(paths["fused"], height, width) and _tiff_of_size(paths["depth"], height, width)):
        return None
    return report


def with_later_settings_at_their_defaults(recorded, defaults: dict) -> dict | None:
    """``recorded`` (settings as a report's JSON holds them) with each key of ``defaults`` (this version's settings
    at their defaults, as JSON) that it lacks added at its default value, in nested mappings too (a pyramid's
    powers): a setting added after the report was written, which that version did not have and so did as its
    default does. None where ``recorded`` is not a mapping or has a key that ``defaults`` lacks (another version's
    setting: nothing says what it did)."""
    if not isinstance(recorded, dict) or set(recorded) - set(defaults):
        return None
    filled = {}
    for key, default in defaults.items():
        if key not in recorded:
            filled[key] = default
        elif isinstance(default, dict) and isinstance(recorded[key], dict):
            inner = with_later_settings_at_their_defaults(recorded[key], default)
            if inner is None:
                return None
            filled[key] = inner
        else:
            filled[key] = recorded[key]
    return filled


def _tiff_of_size(path: Path, height: int, width: int) -> bool:
    """Whether ``path`` is a TIFF whose every page is ``height`` x ``width`` and whose file holds all their pixel
    data (not cut short), by its header alone: a damaged output is fused again, not skipped."""
    try:
        size = path.stat().st_size
        with tifffile.TiffFile(path) as tiff:
            pages = list(tiff.pages)
            return bool(pages) and all(
                page.shape[:2] == (height, width)
                and max(offset + count for offset, count in zip(page.dataoffsets, page.databytecounts)) <= size
                for page in pages)
    except (OSError, ValueError):  # not a TIFF at all (tifffile's TiffFileError is a ValueError)
        return False


def _fused_from_another_stack(out_dir: Path, stack: Path) -> str | None:
    """The stack that ``out_dir``'s outputs of this name were fused from, where it is not ``stack``."""
    try:
        earlier = json.loads(refusion_outputs(out_dir, stack_name(stack))["report"].read_text())["stack"]
        return earlier if real_path(Path(earlier)) != real_path(stack) else None
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or not one of our reports
        return None


def refuse_for_batch(path: Path, out_dir: Path, settings: FusionSettings,
                     numba_threads: int | None = None, progress: bool | None = False,
                     run: str | None = None) -> StackOutcome:
    """Fuse one stack and report it; a stack that cannot be fused is a failed outcome, not an error.

    Runs on a dask worker: nothing but this small record goes back to the client. ``run``: the batch's token, by
    which ``_stop_stacks_of`` stops it.
    """
    if numba_threads:  # a worker of our own LocalCluster: the process is ours to tune
        import numba

        available = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]  # numba sets it at import
        numba.set_num_threads(max(1, min(numba_threads, available)))
        keep_freed_memory()
        # Its stderr is the user's terminal: a damaged TIFF is said in the stack's own error line, as in a process
        # of one stack (run_session.py), not also in tifffile's log lines without a file name.
        logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    name = stack_name(path)
    started = time.perf_counter()
    try:
        with _stoppable(run) as stop:
            report = refuse_stack(path, out_dir, settings, progress=progress, stop=stop)
    except RefusionStopped:  # (its future is cancelled: nobody reads this)
        return StackOutcome(str(path), name, "interrupted", seconds=time.perf_counter() - started)
    except (FusionError, OSError) as error:
        unwritable = unwritable_folder(error, out_dir)
        damaged = None if unwritable else damaged_among_stacks(path)
        return StackOutcome(str(path), name, "failed", seconds=time.perf_counter() - started,
                            error=str(error) if damaged is None else f"{error}; {damaged}", out_unwritable=unwritable,
                            out_io_error=unwritable is None and isinstance(error, OutputError) and io_error(error))
    except Exception as error:  # a bug must cost one stack, and say so, not the whole batch
        return StackOutcome(str(path), name, "failed", seconds=time.perf_counter() - started,
                            error=f"{path}: unexpected {type(error).__name__}: {error}")
    # (a stack of one slice: a whole one, or one cut short at a page's end)
    damaged = damaged_among_stacks(path) if report.n_slices == 1 else None
    return StackOutcome(str(path), report.name, "done", slices=report.n_slices,
                        seconds=report.seconds["total"], error=None,
                        warnings=report.warnings + ([f"{path}: {damaged}"] if damaged else []))


# On a worker: the threads fusing a stack, with their batch's token and the event that stops the stack. Dask's cancel
# leaves a running task to finish (it cannot stop a thread): a stopped batch's stacks wrote their outputs after the
# program ended, and a prompt --resume fused them a second time beside them. The stack stops itself at its next slice
# (``refuse_stack``'s ``stop``): an exception raised into the thread from outside (PyThreadState_SetAsyncExc) could
# land inside a library's own bookkeeping, and one that landed in numba's first load of a kernel left every later
# stack on that worker failing ("generator raised StopIteration").
_fusing_lock = threading.Lock()
_fusing: dict[int, tuple[str, threading.Event]] = {}


class _StopOrSchedulerGone(threading.Event):
    """A stack's stop on a worker: set by ``_stop_stacks_of``, and as good as set once the worker has lost its
    scheduler. A ``dask worker`` outlives a scheduler that is killed, and finished its stacks into --out after the
    program had given them up for lost and written its summary; the program cannot reach the worker any more, so the
    worker stops them itself."""

    def __init__(self, worker):
        super().__init__()
        self._worker = worker

    def is_set(self) -> bool:
        return super().is_set() or (self._worker is not None and _lost_its_scheduler(self._worker))


def _lost_its_scheduler(worker) -> bool:
    """Whether ``worker`` (a dask Worker) has lost its connection to its scheduler, or is closing (which it does
    when it has)."""
    from distributed.worker import WORKER_ANY_RUNNING

    comm = getattr(worker.batched_stream, "comm", None)
    return worker.status not in WORKER_ANY_RUNNING or comm is None or comm.closed()


def _this_worker():
    """The dask Worker running this task, or None (a plain thread: a stack fused in the program's own process)."""
    from distributed import get_worker

    try:
        return get_worker()
    except ValueError:  # ("No worker found")
        return None


@contextlib.contextmanager
def _stoppable(run: str | None):
    """While the block runs in this thread, ``_stop_stacks_of(run)`` sets the event it yields (None without a run);
    on a worker that loses its scheduler, the event reads as set."""
    if run is None:
        yield None
        return
    ident, stop = threading.get_ident(), _StopOrSchedulerGone(_this_worker())
    with _fusing_lock:
        _fusing[ident] = (run, stop)
    try:
        yield stop
    finally:
        with _fusing_lock:
            _fusing.pop(ident, None)


def _stop_stacks_of(run: str) -> int:
    """On a worker (``Client.run``): stop each stack of batch ``run`` it is fusing; returns how many."""
    with _fusing_lock:
        stops = [stop for owner, stop in _fusing.values() if owner == run]
    for stop in stops:
        stop.set()
    return len(stops)


def _stacks_fusing(run: str) -> int:
    """On a worker (``Client.run``): how many stacks of batch ``run`` it is still fusing."""
    with _fusing_lock:
        return sum(owner == run for owner, _ in _fusing.values())


def refuse_many(stacks: list[Path], out_dir: Path, settings: FusionSettings | None = None,
                scheduler: str | None = None, n_workers: int | None = None, resume: bool = False,
                progress: bool | None = None, on_outcome=None) -> list[StackOutcome]:
    """Fuse every stack into ``out_dir``; returns one outcome per stack, in the order given.

    With ``scheduler`` (``tcp://host:port``) the work goes to that dask cluster; otherwise a
    single stack is fused in this process and several go to a LocalCluster of ``n_workers``
    processes (default: one per core; no more than the stacks to fuse). ``resume`` skips stacks whose
    outputs are complete and whole and were made with the same settings.
    ``on_outcome(outcome)`` is called in this process as each stack finishes (e.g. a live view).
    """
    settings = settings or FusionSettings()
    out_dir = Path(out_dir)
    make_folder(out_dir, "the output folder")
    check_unique_names(stacks)
    outcomes = _Outcomes(on_outcome)
    todo = []
    replacing: dict[int, str] = {}  # by stack index: the other stack of that name whose outputs are in out_dir
    for index, path in enumerate(stacks):
        report = finished_report(out_dir, path, settings) if resume else None
        if report is not None:  # the row keeps the numbers of the run that fused it
            outcomes[index] = StackOutcome(str(path), stack_name(path), "skipped", slices=report.n_slices,
                                           seconds=report.seconds.get("total"), warnings=list(report.warnings))
        else:
            todo.append(index)
            earlier = _fused_from_another_stack(out_dir, path)
            if earlier is not None:
                replacing[index] = earlier
    try:
        _fuse_todo(stacks, todo, out_dir, settings, scheduler, n_workers, outcomes, progress)
    finally:  # said once the outputs are replaced: said before, it was wrong for a stack that then failed
        for index, earlier in replacing.items():
            if index in outcomes and outcomes[index].status == "done":
                fused = refusion_outputs(out_dir, stack_name(stacks[index]))["fused"]
                warnings.warn(f"{stacks[index]}: replaced {fused}, fused earlier from another stack of that name "
                              f"({earlier})", stacklevel=2)
    return [outcomes[index] for index in range(len(stacks))]


def _fuse_todo(stacks, todo, out_dir, settings, scheduler, n_workers, outcomes, progress) -> None:
    """Fuse the stacks at the indices ``todo``: one in this process, several on dask."""
    if todo and scheduler is None and len(todo) == 1:
        # One stack: no cluster to start; its own bar counts slices.
        lone = stacks[todo[0]]
        # "." or "..": named as the folder it is (its outputs were ".fused.tif"), as a worker gets it (absolute)
        lone = absolute_path(lone) if lone.name in ("", "..") else lone
        outcomes[todo[0]] = refuse_for_batch(lone, out_dir, settings, progress=progress)
    elif todo:
        # A bar on a terminal; where stderr is a file or a pipe (nohup, cron, | tee) a bar shows nothing until the
        # end, and a line now and then does.
        plain = progress is None and not is_terminal(sys.stderr)
        with (ProgressLines(len(stacks), outcomes) if plain else
              tqdm(total=len(stacks), initial=len(outcomes), desc="stacks", unit="stack",
                   disable=None if progress is None else not progress)) as bar:
            _run_on_dask(stacks, todo, out_dir, settings, scheduler, n_workers, outcomes, bar)


class _Outcomes(dict):
    """Outcomes by stack index, announcing each as it arrives."""

    def __init__(self, on_outcome):
        super().__init__()
        self._on_outcome = on_outcome

    def __setitem__(self, index, outcome):
        super().__setitem__(index, outcome)
        if self._on_outcome is not None:
            self._on_outcome(outcome)


def local_cluster_size(n_workers: int | None, n_stacks: int) -> int:
    """The worker processes of our local cluster: ``n_workers`` (default one per core), never more than the
    stacks to fuse (a worker without a stack would only take memory)."""
    return min(n_workers or os.cpu_count() or 1, n_stacks)


# Our local cluster's nannies restart a worker that dies; dask's cluster object also closes the nanny of a worker that
# has not registered again within ``distributed.deploy.lost-worker-timeout`` (15 s) of any of its deaths. A stack that
# kills its worker at once, each time, on a loaded machine (a restart there took 6-18 s, and the timer of an earlier
# death fires while the nanny is restarting after a later one): the nanny was closed, the cluster had no worker left,
# and the batch waited for one for ever. Its nannies are closed when the batch ends, not before.
LOCAL_LOST_WORKER_TIMEOUT = "3650 days"


def _run_on_dask(stacks, todo, out_dir, settings, scheduler, n_workers, outcomes, bar) -> None:
    import dask
    # Imported before the set: it adds its config defaults, "distributed" among them. Imported inside, the set's
    # end took the whole "distributed" section away again (not there when it began), and this process's next dask
    # compute or batch failed with KeyError: 'distributed'.
    import distributed  # noqa: F401

    # (read when a worker is removed, on the cluster's own thread: set for as long as the cluster lives)
    with dask.config.set({"distributed.deploy.lost-worker-timeout": LOCAL_LOST_WORKER_TIMEOUT}):
        _run_on_dask_configured(stacks, todo, out_dir, settings, scheduler, n_workers, outcomes, bar)


def _run_on_dask_configured(stacks, todo, out_dir, settings, scheduler, n_workers, outcomes, bar) -> None:
    with watched_worker_deaths() as deaths:
        _run_on_dask_watched(stacks, todo, out_dir, settings, scheduler, n_workers, outcomes, bar, deaths)


def _run_on_dask_watched(stacks, todo, out_dir, settings, scheduler, n_workers, outcomes, bar,
                         deaths: WorkerDeaths) -> None:
    from distributed import Client, LocalCluster

    cluster = None
    numba_threads = None
    try:
        if scheduler is None:
            n_workers = local_cluster_size(n_workers, len(todo))
            numba_threads = max(1, (os.cpu_count() or 1) // n_workers)
            # Loopback only and no dashboard: nothing else listens.
            # (The scheduler's small HTTP server, health checks only, on a free loopback port: on 8787 a
            # second batch would print a warning that the port is taken.)
            # A Ctrl-C while it starts waits until it has: cut short, its half-started workers could not be
            # closed (dask's exit hook then failed with a traceback).
            with signals_held("the cluster is starting; the batch stops as soon as it has"), _workers_deaf_to_ctrl_c():
                try:
                    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
                                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                           worker_class=GivingUpNanny,  # (gives up on workers that die as they start)
                                           preload=[__name__])  # dask_setup below, in each worker process
                except (RuntimeError, TimeoutError) as error:  # "Nanny failed to start.", "... start timed out"
                    # (dask closed what had started; its traceback said nothing a person can act on)
                    why = deaths.said() if deaths.last is not None else \
                        "one died, or hung, as it started, most often out of memory; try --workers 1, or close other " \
                        "programs"
                    raise ClusterStartError(f"the local cluster could not start its worker processes ({n_workers} "
                                            f"asked; dask: {type(error).__name__}): {why}") from None
        client = Client(cluster if cluster is not None else scheduler, timeout="30s")
        try:
            if cluster is None:
                _wait_for_workers(client, scheduler)
            _gather(client, stacks, todo, out_dir, settings, numba_threads, outcomes, bar,
                    scheduler_said=which_scheduler(scheduler), deaths=deaths if cluster is not None else None)
        except KeyboardInterrupt:
            _quiet_cluster_logs()
            raise
        finally:
            with _closing_notice():
                client.close()
    finally:
        if cluster is not None:
            with _closing_notice():
                cluster.close()


def which_scheduler(scheduler: str | None) -> str:
    """The scheduler in a person's words: "the scheduler at ADDRESS", or the local cluster's."""
    return f"the scheduler at {scheduler}" if scheduler else "the local cluster's scheduler"


def scheduler_gone_line(outcomes: list[StackOutcome], scheduler: str | None) -> str | None:
    """The one line that says the scheduler went away mid-batch, where it did (stacks ``LOST``): how many stacks were
    lost, and what to do; None otherwise."""
    lost = sum(outcome.status == LOST for outcome in outcomes)
    if not lost:
        return None
    done = sum(outcome.status in ("done", "skipped") for outcome in outcomes)
    return (f"{which_scheduler(scheduler)} went away mid-batch (the connection to it was lost): {lost} of "
            f"{len(outcomes)} stacks were not fused ({done} are, their outputs complete); start it again (or leave "
            "--scheduler out) and run the same command with --resume to fuse the rest; its workers stop the "
            "batch's stacks when they lose it, but one that has not noticed yet may still finish one, which --resume "
            "then skips")


def workers_gone_line(outcomes: list[StackOutcome]) -> str | None:
    """The one line that says the local cluster's workers could not start again, where they could not (stacks
    ``NOT_RUN`` for it): why, how many stacks were not fused, and what to do; None otherwise."""
    gone = [outcome for outcome in outcomes if outcome.no_workers]
    if not gone:
        return None
    done = sum(outcome.status in ("done", "skipped") for outcome in outcomes)
    fused = {0: "none is", 1: "1 is, its outputs complete"}.get(done, f"{done} are, their outputs complete")
    return (f"{WORKERS_CANNOT_START}, and {len(gone)} of {len(outcomes)} stacks were not fused ({fused}): "
            f"{gone[0].no_workers}; then run the same command with --resume to fuse the rest")


def _wait_for_workers(client, address: str) -> None:
    """Returns once the scheduler at ``address`` has a worker (dask waits for one silently, for ever: a cluster whose
    jobs are still queued, or were never started, looked like a hung program). After ``NO_WORKERS_NOTE_S`` without
    one, a note says so, once; Ctrl-C still ends the wait."""
    try:
        client.wait_for_workers(1, timeout=NO_WORKERS_NOTE_S)
    except TimeoutError:  # (dask's WorkerStartTimeoutError)
        tqdm.write(f"note: the scheduler at {address} has no workers yet; start some with `dask worker {address}` "
                   "(or your cluster's jobs); waiting for them (Ctrl-C stops)", file=sys.stderr)
        client.wait_for_workers(1)


def _quiet_cluster_logs() -> None:
    """Stopping on Ctrl-C, or the scheduler gone: the cluster's connections close under tasks in flight, and tornado
    and dask log each callback that meets a closed one (a reconnection cut short), with a traceback that says nothing
    about the stacks (the program's own message says what finished). The batch is ending: its loggers stay quiet
    from here."""
    roots = ("tornado.application", "tornado.general", "distributed", "asyncio")
    # (dask's logging config gives some of its loggers a level of their own, "distributed.client" among them: the
    # parent's level does not reach those)
    for name in [*roots, *(name for name in list(logging.root.manager.loggerDict) if name.startswith(roots))]:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _gather(client, stacks, todo, out_dir, settings, numba_threads, outcomes, bar, scheduler_said: str,
            deaths: WorkerDeaths | None) -> None:
    """Submit every stack to the cluster and record each outcome as it comes; those whose workers all died (dask's
    KilledWorker) once more, each alone, after the others. A stop (Ctrl-C) stops what is left of the batch on the
    cluster before it goes on. ``deaths``: our own local cluster's (None for a scheduler's)."""
    batch = _DaskBatch(client, stacks, out_dir, settings, numba_threads, scheduler_said, outcomes, bar, deaths)
    try:
        batch.fuse(todo)
        # Dask gives up on every stack that was on a worker when it died, the innocent beside the one that killed it:
        # alone, the innocent is fused, and the culprit fails on its own.
        while batch.alone_next and not batch.out_unwritable and not batch.scheduler_lost and not batch.workers_gone:
            batch.fuse([batch.alone_next.pop(0)], alone=True)
    except BaseException:
        with signals_deferred("stopping this batch's stacks on the cluster; the program ends when it has"):
            batch.stop()
        raise


class _DaskBatch:
    """One batch's stacks on a dask cluster.

    Its task keys carry a token of its own: dask gives a second client that submits a key the first client's
    task and result, so two batches on one scheduler naming their stacks alike (``day1/stack_001.tif`` and
    ``day2/stack_001.tif``) took each other's, and one wrote nothing and said every stack was done."""

    def __init__(self, client, stacks, out_dir, settings, numba_threads, scheduler_said: str, outcomes, bar,
                 deaths: WorkerDeaths | None = None):
        """``scheduler_said``: ``which_scheduler``'s words (our own local cluster's: numba_threads is set, and
        ``deaths`` says what its nannies logged of their workers' deaths)."""
        self.client = client
        self.stacks = stacks
        self.out_dir = out_dir
        self.settings = settings
        self.numba_threads = numba_threads
        self.local = numba_threads is not None
        self.scheduler_said = scheduler_said
        self.outcomes = outcomes
        self.bar = bar
        self.token = secrets.token_hex(8)
        self.pending: dict = {}  # future: stack index, of the futures submitted and not yet recorded
        self.alone_next: list[int] = []  # stacks whose workers all died, to fuse once more, each alone
        self.out_unwritable = False  # the output folder takes no more writes: the rest are not run
        self.io_errors_in_a_row = 0  # stacks whose writes into --out failed with EIO since the last one written
        self.scheduler_lost = False  # the scheduler went away: the stacks left are done (on disk) or lost
        self.deaths = deaths
        self.workers_gone = False  # the local cluster's workers could not start again: the stacks left are not run

    def fuse(self, indices: list[int], alone: bool = False) -> None:
        """Submit ``indices`` and record each outcome as it comes."""
        for index in indices:
            path = self.stacks[index]
            future = self.client.submit(
                refuse_for_batch, absolute_path(path), absolute_path(self.out_dir), self.settings, self.numba_threads,
                run=self.token, key=f"refuse-{self.token}-{index}-{stack_name(path)}{'-alone' if alone else ''}",
                pure=False)
            self.pending[future] = index
        try:
            self._record_as_they_come(alone)
        except _WorkersCannotStart:
            self._not_run_without_workers()

    def _record_as_they_come(self, alone: bool) -> None:
        """Each pending stack's outcome, as it comes (``_as_completed``), until all came or the batch stops."""
        for future in self._as_completed(list(self.pending)):
            index = self.pending.pop(future, None)
            if index is None:  # recorded already (the rest of the batch, once the output folder filled up)
                continue
            try:
                outcome = self._outcome(future, index, alone)
            except _SchedulerGone:
                self._count_what_is_on_disk()
                return
            if outcome is None:
                self.alone_next.append(index)
                continue
            if outcome.status == "done":
                self.io_errors_in_a_row = 0
            elif outcome.out_io_error:
                self.io_errors_in_a_row += 1
                if self.io_errors_in_a_row >= IO_ERRORS_TO_STOP:
                    outcome.out_unwritable = IO_FAILING
            if outcome.out_unwritable:
                self._stop_for_unwritable_out(index, outcome)
                return
            self._record(index, outcome)

    def _as_completed(self, futures: list) -> Iterator:
        """``futures`` as each completes (stacks in order where several do at once). While none does, a scheduler
        that has had no worker for ``NO_WORKERS_NOTE_S`` is said, once each time it loses them all: the batch waits for
        them (all of them died, and none came back: a cluster that gave up restarting them looked like a hung
        program)."""
        from distributed import wait

        try:  # (the scheduler went away: wait raises for its cancelled futures, which as_completed gave like any)
            from distributed.client import FuturesCancelledError as cancelled
        except ImportError:  # (distributed before it: concurrent.futures' own)
            from concurrent.futures import CancelledError as cancelled  # type: ignore[assignment]
        left = list(futures)
        no_workers_since: float | None = None
        said = False
        while left:
            try:
                done, _ = wait(left, timeout=WORKERS_CHECK_S, return_when="FIRST_COMPLETED")
            except TimeoutError:
                if self._has_workers():
                    no_workers_since, said = None, False
                elif self.local and workers_gave_up(self.client.cluster):
                    raise _WorkersCannotStart from None
                elif no_workers_since is None:
                    no_workers_since = time.monotonic()
                elif not said and time.monotonic() - no_workers_since >= NO_WORKERS_NOTE_S:
                    tqdm.write(f"note: {self.scheduler_said} has had no workers for {NO_WORKERS_NOTE_S:.0f} s (they "
                               "died, or were stopped, and none came back); waiting for them"
                               f"{self._start_workers_advice} (Ctrl-C stops)", file=sys.stderr)
                    said = True
                continue
            except cancelled:  # each cancelled future says so where it is read (``_outcome``: the scheduler is gone)
                done = {future for future in left if future.status != "pending"}
            for future in sorted(done, key=lambda done_future: self.pending.get(done_future, -1)):
                left.remove(future)
                yield future

    @property
    def _start_workers_advice(self) -> str:
        return "" if self.local else f"; start some with `dask worker {self.client.scheduler.address}` (or your " \
                                     "cluster's jobs)"

    def _has_workers(self) -> bool:
        """Whether the scheduler has a worker (or cannot be asked: its loss is seen by the futures)."""
        try:
            return bool(self.client.nthreads(callback_timeout=WORKERS_CHECK_S))
        except Exception:  # a scheduler gone, or slow to answer: not a scheduler without workers
            return True

    def _outcome(self, future, index: int, alone: bool) -> StackOutcome | None:
        """What the cluster says of stack ``index``; None where its workers all died and it is to be tried alone."""
        from distributed import KilledWorker

        path = self.stacks[index]
        try:
            outcome = future.result()
        except KilledWorker as error:
            if not alone:
                return None
            advice = ("try fewer --workers, e.g. --workers 1" if self.local else
                      "give the cluster's workers more memory each, or run fewer of them on each machine")
            return StackOutcome(str(path), stack_name(path), "failed", error=(
                f"{path}: the worker process died while fusing it, on {error.allowed_failures + 1} workers one after "
                f"another, with no other stack beside it (most often out of memory: {advice})"))
        except Exception as error:  # a task cancelled by someone else, a bug: recorded per stack
            if _connection_lost(error):
                raise _SchedulerGone from None
            return StackOutcome(str(path), stack_name(path), "failed", error=f"{path}: {type(error).__name__}: {error}")
        if not isinstance(outcome, StackOutcome) or outcome.stack != str(absolute_path(path)):
            # (never with keys of our own; were it to happen, this stack was not fused, whatever the result says)
            said = outcome.stack if isinstance(outcome, StackOutcome) else repr(outcome)
            return StackOutcome(str(path), stack_name(path), "failed", error=(
                f"{path}: the cluster answered for another stack ({said}): this one was not fused; run it again"))
        return outcome

    def _record(self, index: int, outcome: StackOutcome) -> None:
        self.outcomes[index] = outcome
        self.bar.update(1)

    def _stop_for_unwritable_out(self, index: int, failed: StackOutcome) -> None:
        """Stack ``index`` could not be written: the output folder is full, read-only or not writable (permission
        denied), or its writes failed with I/O errors ``IO_ERRORS_TO_STOP`` times in a row. Every stack left is not run
        (each was fused in full and failed at its write, for hours on a large batch), and one line, the failed
        stack's, says so. Those that finished meanwhile keep their outcome, but one that failed for the same reason
        (or whose workers died) is "not run" too; and once the workers have let go, a stack whose outputs are
        complete in the folder is done (a worker finished it between the failure and the stop)."""
        self.out_unwritable = True
        came = {future: self.pending.pop(future) for future in list(self.pending)
                if future.status in ("finished", "error")}
        self.stop()
        rows = {}
        for future, other in came.items():
            outcome = self._outcome(future, other, alone=False)
            if outcome is not None and not (outcome.out_unwritable or outcome.out_io_error):
                rows[other] = outcome
        left = sorted(set(self.stacks_left()) - set(rows) - {index})
        self.alone_next.clear()
        self._wait_until_no_stack_is_written(left)
        why, what_to_do = UNWRITABLE_SAID[failed.out_unwritable or FULL]
        not_run = []
        for other in left:
            path = self.stacks[other]
            rows[other] = self._done_on_disk(other) or StackOutcome(str(path), stack_name(path), NOT_RUN,
                                                                    error=f"not run: {self.out_dir} {why}")
            if rows[other].status == NOT_RUN:
                not_run.append(other)
        if not_run:
            failed.error = (f"{failed.error}; {len(not_run)} more stack{'s were' if len(not_run) > 1 else ' was'} not "
                            f"run: {self.out_dir} {why} ({what_to_do} and run the same command with --resume)")
        self._record(index, failed)
        for other in sorted(rows):
            self._record(other, rows[other])

    def _count_what_is_on_disk(self) -> None:
        """The scheduler went away (its futures are cancelled, results cannot be fetched): once its workers have let
        go of the batch's stacks (each stops at its next slice when it loses the scheduler; up to ``STOP_WAIT_S``),
        each stack left is done where its outputs are complete, and lost where they are not: dask said
        "cancelled" of them all, stacks a worker had finished among them."""
        self.scheduler_lost = True
        _quiet_cluster_logs()  # dask's own lines (a reconnection that fails, with tracebacks) say nothing of the stacks
        self.pending.clear()
        self.alone_next.clear()
        left = self.stacks_left()
        self._wait_until_no_stack_is_written(left)
        for index in left:
            path = self.stacks[index]
            self._record(index, self._done_on_disk(index) or StackOutcome(str(path), stack_name(path), LOST, error=(
                f"{path}: lost: {self.scheduler_said} went away before it was fused; run the same command with "
                "--resume to fuse it")))

    def _not_run_without_workers(self) -> None:
        """The local cluster has no worker, and its nannies gave up starting them (each died as it started, again and
        again): each stack left is done where its outputs are complete (or its result came), else not run."""
        self.workers_gone = True
        came = {future: index for future, index in self.pending.items() if future.status in ("finished", "error")}
        self.pending.clear()
        self.alone_next.clear()
        for future, index in sorted(came.items(), key=lambda item: item[1]):
            with contextlib.suppress(_SchedulerGone):
                outcome = self._outcome(future, index, alone=False)
                if outcome is not None:
                    self._record(index, outcome)
        why = self.deaths.said() if self.deaths is not None else "they died as they started"
        for index in self.stacks_left():
            path = self.stacks[index]
            self._record(index, self._done_on_disk(index) or StackOutcome(
                str(path), stack_name(path), NOT_RUN, error=f"not run: {WORKERS_CANNOT_START}: {why}", no_workers=why))

    def _wait_until_no_stack_is_written(self, indices: list[int]) -> None:
        """Returns once no worker has written one of the stacks ``indices`` into --out for ``SETTLE_S`` (a stack
        stopped mid-write finishes moving its outputs into place), or after ``STOP_WAIT_S``."""
        deadline = quiet_since = time.monotonic()
        deadline += STOP_WAIT_S
        while time.monotonic() < deadline and time.monotonic() - quiet_since < SETTLE_S:
            if any(writing_now(self.out_dir, stack_name(self.stacks[index])) for index in indices):
                quiet_since = time.monotonic()
            time.sleep(0.1)

    def _done_on_disk(self, index: int) -> StackOutcome | None:
        """Stack ``index`` as done, where its outputs are complete in --out (``finished_report``); else None."""
        path = self.stacks[index]
        report = finished_report(self.out_dir, path, self.settings)
        return None if report is None else StackOutcome(
            str(path), report.name, "done", slices=report.n_slices, seconds=report.seconds.get("total"),
            warnings=list(report.warnings))

    def stacks_left(self) -> list[int]:
        """The stacks that have no outcome yet."""
        return [index for index in range(len(self.stacks)) if index not in self.outcomes]

    def stop(self) -> None:
        """Cancel what is left of this batch on the cluster and stop the stacks its workers are fusing (dask's cancel
        leaves a running task to finish: it wrote its outputs after the program had ended). With a scheduler, waits
        up to ``STOP_WAIT_S`` for the workers to let go of them (a local cluster is closed next). A cluster that does
        not answer is given up on after ``3 * STOP_WAIT_S``: the program must end."""
        left = list(self.pending)
        self.pending.clear()

        def stop_on_the_cluster() -> None:
            with contextlib.suppress(Exception):  # a cluster that is gone runs nothing more
                if left:
                    self.client.cancel(left, reason="the batch stopped")
                self.client.run(_stop_stacks_of, self.token, on_error="ignore", callback_timeout=STOP_WAIT_S)
                deadline = time.monotonic() + STOP_WAIT_S
                while not self.local and time.monotonic() < deadline and any(self.client.run(
                        _stacks_fusing, self.token, on_error="ignore", callback_timeout=STOP_WAIT_S).values()):
                    time.sleep(0.1)

        # (dask's cancel has no timeout of its own)
        stopping = threading.Thread(target=stop_on_the_cluster, name="stopping the batch", daemon=True)
        stopping.start()
        stopping.join(timeout=3 * STOP_WAIT_S)


class _WorkersCannotStart(Exception):
    """Raised within a batch on the local cluster when it has no worker and its nannies gave up starting them."""


class _SchedulerGone(Exception):
    """Raised within a batch when the connection to its scheduler is lost (the scheduler died, or its machine went
    away): no more results can be had."""


def _connection_lost(error: BaseException) -> bool:
    """Whether ``error``, raised for a stack's future, says the client lost its scheduler: dask cancels every
    future then ("scheduler-connection-lost"), and a result being fetched meanwhile fails with CommClosedError."""
    from distributed.comm import CommClosedError

    return isinstance(error, CommClosedError) or getattr(error, "reason", None) == "scheduler-connection-lost"


@contextlib.contextmanager
def _workers_deaf_to_ctrl_c():
    """SIGINT blocked in this thread while the block runs, and so in the threads and worker processes
    that start meanwhile, which inherit the mask: a terminal's Ctrl-C goes to every process in its
    group, and a worker still starting died of it ("Fatal Python error" and a traceback each).
    Blocked, not ignored: a Ctrl-C meanwhile reaches this process when the block ends. (A thread
    started before it may take the signal sooner: ``signals_held`` around it keeps the start whole.)"""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no process groups to share a Ctrl-C
        yield
        return
    # multiprocessing's resource tracker unblocks SIGINT in the thread that starts it: first, here. It ignores SIGINT
    # and SIGTERM, not SIGHUP: started with SIGHUP blocked (a mask its process keeps), it outlives a closed terminal's
    # hangup. (Killed by it, it was started again, and said "process died unexpectedly" and a KeyError traceback for
    # each semaphore the workers then let go: a dozen tracebacks after the program's own line.)
    from multiprocessing import resource_tracker

    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    # (SIGHUP too: a terminal that closes sends it to the whole group, and the program ends the batch itself)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _closing_notice():
    """Closing the cluster is not cut short by another Ctrl-C (its workers outlived the program, and
    dask's exit hook held the exit for 10 s); the user is told why the program does not stop at once."""
    return signals_deferred("stopping the cluster's workers; the program ends when they have (a few seconds)")


def dask_setup(worker) -> None:
    """Run by dask in each worker process of our own local cluster, as it starts (its preload).

    A terminal's Ctrl-C goes to every process in its group: the workers died of it, each printing
    a KeyboardInterrupt traceback, while this program was closing the cluster anyway. They start
    with SIGINT blocked (``_workers_deaf_to_ctrl_c``); ignoring it too keeps them deaf should
    anything in them unblock it (multiprocessing's resource tracker does, in the thread that starts it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # (as Ctrl-C: a closed terminal's hangup reaches the whole group)
    # The scheduler lives in this program, and goes first when it stops: a heartbeat in flight then logged a
    # connection traceback that says nothing about the stacks (this program says what became of them).
    logging.getLogger("distributed.worker").addFilter(_not_a_lost_heartbeat)


def _not_a_lost_heartbeat(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Failed to communicate with scheduler during heartbeat")


def write_summary(out_dir: Path, outcomes: list[StackOutcome], seconds: float, scheduler: str | None,
                  interrupted: bool = False, run_warnings: list[str] | None = None) -> Path:
    """``summary.json``: a row per stack whose outputs are in ``out_dir``, or that a run there tried: this run's rows,
    then those of the summary already there (``earlier_summary_rows``) for the stacks this run did not name (a run
    into the same --out, --resume or one more stack, kept the first run's rows); ``counts`` over them all,
    ``earlier_rows`` how many came from before. ``interrupted``: this run was stopped (rows of status "interrupted");
    ``scheduler``, ``seconds`` and ``run_warnings`` (a stack given twice, outputs passed over, an earlier summary
    set aside) are this run's; each stack's warnings are in its row."""
    path = Path(out_dir) / SUMMARY_FILE
    rows = [_summary_row(outcome) for outcome in outcomes]
    names = {row["name"] for row in rows}
    # Read, merged and written under the summary's lock: two runs into one --out each kept their own rows only.
    with _summary_lock(Path(out_dir)):
        _merge_and_write_summary(path, rows, names, seconds, scheduler, interrupted, run_warnings)
    return path


@contextlib.contextmanager
def _summary_lock(out_dir: Path) -> Iterator[None]:
    """``summary.json``'s lock in ``out_dir`` (``.summary.json.lock``) held while the block runs. Where none can be
    made (a read-only or full folder), the block runs all the same: the summary's own write then says why it fails."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(name_lock(out_dir, SUMMARY_FILE))
        except OSError as error:
            if error.errno == errno.EAGAIN:  # (held by another run for LOCK_WAIT_S)
                raise
        yield


def _merge_and_write_summary(path: Path, rows: list[dict], names: set[str], seconds: float, scheduler: str | None,
                             interrupted: bool, run_warnings: list[str] | None) -> None:
    earlier = [row for row in earlier_summary_rows(path) if row["name"] not in names]
    said = [status for status in dict.fromkeys(row["status"] for row in rows + earlier)
            if status not in ("done", "skipped", "failed", "interrupted")]
    statuses = ("done", "skipped", "failed") + (("interrupted",) if interrupted or any(
        row["status"] == "interrupted" for row in earlier) else ()) + tuple(said)
    write_json(path, {
        "scheduler": scheduler or "local",
        "seconds": round(seconds, 3),
        **({"interrupted": True} if interrupted else {}),
        "counts": {status: sum(row["status"] == status for row in rows + earlier) for status in statuses},
        "earlier_rows": len(earlier),
        "warnings": list(dict.fromkeys(run_warnings or [])),
        "stacks": rows + earlier,
    })


# An earlier summary.json that could not be read, kept for a person (not a name that ends .json: a stack's report
# could have it)
SUMMARY_SET_ASIDE = "summary.json.damaged"


def earlier_summary_rows(path: Path) -> list[dict]:
    """The rows of the summary at ``path`` that still hold: each stack's that did not finish (failed, not run, ...),
    and each finished one's (done, skipped) whose outputs are all still beside it (one removed since: no row). None
    there: none. One that cannot be read or is not a summary (cut short, edited, another program's) is moved aside
    (``summary.json.damaged``, numbered where that exists) with a warning, and the new summary starts afresh: a run
    must not fail at its end for an old file. Something else of that name (a folder) is left where it is: the new
    summary's write then says what is in its way."""
    if not path.is_file():
        return []
    try:
        summary = json.loads(path.read_bytes())
        rows = summary["stacks"] if isinstance(summary, dict) else None
        if not isinstance(rows, list) or not all(
                isinstance(row, dict) and isinstance(row.get("name"), str) and isinstance(row.get("status"), str)
                for row in rows):
            raise ValueError("not a summary of stacks (no list of rows with a name and a status)")
    except FileNotFoundError:  # (removed meanwhile)
        return []
    except (OSError, ValueError, KeyError, TypeError) as error:  # (json's errors are ValueErrors)
        aside = _free_name(path.with_name(SUMMARY_SET_ASIDE))
        try:
            os.replace(path, aside)
            kept = f"kept aside as {aside}"
        except OSError as moving:
            kept = f"and it cannot be kept aside ({moving.strerror or moving}): it is replaced"
        warnings.warn(f"{path}: the earlier summary cannot be read ({error}); this run's starts afresh, {kept}",
                      stacklevel=3)
        return []
    out_dir = path.parent
    return [row for row in rows if row["status"] not in ("done", "skipped")
            or all(output.is_file() for output in refusion_outputs(out_dir, row["name"]).values())]


def _free_name(path: Path) -> Path:
    """``path``, or where that exists ``path.1``, ``path.2``, ...: the first that does not."""
    number = 0
    candidate = path
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}.{number}")
    return candidate


def _summary_row(outcome: StackOutcome) -> dict:
    row = asdict(outcome)
    del row["out_unwritable"], row["out_io_error"], row["no_workers"]  # (the batch's own business: the error says it)
    return row


def write_interrupted_summary(out_dir: Path, stacks: list[Path], finished: list[StackOutcome],
                              settings: FusionSettings, seconds: float, scheduler: str | None,
                              run_warnings: list[str] | None = None) -> Path:
    """The summary of a run stopped by Ctrl-C: the outcomes that came, then each other stack as "done" where its
    outputs are complete all the same (a worker finishing it while the cluster closed), else "interrupted"."""
    came = {outcome.name: outcome for outcome in finished}
    rows = []
    for stack in stacks:
        name = stack_name(stack)
        report = None if name in came else finished_report(out_dir, stack, settings)
        rows.append(came[name] if name in came else
                    StackOutcome(str(stack), name, "interrupted") if report is None else
                    StackOutcome(str(stack), name, "done", slices=report.n_slices, seconds=report.seconds.get("total"),
                                 warnings=list(report.warnings)))
    return write_summary(out_dir, rows, seconds, scheduler, interrupted=True, run_warnings=run_warnings)


def stack_warning_lines(outcomes: list[StackOutcome]) -> list[str]:
    """The stacks' warnings to print after the table, each once: warnings that differ only by the stack they name
    are one line, the first stack's, with how many more said it ("... (and 299 more stacks)"; 300 tiny stacks gave
    300 lines). A skipped stack's are left out (said when it was fused). ``summary.json`` keeps every stack's own."""
    said: dict[str, list[str]] = {}  # by the warning with its stack's path taken out, in the order first said
    for outcome in outcomes:
        if outcome.status == "skipped":
            continue
        paths = sorted({outcome.stack, os.path.abspath(outcome.stack)}, key=len, reverse=True)
        for warning in dict.fromkeys(outcome.warnings):
            pattern = warning
            for path in paths:
                pattern = pattern.replace(path, "\0")
            said.setdefault(pattern, []).append(warning)
    return [warnings[0] if len(warnings) == 1 else
            f"{warnings[0]} (and {len(warnings) - 1} more stack{'s' if len(warnings) > 2 else ''})"
            for warnings in said.values()]


def format_table(outcomes: list[StackOutcome]) -> str:
    """A plain-text table: stack, slices, seconds, status; names padded by the columns a terminal gives them."""
    width = max([len("stack")] + [display_width(o.name) for o in outcomes])
    lines = [f"{'stack':<{width}}  {'slices':>6}  {'seconds':>8}  status"]
    for o in outcomes:
        slices = "" if o.slices is None else str(o.slices)
        seconds = "" if o.seconds is None else f"{o.seconds:.2f}"
        lines.append(f"{o.name}{' ' * (width - display_width(o.name))}  {slices:>6}  {seconds:>8}  {o.status}")
    return "\n".join(lines)


def display_width(text: str) -> int:
    """The columns ``text`` takes on a terminal: two for a wide character (スタック: East Asian Wide or Fullwidth),
    none for a combining mark (an accent written as its own character), one for the others."""
    return sum(0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
               for char in text)
