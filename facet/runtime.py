"""How a facet process runs: its place in a DDP run, its device and threads, its memory
policy, and the run folder it owns.

Machinery under every command (train.py, evaluate.py, render_views.py, the view cache's
workers); the model and data code never read the environment themselves.

- Distributed: `torchrun` starts one process per device and passes RANK, LOCAL_RANK and
  WORLD_SIZE in the environment; a plain `python train.py` has none and runs as a world of one,
  with no process group. Backend: NCCL on GPUs, gloo on CPU.

      with distributed("auto") as dist:   # init_process_group ... destroy_process_group
          ...                              # dist.rank, dist.world_size, dist.device, dist.is_main

- Memory (`keep_freed_memory`): PyTorch allocates CPU tensors with the C library's malloc;
  glibc serves large blocks (above a threshold that adapts between 128 KiB and 32 MiB) with
  fresh pages and unmaps them on free, so a function that makes many multi-megabyte temporaries
  -- the rasterizer -- pays a page fault per 4 KiB touched, on every call. Fixing glibc's mmap
  threshold at 32 MiB (the largest it documents for 64-bit systems) serves such blocks from the
  heap, and its trim threshold at 1 GiB keeps the heap's freed top for the next call (at 32 MiB,
  a render of a 30k-face mesh at 224 px gave back the ~64 MiB it had freed and faulted it in
  again: 15.7k page faults and 38 ms of kernel time a call, against 57 ms for the whole call
  without them): what PyTorch's CPU tuning guide gets by preloading jemalloc or tcmalloc, with
  one standard C call. The cost: a process keeps its peak heap. Commands opt in at start;
  library functions never change this process-wide setting (bench.py measures it).
- A run owns its folder (`run_lock`): a second run with the same folder refuses to start
  instead of interleaving its log and overwriting the first run's checkpoint.
- Worker processes die with their parent (`exit_with_parent`), so killing a command never
  leaves render workers running.
- What a report records about how it was made: the command, seed and git commit (`made_by`),
  and the machine (`machine`).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as torch_dist

@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the run.

    Attributes:
        rank: global rank, 0..world_size-1.
        local_rank: rank on this node (selects the GPU).
        world_size: number of processes.
        device: this process's device.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, shows progress bars and writes checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when a process group exists (world size above one)."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """Turn "auto" | "cpu" | "cuda" into this process's torch.device.

    Raises:
        ValueError: "cuda" was asked for but no GPU is visible.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device=cuda was asked for but torch sees no GPU")
        return torch.device("cuda", local_rank)
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {device!r}: expected auto, cpu or cuda")


def setup(device: str = "auto") -> DistInfo:
    """Join the process group if started by torchrun; otherwise describe a world of one.

    Args:
        device: "auto" (GPU if present), "cpu" or "cuda".

    Returns:
        This process's DistInfo.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local_rank)
    if world_size > 1:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        # torchrun provides MASTER_ADDR/MASTER_PORT, so the env:// rendezvous needs nothing else.
        torch_dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                      rank=rank, world_size=world_size)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=dev)


def teardown() -> None:
    """Leave the process group (a no-op when there is none)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


@contextlib.contextmanager
def distributed(device: str = "auto") -> Iterator[DistInfo]:
    """`setup` on entry and `teardown` in `finally`, so a crash never leaves the group hanging.

    On a normal exit the ranks first meet at a barrier: rank 0 hosts the rendezvous store and
    writes the reports last, and a rank that tears down while another still talks to the group
    can be aborted by gloo (seen as a rare SIGABRT in the 2-rank CPU test). After a crash there
    is no barrier, which could hang on a dead peer.
    """
    try:
        yield setup(device)
        barrier()
    finally:
        teardown()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks (returns it unchanged in a world of one).

    Args:
        tensor: any shape; float64/int64 counts keep sums exact.

    Returns:
        A tensor of the same shape and dtype holding the sum over ranks (a new tensor; the input
        is not modified).
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return tensor.clone()
    # NCCL reduces only GPU tensors; counts usually live on the CPU, so they take a round trip
    device = torch.device("cuda", torch.cuda.current_device()) \
        if torch_dist.get_backend() == "nccl" else tensor.device
    out = tensor.to(device, copy=True)
    torch_dist.all_reduce(out, op=torch_dist.ReduceOp.SUM)
    return out.to(tensor.device)


def barrier() -> None:
    """Wait for all ranks (no-op in a world of one)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()

def all_gather_objects(items: list) -> list:
    """Concatenate a list of picklable items from every rank, in rank order (the list itself
    in a world of one)."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return list(items)
    gathered = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def amp_dtype(enabled: bool, device: torch.device) -> torch.dtype | None:
    """bf16 autocast when asked for and supported (GPUs with bf16, or CPU when forced)."""
    if not enabled:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return None  # fp16 would need a GradScaler; plain fp32 is the honest fallback
    return torch.bfloat16


def default_threads(device: torch.device) -> int:
    """CPU threads per process: the cores shared evenly among this node's processes."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (os.cpu_count() or 1) // local) if device.type == "cpu" else 4


def made_by(script: str, argv: list[str], seed: int) -> dict:
    """How a result was made: the command (`python SCRIPT ARGV...`), the seed, the git commit
    of the checkout ("unknown" outside git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parents[1], timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return {"command": shlex.join(["python", script, *argv]), "seed": seed,
            "commit": commit or "unknown"}


def machine(device: torch.device) -> str:
    """What a run ran on, for its report: "AMD EPYC, 2 cores" (the CPU's model name as lscpu
    prints it, from /proc/cpuinfo where there is one), or the GPU's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            name = next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), name)
    except OSError:
        pass  # not Linux: platform's name
    return f"{name or 'unknown CPU'}, {os.cpu_count() or '?'} cores"


# --- the process's memory policy and its workers --------------------------------------------

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # bytes; glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
TRIM_THRESHOLD = 1 << 30  # bytes of freed heap top kept rather than given back to the kernel


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed blocks instead of unmapping them (see module docstring).

    Returns:
        True if the policy is in effect; False where there is nothing to tune (not Linux, or a
        C library without glibc's `mallopt`, such as musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success, 0 for a rejected value.
    return all(mallopt(option, value) == 1 for option, value in
               ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD)))


def exit_with_parent() -> None:
    """Make the calling process receive SIGKILL when its parent dies (Linux `prctl`); a no-op
    where that is unavailable. Called at the start of worker processes."""
    if not sys.platform.startswith("linux"):
        return
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").prctl
    except (OSError, AttributeError):
        return
    pr_set_pdeathsig = 1  # linux/prctl.h
    prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


# --- the run folder ---------------------------------------------------------------------------

def check_writable(folder: str | Path, option: str) -> Path:
    """Check, before any slow work, that `folder` can be created and written; creates nothing.

    Raises:
        ValueError: naming the option and the folder when it cannot be.
    """
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        with tempfile.TemporaryFile(dir=existing):  # a probe file, removed on close
            pass
    except OSError as err:
        raise ValueError(f"{option}={folder}: cannot write there ({err})") from None
    return folder


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[None]:
    """Own `folder` for the duration of the block: a second holder is refused.

    The lock is an advisory `flock` on `<folder>/.lock`, which the kernel releases when the
    process ends however it ends, so a killed run never leaves a stale lock; the file names the
    holder (pid, host, start time, command) for the refusal message.

    Raises:
        ValueError: another process holds the folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise ValueError(f"{folder} is in use by another run ({holder}); wait for it to "
                             "finish or pass --name=NEW") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                            "command": " ".join(sys.argv)}))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
