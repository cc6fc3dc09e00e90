"""Training checkpoints and the exported weights: written atomically, read with one-line errors.

A checkpoint (``--out``) holds what continuing needs: the autoencoder, the optimiser, the step, the
seed, the crop generator's state, the last losses and the loss history. Its record beside it (.json) says
how the run was made, with the checkpoint's sha256: written after the checkpoint, a record left by a run
killed between the two is told from the checkpoint's own (an older version's, which has no sha256, by its
step). The exported weights (``--export``) are the encoder alone in float16, the file ``--method ums`` loads.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from fusion.deep.deep_measure import (DEFAULT_WEIGHTS, finish_interrupted_export, pending_record, sha256_of,
                                      weights_record)
from fusion.errors import FusionError
from fusion.outputs import OutputWriteError, json_safe, write_json, written_atomically

FLOAT16_MAX = float(torch.finfo(torch.float16).max)  # 65504: a larger weight exports as infinity
RESTORE_SHIPPED = "git checkout -- fusion/deep/weights/ums_unetpp.pt fusion/deep/weights/ums_unetpp.json"


class CheckpointError(FusionError):
    """Raised when a checkpoint cannot be read (missing, damaged, a weights file) or a destination cannot be written."""


class ExportRefusedError(CheckpointError):
    """Raised when a checkpoint's weights or losses are not finite, or do not fit float16: the training diverged."""


def checkpoint_record(checkpoint: Path) -> Path:
    """The training record written beside a checkpoint (same name, .json)."""
    return Path(checkpoint).with_suffix(".json")


def check_destination(path: Path, what: str) -> None:
    """``path``'s folder made now, so that a file cannot be written there is said before hours of training;
    CheckpointError naming ``what`` ("--out") otherwise."""
    if path.is_dir():
        raise CheckpointError(f"{what} {path}: is a folder; give a file name in it")
    blocking = next((folder for folder in path.parents if folder.exists() and not folder.is_dir()), None)
    if blocking is not None:
        raise CheckpointError(f"{what} {path}: cannot write there: {blocking} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f"{what} {path}: cannot make its folder {path.parent}: "
                              f"{error.strerror or error}") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise CheckpointError(f"{what} {path}: cannot write in {path.parent} (no permission)")


CHECKPOINT_DIGEST_KEY = "checkpoint_sha256"   # in a checkpoint's record: the sha256 of the checkpoint it describes


def save_atomically(state: dict, path: Path) -> None:
    """``torch.save`` under a temporary name, renamed onto ``path``: a run killed mid-write leaves the earlier
    file whole, never half a file at ``path``."""
    with written_atomically(path) as temporary:
        torch.save(state, temporary)


def save_checkpoint_and_record(state: dict, checkpoint: Path, record: dict) -> dict:
    """The checkpoint, then its ``record`` with the checkpoint's sha256, each written atomically; returns the record
    as written. A run killed between the two leaves the new checkpoint beside the earlier record, which
    ``training_record`` then does not take for its own."""
    save_atomically(state, checkpoint)
    record = {**record, CHECKPOINT_DIGEST_KEY: sha256_of(checkpoint)}
    write_json(checkpoint_record(checkpoint), record)
    return record


def training_record(checkpoint: Path, state: dict) -> dict:
    """The record beside ``checkpoint`` (its loaded ``state``): {} where there is none. One whose sha256 is not the
    checkpoint's describes another checkpoint (a run killed between writing the two, files copied apart), as does
    one without a sha256 (written before records had one) whose step is not the checkpoint's: a warning says so,
    and what the checkpoint itself holds is returned in its place, said to be so (``record``)."""
    path = checkpoint_record(checkpoint)
    if not path.is_file():
        return {}
    found: str | None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        found = "is not readable JSON"
    else:
        found = _not_the_record_of(record, checkpoint, state["step"])
        if found is None:
            return record
    warnings.warn(f"{checkpoint}: its record {path.name} {found}: a run stopped between writing the two, or files "
                  f"copied apart? Its command, data and options are not known; the exported record holds only what "
                  f"the checkpoint does (step {state['step']})", stacklevel=3)
    return {"record": f"made from the checkpoint: {path.name} beside it was not its record", "steps": state["step"],
            "seed": state.get("seed"), "seconds": round(float(state.get("seconds", 0.0)), 1),
            "final_losses": {name: round(float(value), 5) for name, value in (state.get("losses") or {}).items()},
            "history": state.get("history", []), CHECKPOINT_DIGEST_KEY: sha256_of(checkpoint)}


def _not_the_record_of(record: Any, checkpoint: Path, step: int) -> str | None:
    """Why ``record`` (read as JSON) is not the record of ``checkpoint`` (at ``step``); None where it is."""
    if not isinstance(record, dict):
        return f"is JSON but not a record: {_json_kind(record)}, where a record is an object ({{...}})"
    digest = record.get(CHECKPOINT_DIGEST_KEY)
    if digest is not None:
        return None if digest == sha256_of(checkpoint) else \
            f"describes another checkpoint (step {record.get('steps')}; its sha256 is not this one's)"
    # Written before records had a sha256 (the first run after upgrading): its step is all that ties the two.
    steps = record.get("steps")
    if type(steps) is int and steps == step:
        return None
    if steps is None:
        return "cannot be told to be its own (written by an older version, it gives neither a sha256 nor a step)"
    return f"describes another checkpoint (step {steps}, where this one is at step {step}; written by an older " \
           f"version, it has no sha256)"


