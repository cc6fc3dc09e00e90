"""The one rule for aligning slices when nobody says how: by where the slices come from.

- a stage's stack (live sessions on a stage, the MDA handler, ``FusionSettings()``): "off". A stage
  moves the specimen along the optical axis only, and "auto" would read defocus as motion on some
  still stacks (bright-field edges over a glow: a 0.5% false scale drift, 1.5 dB lost; see
  tests/test_brightfield_halo.py);
- a tunable lens's sweep: "on" with "lens". Its magnification creeps with focal power, by less
  per slice than "auto" notices, smoothly and about the optical axis (``lens_breathing``);
- a saved stack (``--refuse``), whose origin is unknown (hand-held, drifting): "auto", which
  warps only slices that moved by more than half a pixel.
"""
from __future__ import annotations

from typing import Literal

SliceSource = Literal["stage", "tunable lens", "saved stack"]

DEFAULT_ALIGNMENT: dict[str, tuple[str, str]] = {   # source -> (align, align_model)
    "stage": ("off", "similarity"),
    "tunable lens": ("on", "lens"),
    "saved stack": ("auto", "similarity"),
}


def default_alignment(source: SliceSource) -> dict[str, str]:
    """FusionSettings' align and align_model for slices from ``source``, as keyword arguments."""
    align, model = DEFAULT_ALIGNMENT[source]
    return {"align": align, "align_model": model}
