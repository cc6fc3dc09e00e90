"""fusion.allocator: freed slice-sized temporaries are reused, not faulted in again."""
import subprocess
import sys
import textwrap

import pytest

from fusion.allocator import keep_freed_memory

# A fusion-like loop: 48 MB temporaries made and freed per "slice"; the minor page faults of
# the later slices tell whether their pages had to be mapped again.
FAULTS_PER_SLICE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    if sys.argv[1] == "keep":
        from fusion.allocator import keep_freed_memory
        assert keep_freed_memory()
    def one_slice():
        a = np.ones((2000, 2000, 3), np.float32)   # 48 MB, above glibc's 32 MB mmap threshold
        b = a[:, :, 0] * 2.0                        # 16 MB
        return float(b[0, 0] + a[-1, -1, -1])
    one_slice()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        one_slice()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
""")


def _faults_per_slice(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", FAULTS_PER_SLICE, mode], capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tunes glibc's malloc")
def test_freed_temporaries_are_reused_instead_of_faulted_in_again():
    if not keep_freed_memory():
        pytest.skip("not glibc")
    default, kept = _faults_per_slice("default"), _faults_per_slice("keep")
    # glibc's default maps the temporaries' pages again for every slice (how many faults that
    # takes depends on the kernel's fault granularity: ~15k on a plain kernel, ~1k in a sandbox)
    assert default > 100
    assert kept < 0.3 * default
