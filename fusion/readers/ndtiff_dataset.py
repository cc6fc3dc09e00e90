"""NDTiff datasets, as pycromanager and Micro-Manager 2 write them (a folder with NDTiff.index)."""
from __future__ import annotations

import contextlib
import functools
import io
import warnings
from pathlib import Path

import numpy as np

from fusion.errors import EmptyStackError, StackLayoutError, UnreadableStackError
from fusion.outputs import plausible_pixel_size_um
from fusion.readers.base import SavedStack

INDEX_FILE = "NDTiff.index"
Z_METADATA_KEYS = ("ZPosition_um_Intended", "ZPosition_um", "ZPositionUm", "Z-um")
# An index entry's pixel type (ndtiff's NDTiffIndexEntry: 0 8-bit, 2 8-bit RGB) and the bytes a pixel takes in its
# file as ndtiff reads it; the others (10 to 16 bits) take 2.
BYTES_PER_PIXEL = {0: 1, 2: 3}


def is_ndtiff_dataset(folder: Path) -> bool:
    return (folder / INDEX_FILE).is_file()


class NDTiffStack(SavedStack):
    """One z-stack of an NDTiff dataset: its 'z' axis (or its only varying axis), one channel."""

    def __init__(self, folder: Path, name: str | None = None):
        super().__init__(folder, name or Path(folder).name)
        from ndtiff import Dataset  # imported here: only NDTiff users pay for it

        try:
            with contextlib.redirect_stdout(io.StringIO()):  # ndtiff prints progress to stdout
                self._dataset = Dataset(str(folder))
        except Exception as error:
            raise UnreadableStackError(f"not a readable NDTiff dataset ({type(error).__name__}: {error})",
                                       folder) from error
        self._coordinates = self._slice_coordinates()
        if not self._coordinates:
            self.close()
            raise EmptyStackError("the NDTiff dataset holds no image", folder)
        self._coordinates = self._complete_images()

    def _slice_coordinates(self) -> list[dict]:
        axes = {name: sorted(values) for name, values in self._dataset.axes.items()}
        varying = [name for name, values in axes.items() if len(values) > 1]
        fixed = {name: values[0] for name, values in axes.items() if len(values) == 1}
        if not varying:
            return [fixed] if axes else ([{}] if self._dataset.has_image() else [])
        sweep = "z" if "z" in varying else varying[0]
        if len(varying) > 1:
            raise StackLayoutError(
                f"the dataset varies along {', '.join(varying)}; a focus stack varies along z only: "
                "export one channel, position and time point", self.path)
        return [{**fixed, sweep: value} for value in axes[sweep]]

    def _complete_images(self) -> list[dict]:
        """The slices whose pixels and metadata lie whole in their file: a dataset copied or written only in part
        (an acquisition interrupted, a copy cut short) is fused from them, with a warning naming those left out,
        as a cut-short TIFF is; a file that its index names and that is gone is an error naming it."""
        complete: list[dict] = []
        cut: list[dict] = []
        sizes: dict[str, int] = {}
        for coordinates in self._coordinates:
            entry = self._dataset.index.get(frozenset(coordinates.items()))
            if entry is None:  # (another layout of index: reading will say what is wrong)
                complete.append(coordinates)
                continue
            if entry.filename not in sizes:
                try:
                    sizes[entry.filename] = (self.path / entry.filename).stat().st_size
                except OSError:
                    self.close()
                    raise UnreadableStackError(f"{entry.filename}, which holds {self._label(coordinates)} (its "
                                               f"{INDEX_FILE} says), is missing: copy the whole dataset folder",
                                               self.path) from None
            bytes_per_pixel = BYTES_PER_PIXEL.get(entry.pixel_type, 2)
            end = max(entry.pix_offset + entry.image_width * entry.image_height * bytes_per_pixel,
                      entry.metadata_offset + entry.metadata_length)
            (complete if end <= sizes[entry.filename] else cut).append(coordinates)
        if cut and not complete:
            self.close()
            raise EmptyStackError(f"its files end before its first image: none of its {len(cut)} images is whole "
                                  "(a copy cut short?)", self.path)
        if cut:
            named = ", ".join(self._label(c) for c in cut[:3]) + (f" and {len(cut) - 3} more" if len(cut) > 3 else "")
            warnings.warn(f"{self.path}: {len(cut)} of its {len(self._coordinates)} images are cut short ({named}): "
                          "their file ends before them (an acquisition interrupted while writing, or a copy cut "
                          f"short); using the {len(complete)} complete slices", stacklevel=3)
        return complete

    @property
    def n_slices(self) -> int:
        return len(self._coordinates)

    @functools.cached_property
    def z_positions_um(self) -> list[float] | None:
        """Each image's z from its metadata (``Z_METADATA_KEYS``); None where no image gives one, and, with a
        warning naming the image, where one gives none while others do, or one that is not a number: the depth map
        then counts slices. (Read once, when first asked: its warning is said once.)"""
        z_um: list[float] = []
        problems: list[str] = []
        not_a_number = False
        for coordinates in self._coordinates:
            try:
                metadata = self._dataset.read_metadata(**coordinates) or {}
            except Exception:  # (reading its pixels will say what is wrong)
                return None
            key = next((key for key in Z_METADATA_KEYS if key in metadata), None)
            if key is None:
                problems.append(f"{self._label(coordinates)} has no z position ({', '.join(Z_METADATA_KEYS)})")
                continue
            try:
                z_um.append(float(metadata[key]))
            except (TypeError, ValueError):
                problems.append(f"{self._label(coordinates)} gives {key} {metadata[key]!r}, not a number")
                not_a_number = True
        if not problems:
            return z_um
        if len(problems) == len(self._coordinates) and not not_a_number:
            return None  # no image says where it was: a dataset without z, as many are
        more = f" (and {len(problems) - 1} more images)" if len(problems) > 1 else ""
        warnings.warn(f"{self.path}: {problems[0]}{more}; the depth map counts slices instead", stacklevel=4)
        return None

    def pixel_size_um(self) -> float | None:
        """Micro-Manager's PixelSizeUm, from the first image's metadata or the dataset's summary."""
        try:
            metadata = self._dataset.read_metadata(**self._coordinates[0]) or {}
            summary = getattr(self._dataset, "summary_metadata", None) or {}
            size = float(metadata.get("PixelSizeUm", summary.get("PixelSizeUm", 0)) or 0)
        except Exception:  # metadata that cannot be read says nothing about the pixel size
            return None
        return plausible_pixel_size_um(size, str(self.path), "PixelSizeUm")

    def slice_label(self, index: int) -> str:
        return self._label(self._coordinates[index])

    @staticmethod
    def _label(coordinates: dict) -> str:
        return f"image at {coordinates}"

    def _read(self, index: int) -> np.ndarray:
        return np.asarray(self._dataset.read_image(**self._coordinates[index]))

    def close(self) -> None:
        dataset = getattr(self, "_dataset", None)
        if dataset is not None:
            dataset.close()
