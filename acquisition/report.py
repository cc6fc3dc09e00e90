"""What a session leaves beside its stack for people: session.json and a focus-curve plot."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fusion.outputs import written_atomically


def plot_focus_curve(path: Path, z: list[float], scores: list[float], unit: str, chosen_fraction: list[float]) -> None:
    """Focus score against focus position, with the share of fused pixels taken from each slice: in z
    order, whatever order the slices were acquired in (a plan's [20, -4, 44, 4] drew a zigzag). Where it cannot be
    written, an ``OutputWriteError`` that names it and its folder."""
    order = np.argsort(np.asarray(z, np.float64), kind="stable")
    z = [z[i] for i in order]
    scores, chosen_fraction = [scores[i] for i in order], [chosen_fraction[i] for i in order]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, score_axis = plt.subplots(figsize=(7, 4), dpi=100)
    score_axis.plot(z, scores, "o-", color="tab:blue", label="focus score (mean over the frame)")
    score_axis.set_xlabel(f"focus position ({'µm' if unit == 'um' else unit})")
    score_axis.set_ylabel("focus score", color="tab:blue")
    share_axis = score_axis.twinx()
    share_axis.bar(z, np.asarray(chosen_fraction) * 100, width=(np.ptp(z) / max(len(z), 1)) * 0.6 if len(z) > 1 else 1,
                   alpha=0.3, color="tab:orange", label="fused pixels from this slice")
    share_axis.set_ylabel("% of fused pixels", color="tab:orange")
    score_axis.set_title("Focus curve")
    figure.tight_layout()
    try:  # as every other output: a full or read-only disk is said in one line, and leaves no half a PNG
        with written_atomically(path) as partial:
            figure.savefig(partial, format="png")  # (the temporary name's suffix says no format)
    finally:
        plt.close(figure)
