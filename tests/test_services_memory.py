"""services.memory: freed large blocks are reused (no new page faults per batch) once retained."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.memory import retain_freed_memory

CHURN = """
import resource, sys
import numpy as np
if sys.argv[1] == "retain":
    from services.memory import retain_freed_memory
    assert retain_freed_memory()
np.ones(16 << 20)  # 128 MiB once: the heap grows to hold it
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    np.ones(16 << 20).sum()  # allocate, touch every page, free
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_retained_memory_is_reused_instead_of_faulted_in_again():
    plain, retained = _faults("plain"), _faults("retain")
    assert plain >= 10 * 64  # ten fresh 128 MiB mappings (at least 64 huge pages each)
    assert retained < plain / 10


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="max_block_bytes"):
        retain_freed_memory(0)
