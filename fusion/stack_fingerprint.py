"""What ``--resume`` compares to know that a stack is the very one fused before, unchanged.

The stack's name is not enough: another folder of the same name, or the same folder with slices
added or replaced since, would keep the old result. The fingerprint hashes the stack's real path
and the names, sizes and modification times of the files the readers take it from (not notes beside
them, nor what a refusion writes there); reading the pixels again would cost as much as fusing them.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from fusion.errors import StackError
from fusion.output_names import is_our_output
from fusion.readers.image_folder import image_files
from fusion.readers.ndtiff_dataset import is_ndtiff_dataset

_WRITTEN_BESIDE = (".json", ".partial")   # reports, the batch's summary, outputs being written


def stack_fingerprint(path: str | Path) -> str | None:
    """A short hash of the stack at ``path`` as it is on disk now; None where it cannot be read."""
    try:
        real = Path(path).resolve(strict=True)
        entries = sorted((p.name, stat.st_size, stat.st_mtime_ns) for p in _stack_files(real) for stat in (p.stat(),))
    except (OSError, RuntimeError, StackError):  # missing, unreadable, a symlink loop, a broken link: nothing to say
        return None
    return hashlib.sha256(repr((str(real), entries)).encode()).hexdigest()[:16]


def _stack_files(real: Path) -> list[Path]:
    """The files the readers take the stack from: a folder of images, its images (notes and thumbnails
    beside them do not count); a dataset folder (NDTiff, Micro-Manager), all its files; a Micro-Manager
    OME-TIFF given by its first file, the files it continues in (``<name>_1.ome.tif``, ...)."""
    if real.is_dir():
        if is_ndtiff_dataset(real) or any(real.glob("*MMStack*.ome.tif")):
            return [p for p in real.iterdir() if p.is_file() and not _written_beside(p)]
        return image_files(real)
    if "MMStack" in real.name and real.name.endswith(".ome.tif"):
        stem = real.name[:-len(".ome.tif")]
        return [real, *real.parent.glob(f"{stem}_*.ome.tif")]
    return [real]


def _written_beside(file: Path) -> bool:
    return file.name.startswith(".") or is_our_output(file) or file.suffix.lower() in _WRITTEN_BESIDE
