"""The depth map holds z as float32: which positions it cannot tell apart, decided once for every way z comes in (a
pushed slice, a saved stack's positions, a napari layer's scale and translate, a session's plan).

A z step of 1e-300 gave a depth map of 0 everywhere, and steps of 1e-4 µm at 1e4 µm one of a single depth: float32
keeps about 7 significant digits, and slices it rounds to one z all get that depth.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEPTH_DTYPE = np.float32  # the depth map's: slices whose z it rounds to one all get that depth


def as_depth(z: float) -> float:
    """``z`` as the depth map holds it."""
    return float(DEPTH_DTYPE(z))


def depth_step_at(z: float) -> float:
    """The smallest difference the depth map holds between z near ``z`` (float32's spacing there: 0.000977 at 1e4)."""
    return float(np.spacing(DEPTH_DTYPE(abs(z))))


def indistinct_z(positions: Sequence[float], unit: str) -> str | None:
    """Where the depth map cannot tell some of ``positions`` apart, that in words, after "the slices'": "z (those
    positions: a step of ...) cannot be told apart ..." (the first group it rounds to one z, in stack order, and the
    smallest step between them); None where it tells them all apart. Equal positions are not its concern (a stack
    may repeat one)."""
    groups: dict[float, list[float]] = {}
    for position in positions:
        group = groups.setdefault(as_depth(position), [])
        if position not in group:
            group.append(float(position))
    apart = next((group for group in groups.values() if len(group) > 1), None)
    if apart is None:
        return None
    unit = _unit_words(unit)
    ordered = sorted(apart)
    step = min(b - a for a, b in zip(ordered, ordered[1:]))
    shown = _distinct_words(apart[:3]) + (", ..." if len(apart) > 3 else "")
    return (f"z ({shown} {unit}: a step of {step:.6g} {unit}) cannot be told apart in the depth map, which "
            f"holds z as {np.dtype(DEPTH_DTYPE).name} (about 7 significant digits)")


def too_fine_plan(positions: Sequence[float], unit: str) -> str | None:
    """Where the depth map cannot tell some of a plan's ``positions`` apart, that in words after "its slices' ", with
    the least step it tells apart there (its spacing at the position farthest from 0); None where it tells them all
    apart. One wording for every plan refused before it runs: a single stack's, an MDA's z-plans, an auto range's."""
    said = indistinct_z(positions, unit)
    if said is None:
        return None
    farthest, unit = max(abs(position) for position in positions), _unit_words(unit)
    return (f"{said}: give it a step of at least {depth_step_at(farthest):.3g} {unit} (the depth map's at "
            f"{farthest:g} {unit})")


def _unit_words(unit: str) -> str:
    return {"um": "µm"}.get(unit, unit)


def _distinct_words(values: list[float]) -> str:
    """``values`` in as few digits as tell them apart (10000 and 10000.0001, not 10000 twice)."""
    for digits in range(6, 18):
        words = [f"{value:.{digits}g}" for value in values]
        if len(set(words)) == len(values):
            return ", ".join(words)
    return ", ".join(repr(value) for value in values)
