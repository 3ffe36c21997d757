"""Checkpoint files: facet's own training checkpoints, and OpenAI-layout CLIP weights.

Where a run's state goes to disk and comes back. A facet checkpoint is one dict that rebuilds
the model without the training script's state (config dict + tokenizer merges) and continues
training exactly (optimizer, scheduler, step, epoch and every random state):

    {"model": state_dict, "optimizer": ..., "scheduler": ..., "config": dict,
     "merges": [[a, b], ...], "classes": [...], "step": int, "epoch": int,
     "rng": {"python": [...], "numpy": {...}, "torch": uint8 tensor, "generator": ...}}

It holds only tensors and plain containers, written through `facet.atomic.atomic_file` (a crash
leaves the previous checkpoint intact) and read with `torch.load(weights_only=True)`: a
checkpoint is data, never code to unpickle. Every file facet reads weights from passes
`read_torch_file` first: torch's zip format stores a CRC-32 of every record (the pickled config,
classes, merges and step as well as each tensor) that `torch.load` never checks, so we check
them all, and a file whose bytes changed on disk is refused instead of silently evaluated.

OpenAI's CLIP checkpoints are TorchScript archives (`ViT-B-16.pt`) or state dicts.
`torch.jit.load` would run the archive's code, so `load_openai` never calls it: the weights
of a TorchScript archive are plain tensors in the zip, read by an unpickler that knows only
tensors, storages and module placeholders and refuses everything else.
"""
from __future__ import annotations

import collections
import io
import pickle
import random
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facet.atomic import atomic_file
from facet.clip import CLIP, build_from_state_dict

OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")  # ints in OpenAI's archives


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The one state-dict cleaner: strip `module.` (DDP) and `_orig_mod.` (torch.compile)
    prefixes, drop OpenAI's int extras, floats to fp32 (OpenAI ships fp16). Tensors are copied,
    so a model built from the result never shares memory with the input."""
    out = {}
    for name, value in state_dict.items():
        name = re.sub(r"^((module|_orig_mod)\.)+", "", name)
        if name in OPENAI_EXTRAS:
            continue
        out[name] = value.to(torch.float32 if value.is_floating_point() else value.dtype,
                             copy=True)
    return out


# --- facet's checkpoints ----------------------------------------------------------------------

def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write `checkpoint` (tensors and plain containers) atomically, in torch's zip format (a
    CRC-32 per record)."""
    with atomic_file(path) as f:
        torch.save(checkpoint, f)  # streamed: no in-memory copy


def _load_failure(err: Exception, zipped: bool) -> str:
    """Why torch.load refused a file, in one line: torch's own reason, without the advice
    around it (which ends in "re-run with weights_only=False", the one thing not to do)."""
    advice = ("Weights only load failed", "(1)", "(2)", "Please file", "Check the doc")
    lines = [line.strip().replace("WeightsUnpickler error:", "").strip()
             for line in str(err).splitlines() if not line.strip().startswith(advice)]
    reason = next((line for line in lines if line), type(err).__name__)
    reason = reason.split(" Please use")[0][:300]  # torch's advice: allowlist the global
    if isinstance(err, pickle.UnpicklingError) and zipped:
        return f"it holds Python objects other than tensors, which facet never unpickles ({reason})"
    if isinstance(err, pickle.UnpicklingError):  # a legacy pickle, or not a pickle at all
        return f"not a torch file of tensors ({reason})"
    return f"{type(err).__name__}: {reason}"


def read_torch_file(path: str | Path, what: str, map_location: str | torch.device = "cpu",
                    mmap: bool = False, legacy: bool = True) -> Any:
    """`torch.load(path, weights_only=True)` after checking the CRC-32 of every zip record.

    Args:
        path: a file written by `torch.save`.
        what: what the file should be, for the messages ("facet checkpoint", "CLIP weights").
        legacy: read torch's pre-zip format too (it has no checksums: read unchecked); facet
            itself has only ever written zip files.
    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file: a record that fails its CRC-32 (the file is corrupted),
            or unreadable (truncated, foreign, or code to unpickle).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not legacy and not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a {what} (not a zip-format torch file)")
    check_records(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # truncated, foreign, or a pickle that asks to run code
        raise ValueError(f"{path}: not readable as {what}: "
                         f"{_load_failure(err, zipfile.is_zipfile(path))}") from None


def check_records(path: Path) -> None:
    """Refuse a zip-format torch file (or TorchScript archive) whose records do not match the
    CRC-32 stored with each; anything else is left to the reader (a legacy file has none).

    Raises:
        ValueError: naming the file and its first corrupted record.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every record, compares its stored CRC-32
    except zipfile.BadZipFile:  # not a zip, or a broken one: torch.load names it
        return
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: corrupted: {err}") from None
    if bad is not None:
        raise ValueError(f"{path}: corrupted: record {bad} does not match the CRC-32 written "
                         "with it; use an earlier copy")


