"""Paths as a person gives them, in a profile or on the command line: as a shell would expand them."""
from __future__ import annotations

import os
import re


def expanded_path(value: str | None) -> str | None:
    """A path as a shell would give it: ``~`` is the home folder and ``$NAME`` an environment variable (a profile's
    ``folder: ~/sessions`` made a folder named ``~`` in the working folder). A variable that is not set is a
    ValueError: a folder named ``$DATA`` would be no better; so is ``~name`` for a user this computer does not have
    (``~nonexistentuser/x`` made a folder named ``~nonexistentuser`` in the working folder)."""
    if value is None:
        return None
    home_expanded = os.path.expanduser(value)
    if home_expanded.startswith("~"):  # (expanduser leaves a ~ it cannot expand as it was)
        user = home_expanded[1:].split("/", 1)[0]
        raise ValueError(f"{value!r} starts with ~{user}, the home folder of a user {user!r} that this computer "
                         f"does not have (a folder really named ~{user}: write ./{home_expanded})" if user else
                         f"{value!r} starts with ~, and this computer has no home folder for the user running this")
    expanded = os.path.expandvars(home_expanded)
    unset = re.search(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", expanded)
    if unset:
        raise ValueError(f"{value!r} names the environment variable {unset.group(0)}, which is not set")
    return expanded


def file_used_path(value: str | None) -> str | None:
    """A file given by a person (``--weights FILE``, a profile's ``fusion.weights``) as the file it names:
    ``expanded_path``, then absolute from the folder the program runs in. What the records say is the file used,
    and what a batch's workers, which may run elsewhere, are given."""
    expanded = expanded_path(value)
    return None if expanded is None else os.path.abspath(expanded)
