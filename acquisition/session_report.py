"""What a live session reports: typed records, written as ``session.json`` by ``to_json``.

The JSON keys are the ones people, the README, the viewer and the napari plugin read; a key that
only a fused session has (scores, seconds, alignment) is left out when nothing was fused, and the
PSNR keys are there only when the rig knows the ground truth.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fusion.output_names import SESSION_REPORT


def warnings_said(caught: list) -> list[str]:
    """Python warnings caught while a session ran (``warnings.WarningMessage``), as session.json says them: each
    once, in order; of a category other than UserWarning, with its name."""
    said = [str(c.message) if issubclass(c.category, UserWarning) else f"{c.category.__name__}: {c.message}"
            for c in caught]
    return list(dict.fromkeys(said))


@dataclass
class SliceRecord:
    """One acquired slice: where it was taken and how long each step took, in seconds."""

    index: int               # in the stack on disk
    planned_index: int       # in the plan (they differ after a dropped frame)
    z: float                 # in the focus drive's unit
    move_s: float
    settle_s: float
    exposure_s: float
    store_s: float
    fusion_s: float | None = None   # filled in once fused
    # When the frame came, on this computer's clock: seconds since the first slice's (the stack's pages say it too).
    time_s: float | None = None
    # When the camera says it took the frame, on its own clock, where it gives one (GenICam): seconds since the first
    # slice's, or where the camera does not say how long its tick is, its ticks since then.
    camera_time_s: float | None = None
    camera_time_ticks: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("fusion_s", "time_s", "camera_time_s", "camera_time_ticks"):
            if data[key] is None:
                del data[key]
        return data


@dataclass
class DroppedFrame:
    """A frame still lost after the retries: an explicit gap at ``z``, never a shifted stack."""

    planned_index: int
    z: float
    error: str


@dataclass
class RetryRecord:
    """One try of a move or snap that failed with a transient device error (retried while tries were left)."""

    slice: int        # planned index
    what: str         # "move" or "snap"
    attempt: int      # 1 for the first try
    error: str


@dataclass
class SessionSeconds:
    """Where the session's time went (seconds)."""

    total: float
    devices: float                       # move + settle + exposure, summed over the slices, + slices_not_acquired
    overhead_fraction: float             # of the total, spent on anything but the devices
    result_after_last_slice: float       # latency of the final result, from the end of the acquisition
    slices_read_back_by_fusion: int      # a count: slices the engine read back from disk as it followed acquisition
    # Of ``devices``: on planned slices that gave none (lost after the retries, or the try that ended the session).
    slices_not_acquired: float = 0.0
    # A count: stored slices fused again from disk at the end, because one fused as it was written was not stored
    # (the fused image is theirs; ``result_after_last_slice`` includes that fusion).
    slices_fused_again_from_disk: int = 0


# Keys only a session that fused something has (it has ``seconds``, set as fusion ends, before any image is
# written: a full disk leaves them in); ``to_json`` leaves them out otherwise.
_FUSED_ONLY = ("focus_scores", "seconds", "alignment", "device_used")
_SCORED_ONLY = ("psnr_db", "best_slice_psnr_db")
# (throughput counts acquisition only: it is there whenever a slice was acquired, fused or not)
_WHEN_KNOWN = ("warnings", "acquisition", "seconds_acquisition", "throughput_slices_per_s", "z_range_um",
               "planned_z_range_um", "truth_range_um", "pre_sweep")


