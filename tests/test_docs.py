"""The README says what a newcomer needs: where the real stacks come from, how to rehearse faults,
and how to run the quick tests."""
from __future__ import annotations

import re

from tests.conftest import REPO_ROOT
from tests.test_real_stacks import STACKS

README = (REPO_ROOT / "README.md").read_text()


def test_readme_says_where_each_real_stack_comes_from():
    for name in STACKS:
        row = next((line for line in README.splitlines() if line.startswith(f"| `{name}/`")), None)
        assert row is not None, f"README: no row for ../shared/data/{name}/"
        assert "MIT" in row or "Apache" in row  # and under which licence


def test_readme_documents_the_faults_section_and_every_marker():
    assert "### Rehearsing failures: `faults:`" in README
    block = re.search(r"^markers = \[(.*?)^\]", (REPO_ROOT / "pyproject.toml").read_text(), re.S | re.M).group(1)
    markers = re.findall(r'^\s*"(\w+):', block, re.M)
    assert markers
    for marker in markers:
        assert f"`{marker}`" in README
    assert '-m "not slow"' in README


def test_readme_lists_the_baud_rates_a_profile_takes_and_the_drivers_defaults():
    from acquisition.profile import SERIAL_BAUDRATES
    from devices.asi_stage import DEFAULT_BAUDRATE as ASI_BAUDRATE
    from devices.optotune_lens import DEFAULT_BAUDRATE as OPTOTUNE_BAUDRATE

    text = " ".join(README.split())   # as a reader sees it, whatever the line breaks
    assert f"({', '.join(str(rate) for rate in SERIAL_BAUDRATES)})" in text
    assert f"{ASI_BAUDRATE} for the ASI MS-2000, {OPTOTUNE_BAUDRATE} for the Optotune Lens Driver 4" in text
