"""Slice alignment: registration by tile phase and defocus-aware refinement, warping, and the default rule."""
