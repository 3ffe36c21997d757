"""facet.runtime: the memory policy's effect, a run owning its folder, writable outputs, and
worker processes that die with their parent."""
from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from facet.runtime import check_writable, run_lock

REPO = Path(__file__).resolve().parents[1]

# The start of every malloc probe: glibc's malloc and mallinfo2 through ctypes, and the policy
# switched on when the probe's argument says "policy".
PROBE_SETUP = textwrap.dedent("""
    import ctypes, sys
    from facet.runtime import keep_freed_memory
    libc = ctypes.CDLL("libc.so.6")
    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc.mallinfo2.restype, libc.malloc.restype = Info, ctypes.c_void_p
    if sys.argv[1] == "policy":
        assert keep_freed_memory()
""")

# In a fresh process: malloc 16 MiB once and report the bytes glibc serves from fresh mmap'd
# pages (mallinfo2().hblkhd) -- without the policy a block that large is mapped (glibc's
# initial threshold is 128 KiB), with it the block comes from the reusable heap.
MALLOC_PROBE = PROBE_SETUP + textwrap.dedent("""
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(16 << 20)
    print(libc.mallinfo2().hblkhd - before)
""")


def run_probe(probe: str) -> dict[str, int]:
    """The number a malloc probe prints, in a fresh process without and with the policy."""
    return {arm: int(subprocess.run([sys.executable, "-c", probe, arm], capture_output=True,
                                    text=True, check=True).stdout)
            for arm in ("default", "policy")}


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the policy tunes glibc's malloc")
def test_keep_freed_memory_serves_large_blocks_from_the_heap():
    mapped = run_probe(MALLOC_PROBE)
    assert mapped["default"] >= 16 << 20  # the control: without the policy the block is mapped
    assert mapped["policy"] == 0


# In a fresh process: malloc 8 blocks of 8 MiB, free them all and report how much the heap
# (mallinfo2().arena) grew: with the policy its freed top stays for the next call.
TRIM_PROBE = PROBE_SETUP + textwrap.dedent('''
    before = libc.mallinfo2().arena
    blocks = [libc.malloc(8 << 20) for _ in range(8)]
    for block in reversed(blocks):
        libc.free(ctypes.c_void_p(block))
    print(libc.mallinfo2().arena - before)
''')


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the policy tunes glibc's malloc")
def test_keep_freed_memory_keeps_the_freed_top_of_the_heap():
    heap = run_probe(TRIM_PROBE)
    assert heap["policy"] >= 56 << 20 > heap["default"]  # kept, where glibc gives it back


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    with run_lock(tmp_path / "run"):
        with pytest.raises(ValueError, match=r"run is in use by another run \(\{\"pid\": "
                                             rf"{os.getpid()}"):
            with run_lock(tmp_path / "run"):
                pass
    with run_lock(tmp_path / "run"):  # released when the first run ends
        pass


def test_unwritable_output_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"--out=.*file/run: cannot write there"):
        check_writable(tmp_path / "file" / "run", "--out")
    assert check_writable(tmp_path / "new" / "run", "--out") == tmp_path / "new" / "run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the check created nothing


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c",
            "from facet.runtime import exit_with_parent; import time; exit_with_parent(); "
            "open({str(tmp_path / 'ready')!r}, 'w').close(); time.sleep(60)"])
        print(child.pid, flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    child = int(parent.stdout.readline())
    for _ in range(100):  # wait until the child has armed its death signal
        if (tmp_path / "ready").exists():
            break
        time.sleep(0.1)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(50):
        try:
            if "State:\tZ" in open(f"/proc/{child}/status").read():
                return  # killed, waiting only to be reaped by init
        except FileNotFoundError:
            return  # killed and reaped
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the worker outlived its killed parent")


@pytest.mark.parametrize("preset, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_importing_facet_makes_openmp_sleep_unless_the_user_chose(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    out = subprocess.run([sys.executable, "-c", "import facet, os; "
                          "print(os.environ['OMP_WAIT_POLICY'])"], env=env, cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == expected


@pytest.mark.parametrize("entry_point", ["train.py", "evaluate.py", "render_views.py", "app.py"])
def test_entry_points_import_facet_before_torch(entry_point):
    # the wait policy only counts if it is set before torch's OpenMP runtime loads
    lines = [line.split()[:2] for line in (REPO / entry_point).read_text().splitlines()
             if line.startswith(("import ", "from "))]
    first_facet = next(i for i, words in enumerate(lines) if words[1].startswith("facet"))
    torch_lines = [i for i, words in enumerate(lines)
                   if words[1].split(".")[0] in ("torch", "numpy", "streamlit", "tqdm")]
    assert not torch_lines or first_facet < min(torch_lines), entry_point