def _json_kind(value: Any) -> str:
    kinds = {list: "a list", str: "a string", bool: "true or false", int: "a number", float: "a number",
             type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def write_weights_and_record(encoder: dict[str, torch.Tensor], weights: Path, record: dict) -> None:
    """``encoder`` saved at ``weights`` and ``record``, with their sha256 (checked on load: a damaged file is an
    error, not NaN scores), at their record, as a pair that loading never finds mismatched. Both are written whole
    (and flushed to the disk) under temporary names first; then the weights move into place, then the record. A
    kill between the two moves leaves the new record pending beside the new weights (``pending_record``), which
    loading takes for theirs and moves into place, as the next export does first (``finish_interrupted_export``);
    a kill before leaves the earlier pair as it was. An OutputWriteError naming the weights where they cannot be
    written (nothing of this export is left then)."""
    finish_interrupted_export(weights)  # (an earlier export killed between its moves: its pair made whole first)
    staged, pending = weights.with_name(f".{weights.name}.partial"), pending_record(weights)
    try:
        torch.save(encoder, staged)
        _flush_to_disk(staged)
        text = json.dumps(json_safe({**record, "sha256": sha256_of(staged)}), indent=2, allow_nan=False) + "\n"
        pending.write_text(text)
        _flush_to_disk(pending)
        os.replace(staged, weights)
    except BaseException as error:
        for path in (staged, pending):
            with contextlib.suppress(OSError):
                path.unlink()
        if isinstance(error, OSError):
            raise OutputWriteError(error.errno, f"cannot write {weights.name} into {weights.parent}: "
                                                f"{error.strerror or error}") from None
        raise
    try:
        os.replace(pending, weights_record(weights))
    except OSError as error:  # (the weights load all the same: checked against the record left pending)
        raise OutputWriteError(error.errno, f"cannot write {weights_record(weights).name} into {weights.parent}: "
                                            f"{error.strerror or error}") from None


def _flush_to_disk(path: Path) -> None:
    """``path``'s data on the disk, not only in the system's cache: moved into place after this, it is whole
    even after a power cut."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def read_checkpoint(path: Path, what: str = "--resume") -> dict[str, Any]:
    """The checkpoint at ``path`` (on the CPU); CheckpointError when it is missing, not readable, or a weights file."""
    if not path.is_file():
        raise CheckpointError(f"{what} {path}: no such checkpoint" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's own message runs to many lines
        raise CheckpointError(f"{what} {path}: not a readable checkpoint: damaged or not a PyTorch file "
                              f"({type(error).__name__})") from None
    if isinstance(state, dict) and "model" not in state and any(k.startswith("x0_0.") for k in state):
        raise CheckpointError(f"{what} {path}: is an exported weights file, not a training checkpoint "
                              "(give the --out of an earlier training run)")
    if not isinstance(state, dict) or not {"model", "optimiser", "step"} <= state.keys():
        raise CheckpointError(f"{what} {path}: not a training checkpoint of fusion.deep.train "
                              "(no model, optimiser and step in it)")
    return state


def _check_exportable(checkpoint: Path, state: dict, encoder: dict[str, torch.Tensor], record: dict) -> None:
    """ExportRefusedError where the run diverged: a loss that is not finite, or a weight float16 cannot hold."""
    losses = dict(state.get("losses") or {})
    if not losses:  # checkpoints written before the losses were kept in them
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            losses = dict(record.get("final_losses") or {})
    bad_losses = {name: value for name, value in losses.items() if not math.isfinite(float(value))}
    if bad_losses:
        raise ExportRefusedError(f"{checkpoint}: its loss is {bad_losses} at step {state['step']}: the training "
                                 "diverged; train again with a lower --lr")
    for name, tensor in encoder.items():
        if not tensor.is_floating_point():
            continue
        largest = float(tensor.detach().abs().max()) if tensor.numel() else 0.0
        if not math.isfinite(largest) or largest > FLOAT16_MAX:
            raise ExportRefusedError(f"{checkpoint}: encoder tensor {name} holds {largest:.3g}, more than float16 "
                                     f"holds ({FLOAT16_MAX:g}): the training diverged; train again with a lower --lr")


def export_weights(checkpoint: Path, weights: Path) -> str | None:
    """The shipped file: the encoder's state_dict in float16 (half the size; features are unaffected),
    with the checkpoint's training record copied beside it. Returns a line to say when it replaced a file."""
    state = read_checkpoint(checkpoint, "the checkpoint to export")
    encoder = {k[len("encoder."):]: v for k, v in state["model"].items() if k.startswith("encoder.")}
    record = training_record(checkpoint, state)
    _check_exportable(checkpoint, state, encoder, record)
    encoder = {k: (v.half() if v.is_floating_point() else v) for k, v in encoder.items()}
    replaced = weights.exists()
    weights.parent.mkdir(parents=True, exist_ok=True)
    record["exported_from"] = checkpoint.name
    write_weights_and_record(encoder, weights, record)
    if not replaced:
        return None
    if weights.resolve() == DEFAULT_WEIGHTS.resolve():
        return f"replaced the shipped weights {weights} (to get them back: {RESTORE_SHIPPED})"
    return f"replaced the earlier weights file {weights} and its record"
