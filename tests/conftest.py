"""Shared test set-up: deterministic seeds, restored thread counts, the path to ../shared/data,
small real disks (tmpfs) to fill up."""
from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))  # tests import `facet` and the top-level scripts from the checkout


def pytest_configure(config):
    # Test tensors are tiny: one thread avoids torch's spin-waiting threads fighting over the
    # 2 CI cores (and over the cores of subprocesses such as torchrun's workers).
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def seeded_and_restored():
    """Every test starts from the same random state and one torch thread, and leaves the
    process as it found it (train.main, for one, sets the thread count for its run)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    threads, interop = torch.get_num_threads(), torch.get_num_interop_threads()
    yield
    assert torch.get_num_interop_threads() == interop, "a test changed the inter-op threads"
    torch.set_num_threads(threads)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (CLIP vocabulary, tokenizer vectors, checkpoint layouts); skip if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (it sits beside the checkout in the dev setup)")
    return SHARED_DATA


@pytest.fixture
def small_disk(tmp_path):
    """mount(size_kb, read_only=False) -> a folder on a real tmpfs of that size, unmounted after
    the test: a disk that fills up, or a read-only file system, as the kernel reports them.
    Skips where this process may not mount (not root, no CAP_SYS_ADMIN in the container)."""
    mounted = []

    def mount(size_kb: int, read_only: bool = False) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        options = f"size={size_kb}k" + (",ro" if read_only else "")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)
