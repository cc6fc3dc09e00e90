"""Speed beside the peers: wall seconds, CPU seconds and peak memory on the three real stacks,
and what ``--align auto`` costs on a still stack.

    .venv/bin/python -m benchmarks.speed [--repeats 3] [--results benchmarks/results/speed.md]

1. The real stacks in ../shared/data (README, "Tests"): our default ``run_session.py --refuse``
   beside focusweave (from the peers' own virtualenv: ``.peers-venv`` or ``UMS_PEERS_VENV``),
   focus-stack and enfuse (when on PATH), each with its default settings (enfuse with its
   focus-stacking weights; it has no alignment), each as its own process, reading the same
   folder of JPEG files (the scorpion's, JPEG data under .png names, copied to .jpg names for
   the tools that trust extensions) and writing a TIFF.
2. The README's demo stack (``python -m simulators.render_stack``: 15 still slices, 768x1024 RGB):
   ``--align auto`` against ``--align off``.
Tools take turns within each repeat (paired runs on a shared machine); the table gives medians
and the 1-minute load average around each stack.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.measured_run import Measured, load_average, machine_line, run_measured
from benchmarks.peers import ENFUSE_FOCUS_OPTIONS, peers_bin
from fusion.readers.image_folder import image_files

ROOT = Path(__file__).resolve().parents[1]

REAL_STACKS = ("pcb", "keyboard-phone", "scorpion-microscope")
SHARED_DATA = ROOT.parent / "shared" / "data"
OURS = "ours (default)"


def jpeg_folder(source: Path, folder: Path) -> list[Path]:
    """The stack's slices copied as slice_NNN.jpg in natural order, which every tool reads alike."""
    folder.mkdir(parents=True)
    copies = []
    for index, path in enumerate(image_files(source)):
        copies.append(folder / f"slice_{index + 1:03d}.jpg")
        shutil.copyfile(path, copies[-1])
    return copies


def tool_commands(files: list[Path], out: Path) -> dict[str, list[str]]:
    """What each installed tool runs to fuse these files into a TIFF in ``out``."""
    folder = files[0].parent
    commands = {OURS: [sys.executable, str(ROOT / "run_session.py"), "--refuse", str(folder), "--out", str(out)]}
    if (peers_bin() / "focusweave").exists():
        commands["focusweave"] = [str(peers_bin() / "focusweave"), str(folder), "--output", str(out / "focusweave.tif")]
    if shutil.which("focus-stack"):
        commands["focus-stack"] = ["focus-stack", f"--output={out / 'focus-stack.tif'}", *map(str, files)]
    if shutil.which("enfuse"):
        commands["enfuse"] = ["enfuse", *ENFUSE_FOCUS_OPTIONS, "-o", str(out / "enfuse.tif"), *map(str, files)]
    return commands


def missing_tools() -> list[str]:
    missing = []
    if not (peers_bin() / "focusweave").exists():
        missing.append(f"focusweave (not in {peers_bin()}: python3 -m venv .peers-venv && "
                       ".peers-venv/bin/pip install focusweave)")
    if not shutil.which("focus-stack"):
        missing.append("focus-stack (not on PATH: build it from its sources)")
    if not shutil.which("enfuse"):
        missing.append("enfuse (not on PATH: apt-get install enfuse)")
    return missing


def median(runs: list[Measured]) -> Measured:
    return Measured(statistics.median(r.wall_s for r in runs), statistics.median(r.cpu_s for r in runs),
                    max(r.peak_rss_mb for r in runs))


def time_turns(commands: dict[str, list[str]], repeats: int, work: Path) -> tuple[dict[str, Measured], str]:
    """Median of each command over ``repeats`` rounds in which they take turns; the load around them."""
    runs: dict[str, list[Measured]] = {name: [] for name in commands}
    loads = [load_average()]
    for _ in range(repeats):
        for name, command in commands.items():
            runs[name].append(run_measured(command, cwd=work))
            print(f"  {name}: {runs[name][-1].wall_s:.2f} s", flush=True)
    loads.append(load_average())
    return {name: median(r) for name, r in runs.items()}, " -> ".join(loads)


def table(rows: dict[str, Measured]) -> list[str]:
    """One row per tool; the ratios are to the first row."""
    base = next(iter(rows.values()))
    lines = ["| tool | wall s | CPU s | peak MB | wall / first | peak / first |", "|---|---:|---:|---:|---:|---:|"]
    for name, m in rows.items():
        lines.append(f"| {name} | {m.wall_s:.2f} | {m.cpu_s:.2f} | {m.peak_rss_mb:.0f} | "
                     f"{m.wall_s / base.wall_s:.2f} | {m.peak_rss_mb / base.peak_rss_mb:.2f} |")
    return lines


def real_stacks(repeats: int, work: Path) -> list[str]:
    lines = []
    for name in REAL_STACKS:
        source = SHARED_DATA / name
        if not source.is_dir():
            missing = f"not run: {source} is missing (README, 'Tests': where the stacks come from)"
            lines += [f"### {name}", "", missing, ""]
            continue
        files = jpeg_folder(source, work / name / "in")
        out = work / name / "out"
        out.mkdir()
        print(f"{name}: {len(files)} slices", flush=True)
        rows, loads = time_turns(tool_commands(files, out), repeats, work)
        lines += [f"### {name} ({len(files)} slices, load {loads})", ""] + table(rows) + [""]
    return lines


def still_stack(repeats: int, work: Path) -> list[str]:
    stack = work / "demo" / "rendered.ome.tif"
    run_measured([sys.executable, "-m", "simulators.render_stack", str(stack)], cwd=ROOT)
    base = [sys.executable, str(ROOT / "run_session.py"), "--refuse", str(stack)]
    commands = {f"--align {mode}": base + ["--out", str(work / "demo" / mode), "--align", mode]
                for mode in ("off", "auto")}
    print("still stack (the README's demo): --align auto vs off", flush=True)
    rows, loads = time_turns(commands, repeats, work)
    ratio = rows["--align auto"].wall_s / rows["--align off"].wall_s
    return ([f"### the README's demo stack, still (15 slices, 768x1024 RGB; load {loads})", ""]
            + table(rows) + ["", f"--align auto / --align off, wall: {ratio:.2f}", ""])


def main(argv: list[str] | None = None) -> int:
    summary = " ".join(__doc__.split("\n\n")[0].split())  # the docstring's first paragraph
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=summary)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians are reported (default: 3)")
    parser.add_argument("--results", type=Path, help="also write the tables to this Markdown file")
    parser.add_argument("--skip-real", action="store_true", help="only the still stack")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    header = ["# Speed beside the peers", "", machine_line(),
              f"command: `python -m benchmarks.speed {' '.join(sys.argv[1:])}`", "",
              f"Medians of {args.repeats} rounds, tools taking turns; CPU s = user + system; peak MB = the "
              "largest resident set (wait4), start-up included; ours/peers each as its own process.",
              "Not run: " + ("; ".join(missing_tools()) or "none") + ".", ""]
    with tempfile.TemporaryDirectory(prefix="ums-speed-") as temporary:
        work = Path(temporary)
        body = [] if args.skip_real else ["## Real stacks", ""] + real_stacks(args.repeats, work)
        body += ["## --align auto vs off on a still stack", ""] + still_stack(args.repeats, work)
    text = "\n".join(header + body)
    print(text)
    if args.results:
        args.results.write_text(text + "\n")
        print(f"written: {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
