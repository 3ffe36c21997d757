"""Self-describing training checkpoints: one dict, written atomically, loaded with weights_only.

A checkpoint holds everything needed to rebuild the model without the training script's state
(config dict + tokenizer merges) and to continue training exactly (optimizer, scheduler, step,
epoch and every random state), STYLE rule 11:

    {"model": state_dict, "optimizer": ..., "scheduler": ..., "config": dict,
     "merges": [[a, b], ...],
     "step": int, "epoch": int, "rng": {"python": [...], "numpy": {...}, "torch": uint8 tensor,
     "generator": uint8 tensor | None}, ...extra}

Only tensors and plain containers of primitives are stored, so `torch.load(weights_only=True)` can
read it: a checkpoint is data, never code to unpickle. Writes go through a temporary file in the
same folder and `os.replace`, so a crash mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

_PREFIXES = ("module.", "_orig_mod.")  # added by DistributedDataParallel / torch.compile


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove `module.` (DDP) and `_orig_mod.` (torch.compile) prefixes from parameter names.

    Both wrappers may nest (a compiled DDP model), so prefixes are stripped repeatedly.
    """
    out = {}
    for key, value in state_dict.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        out[key] = value
    return out


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):  # DistributedDataParallel
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """All random states a training run draws from, as weights_only-safe values.

    Args:
        generator: the run's own torch.Generator (augmentation, prompt sampling), if any.

    Returns:
        {"python": list, "numpy": dict, "torch": uint8 tensor, "generator": uint8 tensor | None}.
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": [version, list(internal), gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state() if generator is not None else None,
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore the states captured by `capture_rng` (the inverse of it)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write `checkpoint` to `path` atomically (temporary file in the same folder + os.replace).

    Args:
        path: destination file; its folder is created if needed.
        checkpoint: a dict of tensors and primitive containers (see the module docstring).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)  # streamed to disk: no in-memory copy of a large model
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`, safely (weights_only=True).

    The model state dict has any `module.` / `_orig_mod.` prefixes removed.

    Args:
        path: the checkpoint file.
        map_location: where tensors are loaded (default CPU).

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a facet checkpoint (unreadable, or no "model" entry).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{path}: not a readable checkpoint "
                         f"({type(err).__name__}: {err})") from err
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(f"{path}: not a facet checkpoint (expected a dict with a 'model' entry)")
    checkpoint["model"] = strip_prefixes(checkpoint["model"])
    return checkpoint


def load_weights(module: torch.nn.Module, state_dict: dict[str, torch.Tensor],
                 source: str | Path) -> None:
    """`module.load_state_dict(state_dict)` (strict) with an error that names the checkpoint.

    Raises:
        ValueError: the weights do not fit the module (missing / unexpected names or shapes),
            typically a checkpoint from an older version of the model code.
    """
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as err:
        raise ValueError(f"{source}: its weights do not fit the model this code builds (was it "
                         f"written by another version of facet?)\n{err}") from None
