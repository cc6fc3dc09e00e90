"""A profile's multi-dimensional plan: a useq-schema ``MDASequence`` (positions, channels, time, z).

useq-schema ignores keys it does not know; a profile must not, so a typo such as
``chanels`` is an error that lists the keys allowed there.
"""
from __future__ import annotations

import collections.abc
import difflib
import typing
from typing import Annotated, Any

import pydantic
import useq
from pydantic import BeforeValidator

from acquisition.number_fields import check_finite, check_no_yes_or_no
from fusion.mda_stacks import too_many_slices, z_plans

# Keys of the mappings a sequence may hold, by the sequence key they sit under.
_ITEM_MODELS: dict[str, type[pydantic.BaseModel]] = {"channels": useq.Channel, "stage_positions": useq.Position}
# The plans whose kind useq tells from their keys: a key that no kind has is a typo (``rang``).
_PLAN_KEYS = ("z_plan", "time_plan", "grid_plan", "autofocus_plan")


def _allowed(model) -> set[str]:
    fields = model.model_fields
    return set(fields) | {f.alias for f in fields.values() if f.alias}


def _plan_kinds(key: str) -> list[type[pydantic.BaseModel]]:
    annotation = useq.MDASequence.model_fields[key].annotation
    return [kind for kind in typing.get_args(annotation) or (annotation,)
            if isinstance(kind, type) and issubclass(kind, pydantic.BaseModel)]


def closest_key(typo: str, allowed: list[str]) -> str | None:
    """The allowed key that ``typo`` most likely misspells: one with the same letters (stpe: step, not
    stop), else the closest by difflib; None where none is close."""
    guesses = [key for key in allowed if sorted(key) == sorted(typo)] \
        or difflib.get_close_matches(typo, allowed, n=1, cutoff=0.75)
    return guesses[0] if guesses else None


def _unknown_key(item: Any, allowed: set[str], where: str, unlisted: frozenset[str] = frozenset()) -> None:
    """A ValueError naming the first key of ``item`` not ``allowed`` and the allowed ones (less ``unlisted``)."""
    bad = sorted(set(item) - allowed) if isinstance(item, dict) else []
    if bad:
        listed = sorted(allowed - unlisted)
        guess = closest_key(str(bad[0]), listed)
        raise ValueError(f"unknown key {bad[0]!r} in {where}" + (f" (did you mean {guess!r}?)" if guess else "")
                         + f"; allowed: {', '.join(listed)}")


def _check_keys(value: Any, where: str = "mda") -> Any:
    """The sequence's keys, and those of what it holds (channels, positions and their own
    sequences, plans and the phases of a multi-phase time plan), at ``where`` in the profile."""
    if not isinstance(value, dict):
        return value
    # (metadata is allowed, and not offered: a profile has no use for it)
    _unknown_key(value, _allowed(useq.MDASequence), where, unlisted=frozenset({"metadata"}))
    for key, model in _ITEM_MODELS.items():
        for number, item in enumerate(value.get(key) or []):
            _unknown_key(item, _allowed(model), f"{where}.{key}.{number}")
            _check_numbers(item, model, f"{where}.{key}.{number}")  # (x: .inf would send the stage there)
            if key == "stage_positions" and isinstance(item, dict):
                _check_keys(item.get("sequence"), f"{where}.{key}.{number}.sequence")
    for key in _PLAN_KEYS:
        plan = value.get(key)
        _check_plan(key, plan, f"{where}.{key}")
        if key == "time_plan" and isinstance(plan, dict):
            for number, phase in enumerate(plan.get("phases") or []):
                _check_plan(key, phase, f"{where}.{key}.phases.{number}")
    return value


def _check_plan(key: str, plan: Any, where: str) -> None:
    """A plan's keys: a typo (no kind of plan has it), or a key of another kind of plan than the one
    useq makes of it, which useq would drop ({range: 38, step: 2, top: 5} is a ZRangeAround without
    its top); and no yes or no where it wants a number, and no infinity or NaN (useq counts the positions of
    {top: .inf} with a traceback). A plan that is not a mapping (z_plan: [1, 2]) is one line naming the shapes it
    may take (pydantic said one line per kind of plan, each the same)."""
    if plan is not None and not isinstance(plan, dict | pydantic.BaseModel):
        shapes = " or ".join(filter(None, map(_shape, _plan_kinds(key))))
        raise ValueError(f"{where}: a {key} is a mapping of keys: {shapes}; got {plan!r:.40}")
    _unknown_key(plan, set().union(*map(_allowed, _plan_kinds(key))), where)
    kind = _kind_useq_reads(key, plan)
    if kind is None or not isinstance(plan, dict):
        return
    _unknown_key(plan, _allowed(kind), f"{where} (a {kind.__name__} plan)")
    _check_numbers(plan, kind, where)


