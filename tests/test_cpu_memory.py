"""facet.cpu_memory: the policy is accepted by glibc (its speed effect is measured in bench.py)."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = "from facet.cpu_memory import keep_freed_memory; print(keep_freed_memory())"


def test_policy_is_applied_on_glibc_and_reported_elsewhere():
    # In a child process: the setting is process-wide and should not leak into the test run.
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          check=True)
    expected = platform.libc_ver()[0] == "glibc"
    assert done.stdout.strip() == str(expected)


@pytest.mark.skipif(sys.platform.startswith("linux"), reason="checks the non-Linux answer")
def test_policy_is_a_no_op_off_linux():
    from facet.cpu_memory import keep_freed_memory

    assert keep_freed_memory() is False
