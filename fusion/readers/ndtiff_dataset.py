"""NDTiff datasets, as pycromanager and Micro-Manager 2 write them (a folder with NDTiff.index)."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from fusion.errors import EmptyStackError, StackLayoutError, UnreadableStackError
from fusion.readers.base import SavedStack, positive_size_um

INDEX_FILE = "NDTiff.index"
Z_METADATA_KEYS = ("ZPosition_um_Intended", "ZPosition_um", "ZPositionUm", "Z-um")


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

    @property
    def n_slices(self) -> int:
        return len(self._coordinates)

    @property
    def z_positions_um(self) -> list[float] | None:
        z_um = []
        for coordinates in self._coordinates:
            try:
                metadata = self._dataset.read_metadata(**coordinates) or {}
            except Exception:
                return None
            value = next((metadata[key] for key in Z_METADATA_KEYS if key in metadata), None)
            if value is None:
                return None
            z_um.append(float(value))
        return z_um

    def pixel_size_um(self) -> float | None:
        """Micro-Manager's PixelSizeUm, from the first image's metadata or the dataset's summary."""
        try:
            metadata = self._dataset.read_metadata(**self._coordinates[0]) or {}
            summary = getattr(self._dataset, "summary_metadata", None) or {}
            size = float(metadata.get("PixelSizeUm", summary.get("PixelSizeUm", 0)) or 0)
        except Exception:  # metadata that cannot be read says nothing about the pixel size
            return None
        return positive_size_um(size, self.path, "PixelSizeUm")

    def slice_label(self, index: int) -> str:
        return f"image at {self._coordinates[index]}"

    def _read(self, index: int) -> np.ndarray:
        return np.asarray(self._dataset.read_image(**self._coordinates[index]))

    def close(self) -> None:
        dataset = getattr(self, "_dataset", None)
        if dataset is not None:
            dataset.close()