def _shape(kind: type[pydantic.BaseModel]) -> str:
    """A kind of plan by the keys it needs: ``{range, step}``, ``{absolute: [...]}``; "" for one that needs none."""
    def said(name: str) -> str:
        listed = typing.get_origin(kind.model_fields[name].annotation) in (list, tuple, typing.Sequence,
                                                                          collections.abc.Sequence)
        return f"{name}: [...]" if listed else name
    needed = [name for name, field in kind.model_fields.items() if field.is_required()]
    return "{" + ", ".join(map(said, needed)) + "}" if needed else ""


def _check_numbers(item: Any, model: type[pydantic.BaseModel], where: str) -> None:
    """No yes or no where ``model`` wants a number, and no infinity or NaN, in the mapping ``item``."""
    if not isinstance(item, dict):
        return
    for name, field in model.model_fields.items():
        try:
            check_no_yes_or_no(item.get(name), field.annotation)
            check_finite(item.get(name))
        except ValueError as error:
            raise ValueError(f"{where}.{name}: {error}") from None


def _kind_useq_reads(key: str, plan: Any) -> type[pydantic.BaseModel] | None:
    """Which kind of plan useq makes of the mapping ``plan``; None where it makes none (its own error
    then says why)."""
    if not isinstance(plan, dict):
        return None
    try:
        adapter: pydantic.TypeAdapter = pydantic.TypeAdapter(useq.MDASequence.model_fields[key].annotation)  # type: ignore[arg-type]
        return type(adapter.validate_python(plan))
    except (pydantic.ValidationError, TypeError, ValueError):
        return None


def check_stacks_fusion_takes(sequence: useq.MDASequence) -> None:
    """No z_plan gives a stack more slices than fusion takes, as a single stack's plan.z (``profile._fusion_takes``):
    counted from the plan's numbers, before anything lists its positions (useq lists them all: {range: 38, step:
    1e-7} ended in a MemoryError, {range: 38, step: 0.001} in minutes of silence)."""
    for key, plan in z_plans(sequence):
        said = too_many_slices(plan)
        if said is not None:
            raise ValueError(f"mda.{key}: {said}")


MDAPlan = Annotated[useq.MDASequence, BeforeValidator(_check_keys)]


def channel_names(sequence: useq.MDASequence) -> list[str]:
    """Each channel's name once, in the plan's order (a channel listed twice, at two exposures say, is one
    filter-wheel position and one ground truth in the slide simulator)."""
    return list(dict.fromkeys(channel.config for channel in sequence.channels))


def around_current_position(sequence: useq.MDASequence, x_um: float | None, y_um: float | None,
                            z_um: float) -> useq.MDASequence:
    """A relative z-plan is centred where the stage is, as the single-stack plans are.

    (pymmcore-plus centres a relative plan on a position's z, and on 0 when the position
    has none: a position's own relative z-plan too.) Positions without z that run a relative
    plan, the sequence's or their own, get ``z_um``; a sequence with a relative plan and no
    positions gets one here.
    """
    if not sequence.stage_positions:
        if sequence.z_plan is None or not sequence.z_plan.is_relative:
            return sequence
        here = useq.Position(x=x_um, y=y_um, z=z_um)
        return sequence.model_copy(update={"stage_positions": (here,)})
    if not any(_runs_relative_plan(sequence, p) for p in sequence.stage_positions if p.z is None):
        return sequence
    positions = tuple(p.model_copy(update={"z": z_um}) if p.z is None and _runs_relative_plan(sequence, p) else p
                      for p in sequence.stage_positions)
    return sequence.model_copy(update={"stage_positions": positions})


def _runs_relative_plan(sequence: useq.MDASequence, position: useq.Position) -> bool:
    """Whether ``position`` runs a relative z-plan: its own sequence's, else the sequence's."""
    own = position.sequence.z_plan if position.sequence is not None else None
    plan = own if own is not None else sequence.z_plan
    return plan is not None and plan.is_relative
