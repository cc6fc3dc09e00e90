"""napari plugin for UMS-Fusion: open sessions and fused outputs as layers, fuse a z-stack layer,
and watch an MDA's stacks fuse as they are acquired. Install with ``pip install .[napari]``."""
