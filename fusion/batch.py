"""Refusing many saved stacks on dask.distributed, from a laptop to a cluster.

Workers read stacks by path and write their outputs straight to the output folder; only
small reports (a few numbers per stack) travel through the scheduler. A stack that cannot
be fused is one failed row, never the end of the batch. A worker that dies mid-stack has
its stack rescheduled on another worker by dask (up to ``distributed.scheduler.allowed-failures``).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tifffile
from tqdm import tqdm

from fusion.allocator import keep_freed_memory
from fusion.engine import FusionSettings
from fusion.errors import FusionError
from fusion.held_signals import signals_deferred, signals_held
from fusion.outputs import make_folder, write_json
from fusion.readers import stack_name
from fusion.stack_fingerprint import stack_fingerprint
from fusion.output_names import refusion_outputs
from fusion.refuse import refuse_stack
from fusion.refuse_report import RefuseReport
from fusion.stack_arguments import SUMMARY_FILE, absolute_path, check_unique_names, real_path

@dataclass
class StackOutcome:
    """One row of a batch: what became of one stack."""

    stack: str
    name: str
    status: str                 # "done", "failed" or "skipped" (outputs already complete)
    slices: int | None = None
    seconds: float | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)   # e.g. one slice only, no focus information


def finished_report(out_dir: Path, stack: Path, settings: FusionSettings) -> RefuseReport | None:
    """The report of ``stack`` when all its outputs are in place (the report is written last) and whole
    (``_tiff_of_size``), were made with ``settings`` and from this stack as it is now (``stack_fingerprint``:
    not another one of the same name, nor this one before slices were added or replaced); None when it must
    be fused (again)."""
    paths = refusion_outputs(out_dir, stack_name(stack))
    if not all(path.is_file() for path in paths.values()):
        return None
    try:
        report = RefuseReport.from_json(json.loads(paths["report"].read_text()))
    except (OSError, ValueError, TypeError):  # unreadable, or written by another version: fuse again
        return None
    # As the report stores them: through JSON, so 32 and 32.0 or a tuple and a list compare equal.
    if report.settings != settings.to_json():
        return None
    if report.source_fingerprint is None or report.source_fingerprint != stack_fingerprint(stack):
        return None
    height, width = report.shape[:2]
    if not (_tiff_of_size(paths["fused"], height, width) and _tiff_of_size(paths["depth"], height, width)):
        return None
    return report


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
                     numba_threads: int | None = None, progress: bool | None = False) -> StackOutcome:
    """Fuse one stack and report it; a stack that cannot be fused is a failed outcome, not an error.

    Runs on a dask worker: nothing but this small record goes back to the client.
    """
    if numba_threads:  # a worker of our own LocalCluster: the process is ours to tune
        import numba

        available = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]  # numba sets it at import
        numba.set_num_threads(max(1, min(numba_threads, available)))
        keep_freed_memory()
    name = stack_name(path)
    started = time.perf_counter()
    try:
        report = refuse_stack(path, out_dir, settings, progress=progress)
    except (FusionError, OSError) as error:
        return StackOutcome(str(path), name, "failed", seconds=time.perf_counter() - started, error=str(error))
    except Exception as error:  # a bug must cost one stack, and say so, not the whole batch
        return StackOutcome(str(path), name, "failed", seconds=time.perf_counter() - started,
                            error=f"{path}: unexpected {type(error).__name__}: {error}")
    return StackOutcome(str(path), report.name, "done", slices=report.n_slices,
                        seconds=report.seconds["total"], error=None, warnings=report.warnings)


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
    for index, path in enumerate(stacks):
        report = finished_report(out_dir, path, settings) if resume else None
        if report is not None:  # the row keeps the numbers of the run that fused it
            outcomes[index] = StackOutcome(str(path), stack_name(path), "skipped", slices=report.n_slices,
                                           seconds=report.seconds.get("total"), warnings=list(report.warnings))
        else:
            todo.append(index)
            earlier = _fused_from_another_stack(out_dir, path)
            if earlier is not None:
                warnings.warn(f"{path}: replaces {refusion_outputs(out_dir, stack_name(path))['fused']}, "
                              f"fused earlier from another stack of that name ({earlier})", stacklevel=2)
    if todo and scheduler is None and len(todo) == 1:
        # One stack: no cluster to start; its own bar counts slices.
        outcomes[todo[0]] = refuse_for_batch(stacks[todo[0]], out_dir, settings, progress=progress)
    elif todo:
        with tqdm(total=len(stacks), initial=len(outcomes), desc="stacks", unit="stack",
                  disable=None if progress is None else not progress) as bar:
            _run_on_dask(stacks, todo, out_dir, settings, scheduler, n_workers, outcomes, bar)
    return [outcomes[index] for index in range(len(stacks))]


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


def _run_on_dask(stacks, todo, out_dir, settings, scheduler, n_workers, outcomes, bar) -> None:
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
                cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
                                       scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                       preload=[__name__])  # dask_setup below, in each worker process
        client = Client(cluster if cluster is not None else scheduler, timeout="30s")
        try:
            _gather(client, stacks, todo, out_dir, settings, numba_threads, outcomes, bar)
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


def _quiet_cluster_logs() -> None:
    """Stopping on Ctrl-C: the cluster's connections close under tasks in flight, and tornado logs each callback
    that meets a closed one, with a traceback that says nothing about the stacks (the program's own message says
    what finished). The process is ending: its loggers stay quiet from here."""
    for name in ("tornado.application", "tornado.general", "distributed", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _gather(client, stacks, todo, out_dir, settings, numba_threads, outcomes, bar) -> None:
    """Submit every stack to the cluster and record each outcome as it comes."""
    from distributed import as_completed

    futures = {}
    for index in todo:
        future = client.submit(refuse_for_batch, absolute_path(stacks[index]), absolute_path(out_dir), settings,
                               numba_threads, key=f"refuse-{index}-{stack_name(stacks[index])}", pure=False)
        futures[future] = index
    for future in as_completed(futures):
        index = futures[future]
        try:
            outcomes[index] = future.result()
        except Exception as error:  # KilledWorker, lost connection: recorded per stack
            outcomes[index] = StackOutcome(str(stacks[index]), stack_name(stacks[index]), "failed",
                                           error=f"{stacks[index]}: {type(error).__name__}: {error}")
        bar.update(1)


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
    # multiprocessing's resource tracker unblocks SIGINT in the thread that starts it: first, here.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
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


def write_summary(out_dir: Path, outcomes: list[StackOutcome], seconds: float, scheduler: str | None,
                  interrupted: bool = False) -> Path:
    """``summary.json``: a row per stack; ``interrupted``: the run was stopped (rows of status "interrupted")."""
    path = Path(out_dir) / SUMMARY_FILE
    statuses = ("done", "skipped", "failed") + (("interrupted",) if interrupted else ())
    write_json(path, {
        "scheduler": scheduler or "local",
        "seconds": round(seconds, 3),
        **({"interrupted": True} if interrupted else {}),
        "counts": {status: sum(o.status == status for o in outcomes) for status in statuses},
        "stacks": [asdict(outcome) for outcome in outcomes],
    })
    return path


def write_interrupted_summary(out_dir: Path, stacks: list[Path], finished: list[StackOutcome],
                              settings: FusionSettings, seconds: float, scheduler: str | None) -> Path:
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
    return write_summary(out_dir, rows, seconds, scheduler, interrupted=True)


def format_table(outcomes: list[StackOutcome]) -> str:
    """A plain-text table: stack, slices, seconds, status."""
    width = max([len("stack")] + [len(o.name) for o in outcomes])
    lines = [f"{'stack':<{width}}  {'slices':>6}  {'seconds':>8}  status"]
    for o in outcomes:
        slices = "" if o.slices is None else str(o.slices)
        seconds = "" if o.seconds is None else f"{o.seconds:.2f}"
        lines.append(f"{o.name:<{width}}  {slices:>6}  {seconds:>8}  {o.status}")
    return "\n".join(lines)
