"""Focus positions from a profile's plan, in the focus drive's unit.

Stage plans use useq-schema's z-plan vocabulary (ZRangeAround, ZTopBottom, ZAbsolutePositions);
a tunable lens sweeps from ``start`` to ``stop`` every ``step`` in diopters or milliamps.
"""
from __future__ import annotations

import numpy as np
import useq

from acquisition.profile import PlanSettings, ZAbsolute, ZRange, ZTopBottom


def planned_positions(plan: PlanSettings, start: float) -> list[float]:
    """Every position of the plan; relative plans (a range) centre on ``start``."""
    if plan.sweep is not None:
        sweep = plan.sweep
        direction = 1.0 if sweep.stop >= sweep.start else -1.0
        count = int(np.floor(abs(sweep.stop - sweep.start) / sweep.step + 1e-9)) + 1
        return [float(sweep.start + direction * sweep.step * k) for k in range(count)]
    z = plan.z
    if isinstance(z, ZRange):
        return [start + float(p) for p in useq.ZRangeAround(range=z.range, step=z.step)]
    if isinstance(z, ZTopBottom):
        return [float(p) for p in useq.ZTopBottom(top=z.top, bottom=z.bottom, step=z.step)]
    if isinstance(z, ZAbsolute):
        return [float(p) for p in useq.ZAbsolutePositions(absolute=z.absolute)]
    raise ValueError(f"unknown plan {plan!r}")