@dataclass
class SessionReport:
    """A single-stack live session: what was planned, acquired, lost, retried, fused and written."""

    profile: dict[str, Any]              # the profile as validated, in JSON form
    folder: str
    planned_slices: int
    acquired_slices: int
    focus_unit: str                      # "um", "dpt" or "mA": the unit of every z here
    dropped_frames: list[DroppedFrame] = field(default_factory=list)
    retries: list[RetryRecord] = field(default_factory=list)
    ended_by: str | None = None          # why the session ended early; None when it ran to the end
    errors: list[str] = field(default_factory=list)
    faults_injected: list[dict[str, Any]] = field(default_factory=list)
    slices: list[SliceRecord] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)   # kind ("stack", "fused", ...) -> path
    focus_scores: list[float] | None = None
    seconds: SessionSeconds | None = None
    throughput_slices_per_s: float | None = None
    alignment: list[dict[str, Any]] | None = None
    # The torch device the deep measure ran on ("cpu", "cuda"): the profile's fusion.device as resolved ("auto":
    # CUDA when present); None: a measure without one. As the refusion report's.
    device_used: str | None = None
    warnings: list[str] | None = None
    psnr_db: float | None = None             # fused image against the simulator's ground truth
    best_slice_psnr_db: float | None = None  # the best single slice against it
    # The acquisition itself (acquisition.acquisition_report): "stepped", "sequenced" or "stream";
    # the sequenced or streaming acquirer's own record; seconds from the first move to the last
    # slice; the z-range the acquired slices cover (µm drives) and the planned one where that differs,
    # the simulated specimen's true one, the pre-sweep's record.
    acquisition_mode: str = "stepped"
    acquisition: dict[str, Any] | None = None
    seconds_acquisition: float | None = None
    z_range_um: list[float] | None = None
    planned_z_range_um: list[float] | None = None
    truth_range_um: list[float] | None = None
    pre_sweep: dict[str, Any] | None = None

    def lost_slices_said(self) -> str | None:
        """The error a session with lost slices ends with (the terminal's and the live view's); None: none lost,
        or none acquired (the session then ended before its first slice, which says so)."""
        lost = len(self.dropped_frames)
        if not lost or self.acquired_slices == 0:
            return None
        z = ", ".join(f"{d.z:g}" for d in self.dropped_frames[:8]) + (", ..." if lost > 8 else "")
        unit = {"um": "µm"}.get(self.focus_unit, self.focus_unit)  # (as the live view and every other line say it)
        return (f"{lost} planned slice{'s were' if lost > 1 else ' was'} lost after the retries (z {z} "
                f"{unit}): the stack and the fused image lack them (see {SESSION_REPORT})")

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["slices"] = [record.to_json() for record in self.slices]
        # Nothing fused: no fused-only keys. Fused: all of them (alignment is null when not aligned).
        for key in _FUSED_ONLY if self.seconds is None else ():
            del data[key]
        for key in (*_SCORED_ONLY, *_WHEN_KNOWN):
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionReport:
        """A report as ``to_json`` wrote it (e.g. read back from session.json)."""
        fields = dict(data)
        fields["dropped_frames"] = [DroppedFrame(**d) for d in data.get("dropped_frames", [])]
        fields["retries"] = [RetryRecord(**r) for r in data.get("retries", [])]
        fields["slices"] = [SliceRecord(**s) for s in data.get("slices", [])]
        if data.get("seconds") is not None:
            fields["seconds"] = SessionSeconds(**data["seconds"])
        return cls(**fields)


@dataclass
class MDASessionReport:
    """A multi-dimensional session: frames planned and acquired, and one record per fused z-stack.

    ``stacks`` holds the MDA fusion handler's records as it wrote them into ``mda_fusion.json``
    (name, indices, channel, slices, z, focus scores, outputs; with the slide simulator also
    ``psnr_db`` and ``best_slice_psnr_db``).
    """

    profile: dict[str, Any]
    folder: str
    planned_slices: int
    acquired_slices: int
    ended_by: str | None
    errors: list[str]
    missing_slices: dict[str, int]          # stack name -> slices it lacks
    seconds: dict[str, float]               # "total"
    throughput_slices_per_s: float | None
    stacks: list[dict[str, Any]]
    outputs: dict[str, str]
    kind: str = "mda"
    # Every warning the session printed: those the fusion handler or a device library raised while it ran.
    warnings: list[str] = field(default_factory=list)
    # The plan's z-stacks of which no frame came (an MDA cancelled, or stopped by a full disk), in plan order.
    stacks_not_started: list[str] = field(default_factory=list)
    # Per camera that took the stacks (a Multi Camera's physical cameras each take their own): its z-stacks, those
    # fused, and their frames.
    cameras: dict[str, dict[str, int]] = field(default_factory=dict)

    def stacks_fused(self) -> list[dict[str, Any]]:
        """The z-stacks whose fused image was written."""
        return [record for record in self.stacks if "fused" in record.get("outputs", {})]

    def count_cameras(self) -> None:
        """``cameras`` from the stacks' records (each names the camera that took it)."""
        self.cameras = {}
        for record in self.stacks:
            if record.get("camera") is None:
                continue
            said = self.cameras.setdefault(record["camera"], {"stacks": 0, "fused": 0, "frames": 0})
            said["stacks"] += 1
            said["fused"] += "fused" in record.get("outputs", {})
            said["frames"] += int(record.get("slices") or 0)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MDASessionReport:
        return cls(**data)
