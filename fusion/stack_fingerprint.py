"""What ``--resume`` compares to know that a stack is the very one fused before, unchanged.

The stack's name is not enough: another folder of the same name, or the same folder with slices
added or replaced since, would keep the old result. The fingerprint hashes the stack's real path
and the names, sizes and modification times of its files (a folder's files, less hidden ones and
what a refusion writes beside them); reading the pixels again would cost as much as fusing them.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from fusion.output_names import is_fused_output

_WRITTEN_BESIDE = (".json", ".partial")   # reports, the batch's summary, outputs being written


def stack_fingerprint(path: str | Path) -> str | None:
    """A short hash of the stack at ``path`` as it is on disk now; None where it cannot be read."""
    try:
        real = Path(path).resolve(strict=True)
        files = [p for p in real.iterdir() if p.is_file() and not _not_the_stack(p)] if real.is_dir() else [real]
        entries = sorted((p.name, stat.st_size, stat.st_mtime_ns) for p in files for stat in (p.stat(),))
    except (OSError, RuntimeError):  # missing, unreadable, a symlink loop: nothing to compare
        return None
    return hashlib.sha256(repr((str(real), entries)).encode()).hexdigest()[:16]


def _not_the_stack(file: Path) -> bool:
    return file.name.startswith(".") or is_fused_output(file) or file.suffix.lower() in _WRITTEN_BESIDE
