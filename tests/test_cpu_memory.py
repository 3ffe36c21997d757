"""facet.cpu_memory: with the policy, re-allocating a large block no longer page-faults."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# 64 MiB is above glibc's largest adaptive mmap threshold (32 MiB): by default every such
# allocation is freshly mapped, so touching it faults in all of its 16384 pages again.
PROBE = """
import resource, sys
import torch
from facet.cpu_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(16 << 20)  # 64 MiB, written once
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del block
print(faults[-1])
"""


def faults_of_a_repeated_allocation(policy: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, policy], capture_output=True, text=True,
                          check=True)
    return int(done.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="needs glibc's mallopt (Linux)")
def test_kept_memory_is_reused_without_page_faults():
    pages = (64 << 20) // 4096
    assert faults_of_a_repeated_allocation("default") > pages // 2
    assert faults_of_a_repeated_allocation("keep") < pages // 20
