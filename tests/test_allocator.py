"""Importing wschannel settles glibc's allocator: a server that receives 64 KiB messages does
not give its heap back to the system and fault it in again around every read."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import sysconfig

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform != "linux"
    or platform.libc_ver()[0] != "glibc"
    or bool(sysconfig.get_config_var("Py_GIL_DISABLED"))  # objects from mimalloc
    or any(name.startswith("MALLOC_") for name in os.environ)  # thresholds set by hand
    or "LD_PRELOAD" in os.environ,  # another allocator, perhaps
    reason="glibc's malloc with its default settings only",
)

# What receiving and echoing 64 KiB messages does to the heap: blocks under glibc's initial
# mmap threshold (128 KiB), freed together, so that the heap's free top passes its initial
# trim threshold. Prints the page faults the loop took.
CHURN = """
import resource, sys
if sys.argv[1] == "import":
    import wschannel._wschannel
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    blocks = [bytes(65536) for _ in range(16)]
    del blocks
start = faults()
for _ in range(1000):
    blocks = [bytes(65536) for _ in range(16)]
    del blocks
print(faults() - start)
"""


def page_faults(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, timeout=60, check=True
    )
    return int(result.stdout)


def test_heap_churn_of_64_kib_blocks_faults_pages_in_without_wschannel() -> None:
    # The condition the import is for: without it, the heap is trimmed and its pages faulted
    # in again round after round (about 4,800 faults over the 1,000 rounds here).
    assert page_faults("plain") > 2_000


def test_importing_wschannel_keeps_the_heap_across_64_kib_blocks() -> None:
    assert page_faults("import") < 200
