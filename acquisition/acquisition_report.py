"""What session.json says about the acquisition itself: its mode, speed and z-range.

``throughput_slices_per_s`` counts acquisition only: slices acquired per second from the first
move (after any pre-sweep) to the end of the acquisition (the last slice handed to fusion, or the
last try for a frame that never came); fusion's own finish is in ``seconds.result_after_last_slice``.
``z_range_um`` is the range the acquired slices cover (µm drives; ``planned_z_range_um`` beside it
when a session ended early or lost its end slices),
``truth_range_um`` the simulated specimen's true height range.
"""
from __future__ import annotations


def acquisition_report(session, positions: list[float]) -> dict:
    """Fields for session.json from a finished (or ended) ``acquisition.session.Session``."""
    acquirer = session.acquirer
    report: dict = {"acquisition_mode": acquirer.mode if acquirer is not None else "stepped"}
    if acquirer is not None:
        report["acquisition"] = acquirer.report()
    acquisition_s = session.acquisition_s()
    if acquisition_s is not None and session.slices:
        report["seconds_acquisition"] = round(acquisition_s, 4)
        report["throughput_slices_per_s"] = round(len(session.slices) / acquisition_s, 3) if acquisition_s > 0 else None
    if session.profile.focus.unit == "um" and positions:
        planned = [round(min(positions), 4), round(max(positions), 4)]
        acquired = [s.z for s in session.slices if s.z is not None]
        stacked = [round(min(acquired), 4), round(max(acquired), 4)] if acquired else None
        report["z_range_um"] = stacked
        if stacked != planned:
            report["planned_z_range_um"] = planned
    truth = session.rig.truth_range_um()
    if truth is not None:
        report["truth_range_um"] = [round(truth[0], 4), round(truth[1], 4)]
    if session.range_found is not None:
        report["pre_sweep"] = session.range_found.report()
    return report
