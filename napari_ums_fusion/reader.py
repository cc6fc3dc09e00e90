"""The npe2 reader: session folders, MDA fusion folders, --refuse outputs and our single files."""
from __future__ import annotations

from pathlib import Path

from napari_ums_fusion.layers import file_layers, folder_layers, is_ours


def get_reader(path):
    """A function that reads ``path`` into layers if it is one of ours; None lets napari try other readers."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not is_ours(Path(path)):
        return None
    return read


def read(path) -> list:
    path = Path(path[0] if isinstance(path, list) else path)
    return (folder_layers(path) if path.is_dir() else file_layers(path)) or []
