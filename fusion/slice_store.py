"""Where the engine finds a slice again when the final composition needs it.

The engine keeps only running maps in memory. Slices live on disk: in the saved stack when
refusing, in the session's stack buffer when live, or in a temporary TIFF that the engine
writes itself when slices are pushed with nothing behind them.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import tifffile

from fusion.outputs import colour_by_shape


@runtime_checkable
class SliceSource(Protocol):
    """Anything that can give back slice ``index`` (0-based, in push order) as an array."""

    def read_slice(self, index: int) -> np.ndarray: ...


class TemporaryTiffStore:
    """Appends pushed slices to a temporary TIFF, one page each, and reads them back by index."""

    def __init__(self, directory: str | Path | None = None):
        handle, name = tempfile.mkstemp(prefix="ums-fusion-slices-", suffix=".tif", dir=directory)
        os.close(handle)
        self.path = Path(name)
        self._writer: tifffile.TiffWriter | None = tifffile.TiffWriter(self.path, bigtiff=True)
        self._reader: tifffile.TiffFile | None = None
        self.n_slices = 0

    def append(self, pixels: np.ndarray) -> None:
        if self._writer is None:
            raise RuntimeError("slices cannot be appended once reading back has begun")
        photometric = "rgb" if colour_by_shape(pixels.shape) else "minisblack"
        # A frame's last axis is its samples: left to guess, tifffile wrote an (H, W, 2) or (H, W, 5) minisblack frame
        # as H pages of W x C, and "pick" read back a page of the wrong shape (an IndexError at finish).
        planar = "contig" if pixels.ndim == 3 and pixels.shape[2] > 1 else None
        self._writer.write(pixels, photometric=photometric, planarconfig=planar, contiguous=False)
        self.n_slices += 1

    def read_slice(self, index: int) -> np.ndarray:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reader is None:
            self._reader = tifffile.TiffFile(self.path)
        return self._reader.pages[index].asarray()

    def close(self) -> None:
        """Closes and deletes the temporary file."""
        for handle in (self._writer, self._reader):
            if handle is not None:
                handle.close()
        self._writer = self._reader = None
        self.path.unlink(missing_ok=True)

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter shutdown: the temporary file is the OS's to clean
            self.close()
