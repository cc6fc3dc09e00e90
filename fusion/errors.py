"""Errors of the fusion side, each for one thing a person can fix.

Every error that concerns a saved stack names it: ``str(error)`` reads
``"<path>: <what is wrong>"`` so that a batch of stacks reports one clear line per failure.
"""
from __future__ import annotations

from pathlib import Path


def slice_name(index: int) -> str:
    """How errors and warnings name a slice by its number: from 0, as the reports' lists count,
    and saying so (Fiji counts from 1: "slice 7" alone sent users to the wrong plane)."""
    return f"slice {index} (counting from 0)"


class FusionError(Exception):
    """Base of every error raised by the fusion package."""


class FrameShapeError(FusionError, ValueError):
    """Raised by the engine for a frame shape it does not take (channels first, more channels than the pyramid's
    filters take); a ValueError, as any argument the engine refuses."""


class StackError(FusionError):
    """Raised when a stack (saved or pushed) cannot be fused; names the stack when it has a path."""

    def __init__(self, reason: str, path: str | Path | None = None):
        self.reason = reason
        self.path = Path(path) if path is not None else None
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)


class StackNotFoundError(StackError):
    """Raised when the path of a stack does not exist."""


class UnreadableStackError(StackError):
    """Raised when a file is not an image, or is a truncated or corrupt one."""


class EmptyStackError(StackError):
    """Raised when a stack has no slices: an empty folder, a file with zero planes, nothing pushed."""


class SliceMismatchError(StackError):
    """Raised when a slice's shape or dtype differs from the stack's first slice."""


# What is wrong with infinity in a slice, and what to do (NaN is no data: fusion/no_data.py).
INFINITY_SAID = ("holds infinity, which no focus measure can rank: clip it to the largest value the data holds, or "
                 "mark no data with NaN")


class InvalidPixelsError(StackError):
    """Raised when float data holds infinity, which no focus measure can rank, or a pushed slice is a masked array
    that masks values (the engine reads no mask)."""


class StackLayoutError(StackError):
    """Raised when a file's axes cannot be read as one z-stack (e.g. several positions and times)."""


class InvalidFocusMeasureError(StackError):
    """Raised when a focus measure gives NaN or infinity for a slice (e.g. damaged weights)."""


class StackTooLargeError(StackError):
    """Raised when a stack's declared slice size would not fit in memory; nothing is read."""


class OutputError(StackError):
    """Raised when a stack's outputs cannot be written (a full disk, a folder without permission)."""
