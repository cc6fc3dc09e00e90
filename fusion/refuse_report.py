"""What refusing one saved stack reports: a typed record, written beside the outputs by ``to_json``.

The JSON keys are the ones the README documents and ``--resume`` reads back (``settings``: the
fusion settings as a JSON mapping, compared with the next run's to decide whether to fuse again).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class RefuseReport:
    """One refused stack: its input, the settings, the result's shape and scores, where it went."""

    stack: str                          # the path as read, made absolute (links kept)
    name: str                           # the outputs' name
    method: str                         # the focus measure
    settings: dict[str, Any]            # fusion.engine.FusionSettings, as JSON
    n_slices: int
    shape: list[int]                    # of a slice: (height, width[, channels])
    dtype: str
    depth_unit: str                     # the focus unit ("um", or "dpt" for a tunable lens's stack) when every
    #                                     slice had a focus position, else "slice index"
    depth_defined_fraction: float       # of pixels with a depth (the rest: no texture there)
    z_positions_um: list[float] | None
    seconds: dict[str, float]           # per phase: read, measure, compose, write, total, ...
    focus_scores: list[float]
    chosen_fraction: list[float]        # per slice: the share of pixels that chose it
    outputs: dict[str, str]             # kind ("fused", "depth", "report") -> path
    alignment: list[dict[str, Any]] | None
    warnings: list[str]
    focus_positions: list[float] | None = None   # where not in µm (a tunable lens's dpt or mA): each
    #                                              slice's focus, in depth_unit
    source_fingerprint: str | None = None   # the stack's files when it was read (``fusion.stack_fingerprint``):
    #                                         --resume fuses it again when they differ
    slice_files: list[str] | None = None    # a folder of slices: each slice's file, in the order fused (the
    #                                         depth map's slice index counts them)
    device_used: str | None = None          # the torch device the deep measure ran on ("cpu", "cuda"): settings'
    #                                         device as resolved ("auto": CUDA when present); None: a measure without
    channel_weights: list[float] | None = None  # separate channels (fluorescence): each one's weight in the grey the
    #                                             focus measure saw, evening out their brightness; None: colour, grey
    channels: dict | None = None  # separate channels' names and colours (#rrggbb) as the stack gave them, if it did

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RefuseReport:
        """A report as ``to_json`` wrote it (or an older version, without the fields that have defaults);
        a mapping with missing or unknown keys is a ValueError."""
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        required = {f.name for f in fields if f.default is dataclasses.MISSING}
        got = set(data) if isinstance(data, dict) else set()
        if not isinstance(data, dict) or not required <= got <= names:
            raise ValueError(f"not a refusion report: missing {sorted(required - got)}, unknown {sorted(got - names)}")
        return cls(**data)
