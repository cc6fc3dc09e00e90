"""Readers for saved focus stacks; ``open_stack`` picks the right one for a path."""
from __future__ import annotations

from pathlib import Path

from fusion.errors import StackNotFoundError, UnreadableStackError
from fusion.readers.base import SavedStack
from fusion.readers.image_folder import IMAGE_SUFFIXES, ImageFolderStack, natural_key
from fusion.readers.ndtiff_dataset import NDTiffStack, is_ndtiff_dataset
from fusion.readers.tiff import TiffStack, stack_name

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")

__all__ = ["SavedStack", "open_stack", "stack_name", "natural_key"]


def open_stack(path: str | Path) -> SavedStack:
    """Open a saved stack for reading slice by slice.

    - a TIFF or OME-TIFF file (Micro-Manager's OME-TIFF stacks too);
    - an NDTiff dataset folder (pycromanager, Micro-Manager 2);
    - a Micro-Manager OME-TIFF dataset folder (``*_MMStack*.ome.tif``);
    - a folder that holds one multi-page TIFF stack, besides our outputs, as the command line reads a folder
      (``fusion.stack_arguments.stacks_in``): a live session's folder is its ``stack.ome.tif``;
    - a folder of TIFF/PNG/JPEG files, one slice each, in natural sort order;
    - a single PNG/JPEG image (a stack of one).
    """
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise StackNotFoundError("a symbolic link that leads nowhere (a loop, or its target is gone)", path)
        raise StackNotFoundError("no such file or folder", path)
    if path.is_dir():
        if is_ndtiff_dataset(path):
            return NDTiffStack(path)
        mm_stacks = sorted(path.glob("*MMStack*.ome.tif"), key=natural_key)
        if mm_stacks:
            # tifffile follows the OME metadata of the first file to the dataset's other files.
            return TiffStack(mm_stacks[0], name=path.name)
        from fusion.stack_arguments import stacks_in  # (it reads folders with these readers)

        stacks = stacks_in(path, tell_outputs=False)  # (the readers pass over our outputs as they always have)
        if len(stacks) == 1 and stacks[0] != path:
            return TiffStack(stacks[0])
        return ImageFolderStack(path)  # (slices; or several stacks, which it refuses saying so)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return TiffStack(path)
    if suffix in IMAGE_SUFFIXES:
        return ImageFolderStack.single_file(path)
    raise UnreadableStackError(
        f"not an image stack: expected a TIFF/OME-TIFF file, an NDTiff or Micro-Manager dataset, "
        f"or a folder of {'/'.join(s.lstrip('.').upper() for s in IMAGE_SUFFIXES)} images", path)
