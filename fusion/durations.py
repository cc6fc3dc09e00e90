"""A time in the words a person says it: a training's progress ("2 min 10 s so far"), a batch's time left ("~40 s")."""
from __future__ import annotations

# A rough time (``rough=True``) stays in seconds up to this many, in minutes up to this many minutes: "90 s" reads
# better than "2 min" for 89.6 s, and no one says "1 min" for 61 s and means it.
ROUGH_NEXT_UNIT_AT = 90


def duration_words(seconds: float, rough: bool = False) -> str:
    """``seconds`` as a person says them: to the second below an hour, in two units ('45 s', '2 min 10 s'), to the
    minute from an hour on ('1 h 5 min'). ``rough`` (a time left, which is a guess): one unit, rounded, never under
    a second ('40 s', '12 min', '3 h'), seconds up to 90 s and minutes up to 90 min."""
    if rough:
        if seconds < ROUGH_NEXT_UNIT_AT:
            return f"{max(1, round(seconds))} s"
        if seconds < ROUGH_NEXT_UNIT_AT * 60:
            return f"{round(seconds / 60)} min"
        return f"{round(seconds / 3600)} h"
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    minutes = round(whole / 60)  # (seconds are noise at this length)
    return f"{minutes // 60} h {minutes % 60} min"
