"""Focus positions from a profile's plan, in the focus drive's unit.

Stage plans are useq-schema's own z-plans (ZRangeAround, ZTopBottom, ZAbsolutePositions, as
``acquisition.profile`` validates them); a tunable lens sweeps from ``start`` to ``stop`` every
``step`` in diopters or milliamps.
"""
from __future__ import annotations

import numpy as np

from acquisition.profile import PlanSettings


def planned_positions(plan: PlanSettings, start: float) -> list[float]:
    """Every position of the plan; relative plans (a range) centre on ``start``."""
    if plan.sweep is not None:
        sweep = plan.sweep
        direction = 1.0 if sweep.stop >= sweep.start else -1.0
        count = int(np.floor(abs(sweep.stop - sweep.start) / sweep.step + 1e-9)) + 1
        return [float(sweep.start + direction * sweep.step * k) for k in range(count)]
    z = plan.z
    if z is None:
        raise ValueError(f"a plan needs z or sweep, got {plan!r}")
    offset = start if z.is_relative else 0.0
    return [offset + float(position) for position in z]
