"""Focus positions from a profile's plan, in the focus drive's unit.

Stage plans are useq-schema's own z-plans (ZRangeAround, ZTopBottom, ZAbsolutePositions, as
``acquisition.profile`` validates them); a tunable lens sweeps from ``start`` to ``stop`` every
``step`` in diopters or milliamps.
"""
from __future__ import annotations

import numpy as np

from acquisition.profile import PlanSettings
from devices.focus_drive import FocusDrive

# Positions are kept to 1e-9 of their unit: far below any drive's step, and free of float noise
# (a sweep's 0.19999999999999996 is 0.2).
POSITION_DECIMALS = 9


def tidy_position(position: float) -> float:
    """``position`` rounded to ``POSITION_DECIMALS``, never -0.0."""
    return round(float(position), POSITION_DECIMALS) + 0.0  # (+ 0.0 turns -0.0 into 0.0)


def planned_positions(plan: PlanSettings, start: float) -> list[float]:
    """Every position of the plan; relative plans (a range) centre on ``start``."""
    if plan.sweep is not None:
        sweep = plan.sweep
        direction = 1.0 if sweep.stop >= sweep.start else -1.0
        count = int(np.floor(abs(sweep.stop - sweep.start) / sweep.step + 1e-9)) + 1
        return [tidy_position(sweep.start + direction * sweep.step * k) for k in range(count)]
    z = plan.z
    if z is None:
        raise ValueError(f"a plan needs z or sweep, got {plan!r}")
    offset = start if z.is_relative else 0.0
    return [tidy_position(offset + float(position)) for position in z]


# A position off the drive's grid by more than this share of the plan's spacing is recorded off by as much.
OFF_GRID_SHARE = 0.01


def repeated_focus_warning(positions: list[float], drive: FocusDrive) -> str | None:
    """A warning where positions closer together than the drive's smallest step (``FocusDrive.resolution``)
    would be taken at one focus setting (a sweep of 0.0001 dpt on a lens that steps by 0.005); None where
    each position has its own setting, or the drive does not say its step."""
    resolution = drive.resolution
    if resolution is None or len(positions) < 2:
        return None
    settings = len({round(position / resolution) for position in positions})
    if settings == len(positions):
        return None
    unit = drive.unit
    return (f"{drive.name} steps by {resolution:g} {unit}: the {len(positions)} planned positions ({min(positions):g} "
            f"to {max(positions):g} {unit}) reach only {settings} focus setting{'s' if settings > 1 else ''}, and "
            f"slices at one setting repeat the same focus; space the positions at least {resolution:g} {unit} apart")


def step_warning(positions: list[float], drive: FocusDrive) -> str | None:
    """What the drive's smallest step does to the planned ``positions``: some share a focus setting
    (``repeated_focus_warning``), else some fall between its steps (``off_grid_warning``); None: neither."""
    return repeated_focus_warning(positions, drive) or off_grid_warning(positions, drive)


def off_grid_warning(positions: list[float], drive: FocusDrive) -> str | None:
    """A warning where planned positions fall between the drive's steps (``FocusDrive.resolution``) by more
    than OFF_GRID_SHARE of the plan's spacing: the drive goes to the nearest step, but the stack records the
    planned position (0.15 µm on a stage that steps by 0.1 goes to 0.1 or 0.2). None otherwise."""
    resolution = drive.resolution
    if resolution is None or len(positions) < 2:
        return None
    spacing = min((abs(b - a) for a, b in zip(sorted(positions), sorted(positions)[1:]) if b != a), default=0.0)
    off = [(position, abs(position - round(position / resolution) * resolution)) for position in positions]
    off = [(position, error) for position, error in off if error > OFF_GRID_SHARE * spacing and error > 1e-9]
    if not off:
        return None
    unit = drive.unit
    named = ", ".join(f"{position:g}" for position, _ in off[:5]) + (", ..." if len(off) > 5 else "")
    worst = max(error for _, error in off)
    return (f"{drive.name} steps by {resolution:g} {unit}: {len(off)} of the {len(positions)} planned positions "
            f"({named} {unit}) fall between its steps, so the drive goes to the nearest step while the stack records "
            f"the planned position (off by up to {worst:.3g} {unit}); make the plan's step and start multiples of "
            f"{resolution:g} {unit}")