# The entries every facet checkpoint may hold, with the type they must have: a file whose CRCs
# are valid can still be crafted, and a list where a dict belongs must not become a traceback.
_ENTRY_TYPES = {"model": dict, "config": dict, "classes": (list, tuple), "merges": (list, tuple),
                "step": int, "epoch": int, "optimizer": dict, "scheduler": dict, "rng": dict}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    required: tuple[str, ...] = ("model",)) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`: safely (weights_only), every record's
    checksum verified, the entries' types checked, `module.` / `_orig_mod.` prefixes removed
    from the model's names.

    Args:
        path: the checkpoint file.
        map_location: where tensors are loaded (default CPU).
        required: entries the caller needs (e.g. "config", "classes", "merges").
    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: naming the file: unreadable or foreign (code to unpickle included), an entry
            missing or of the wrong type, or a checksum that fails (the file is corrupted).
    """
    path = Path(path)
    checkpoint = read_torch_file(path, "facet checkpoint", map_location, legacy=False)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: not a facet checkpoint (expected a dict)")
    missing = [k for k in required if k not in checkpoint]
    if missing:
        raise ValueError(f"{path}: not a facet checkpoint of this version: no {missing} entry "
                         f"(written by train.py it holds model, config, classes, merges, ...)")
    wrong = [f"{k} is a {type(checkpoint[k]).__name__}" for k, kind in _ENTRY_TYPES.items()
             if k in checkpoint and not isinstance(checkpoint[k], kind)]
    for key in ("classes", "merges"):
        if key in checkpoint and isinstance(checkpoint[key], (list, tuple)) and not all(
                isinstance(x, str) if key == "classes" else
                isinstance(x, (list, tuple)) and len(x) == 2 and all(isinstance(y, str) for y in x)
                for x in checkpoint[key]):
            wrong.append(f"{key} holds an entry that is not a " +
                         ("class name" if key == "classes" else "pair of strings"))
    if wrong:
        raise ValueError(f"{path}: not a valid facet checkpoint: {'; '.join(wrong)}")
    checkpoint.pop("checksums", None)  # per-tensor CRCs of older versions: the records' cover them
    checkpoint["model"] = clean_state_dict(checkpoint["model"]) \
        if isinstance(checkpoint.get("model"), dict) else checkpoint.get("model")
    return checkpoint


def load_weights(module: torch.nn.Module, state_dict: dict[str, torch.Tensor],
                 source: str | Path) -> None:
    """`module.load_state_dict(state_dict)` (strict) with an error that names the checkpoint.

    Raises:
        ValueError: the weights do not fit the module (missing / unexpected names or shapes).
    """
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as err:
        raise ValueError(f"{source}: its weights do not fit the model this code builds (another "
                         f"model config, or another version of facet?)\n{err}") from None


def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """All random states a training run draws from, as weights_only-safe values.

    Args:
        generator: the run's own torch.Generator (augmentation, prompt sampling), if any.
    Returns:
        {"python": list, "numpy": dict, "torch": uint8 tensor, "cuda": list,
         "generator": uint8 tensor | None}.
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


# --- OpenAI-layout CLIP weights ---------------------------------------------------------------

_STORAGES = {"HalfStorage": torch.float16, "FloatStorage": torch.float32,
             "DoubleStorage": torch.float64, "BFloat16Storage": torch.bfloat16,
             "LongStorage": torch.int64, "IntStorage": torch.int32, "ShortStorage": torch.int16,
             "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool}


class _ScriptModule:
    """Stands in for a TorchScript class while an archive's pickled state is read: it only
    keeps the attributes (submodules, tensors) the pickle gives it, and has no code."""

    def __setstate__(self, state: dict) -> None:
        self.state = state


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *_) -> torch.Tensor:
    """What `torch._utils._rebuild_tensor_v2` does, on a flat tensor standing for the storage."""
    return storage.as_strided(tuple(size), tuple(stride), offset)


class _WeightsUnpickler(pickle.Unpickler):
    """Reads a TorchScript archive's `data.pkl` without running anything: the only globals it
    resolves are the tensor rebuilder, storage types, OrderedDict and `__torch__` classes
    (replaced by `_ScriptModule`); any other global is refused."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__."):
            return type(name, (_ScriptModule,), {})
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGES:
            return _STORAGES[name]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only weights are read "
                                     "from a TorchScript archive")

    def persistent_load(self, pid):
        kind, dtype, key, _, numel = pid  # ("storage", storage type, record key, device, numel)
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"unexpected persistent record {pid!r}")
        raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        if len(raw) != numel * dtype.itemsize:
            raise pickle.UnpicklingError(f"record data/{key}: {len(raw)} bytes for {numel} values")
        return torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)


def _torchscript_weights(archive: zipfile.ZipFile) -> dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript archive's module tree, named like a state dict."""
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ValueError("no data.pkl at the top of the archive")
    prefix = pickles[0][: -len("data.pkl")]
    root = _WeightsUnpickler(archive.read(pickles[0]), archive, prefix).load()
    out, stack = {}, [("", root)]
    while stack:
        scope, module = stack.pop()
        if not isinstance(module, _ScriptModule):
            raise ValueError("the archive's data.pkl does not hold a module")
        for name, value in getattr(module, "state", {}).items():
            if torch.is_tensor(value):
                out[scope + name] = value
            elif isinstance(value, _ScriptModule):
                stack.append((f"{scope}{name}.", value))
    return out


def save_openai(path: str | Path, clip: CLIP, merges: list, **extra) -> None:
    """Write CLIP weights in OpenAI's layout -- {"state_dict": OpenAI's parameter names, fp16,
    "merges": the BPE merges, "quick_gelu": the MLP activation, **extra} -- so that
    `load_openai` reads them exactly like OpenAI's own, atomically."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in clip.state_dict().items()}
    with atomic_file(path) as f:
        torch.save({"state_dict": state, "merges": [list(m) for m in merges],
                    "quick_gelu": clip.config.quick_gelu, **extra}, f)


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive (OpenAI's release format): a zip with a code/ folder."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except zipfile.BadZipFile:  # not a zip (a legacy torch file), or a broken one
        return False


def openai_merges(path: str | Path) -> list | None:
    """The BPE merges stored with CLIP weights by `save_openai`, or None (OpenAI's files keep
    their vocabulary apart, in bpe_simple_vocab_16e6.txt.gz).

    Raises:
        FileNotFoundError / ValueError naming the file: missing, corrupted or unreadable.
    """
    path = Path(path)
    if path.is_file() and _is_torchscript(path):  # OpenAI's: the vocabulary is elsewhere
        check_records(path)
        return None
    stored = read_torch_file(path, "CLIP weights", mmap=True)
    return stored.get("merges") if isinstance(stored, dict) else None


def load_openai(path: str | Path, quick_gelu: bool | None = None) -> CLIP:
    """Load CLIP weights in OpenAI's layout: OpenAI's TorchScript archive (`ViT-B-16.pt`, read
    without running its code) or a state dict saved with `torch.save`.

    Args:
        path: the file; a state dict may be wrapped as {"state_dict": ...} or {"model": ...}.
        quick_gelu: MLP activation; None = the file's "quick_gelu" entry, else True (OpenAI's
            weights were trained with QuickGELU).
    Returns:
        CLIP in fp32, eval mode, its architecture rebuilt from the weight shapes.
    Raises:
        FileNotFoundError / ValueError naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights {path} do not exist")
    if _is_torchscript(path):
        try:  # ZipFile.read checks each record's CRC-32 as it reads it
            with zipfile.ZipFile(path) as archive:
                state_dict = _torchscript_weights(archive)
        except Exception as err:  # corrupted, or a pickle that asks for more than weights
            raise ValueError(f"{path}: not readable as CLIP weights: "
                             f"{_load_failure(err, zipped=True)}") from None
    else:
        state_dict = read_torch_file(path, "CLIP weights")
    if quick_gelu is None:
        stored = state_dict.get("quick_gelu") if isinstance(state_dict, dict) else None
        quick_gelu = stored if isinstance(stored, bool) else True
    for key in ("state_dict", "model"):  # wrapped in a training checkpoint
        if isinstance(state_dict, dict) and isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state_dict).__name__}")
    try:
        state_dict = clean_state_dict({k: v for k, v in state_dict.items() if torch.is_tensor(v)})
        return build_from_state_dict(state_dict, quick_gelu)
    except (RuntimeError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: not a loadable CLIP ViT checkpoint: {err}") from err
