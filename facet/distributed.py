"""The one place where distributed training is set up and torn down (plain torch DDP).

`torchrun` starts one process per device and passes RANK, LOCAL_RANK and WORLD_SIZE in the
environment; a plain `python train.py` has none of them and runs as a world of one, with no
process group. Backend: NCCL on GPUs, gloo on CPU. Everything else in facet asks this module for
its rank instead of reading the environment itself.

    with distributed("auto") as dist:  # init_process_group ... destroy_process_group
        ...                             # dist.rank, dist.world_size, dist.device, dist.is_main
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
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


def broadcast_object(obj, src: int = 0):
    """Send a picklable object from rank `src` to every rank (identity in a world of one)."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return obj
    holder = [obj]
    torch_dist.broadcast_object_list(holder, src=src)
    return holder[0]
