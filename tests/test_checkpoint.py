"""facet.checkpoint: atomic writes, weights_only loading, prefixes, exact RNG restore."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from facet.checkpoint import (capture_rng, load_checkpoint, restore_rng, save_checkpoint,
                              strip_prefixes, unwrap)


def _draws(gen: torch.Generator) -> list:
    return [random.random(), float(np.random.rand()), float(torch.rand(1)),
            float(torch.rand(1, generator=gen))]


def test_rng_roundtrip_through_a_file(tmp_path):
    gen = torch.Generator().manual_seed(3)
    _draws(gen)
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "rng": capture_rng(gen)})
    expected = _draws(gen)
    _draws(gen)  # move every stream on
    restore_rng(load_checkpoint(tmp_path / "c.pt")["rng"], gen)  # weights_only load
    assert _draws(gen) == expected


def test_model_optimizer_roundtrip_and_prefixes(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    wrapped = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path / "c.pt", {"model": wrapped, "optimizer": opt.state_dict(),
                                        "merges": [["a", "b"]], "config": {"lr": 1e-3}, "step": 1})
    ck = load_checkpoint(tmp_path / "c.pt")
    fresh = torch.nn.Linear(3, 2)
    fresh.load_state_dict(ck["model"])  # strict: prefixes are gone
    assert torch.equal(fresh.weight, model.weight)
    opt2 = torch.optim.AdamW(fresh.parameters())
    opt2.load_state_dict(ck["optimizer"])
    exp_avg = [o.state_dict()["state"][0]["exp_avg"] for o in (opt, opt2)]
    assert torch.equal(*exp_avg)
    assert strip_prefixes({"_orig_mod.module.x": 1}) == {"x": 1}


def test_unwrap_removes_wrappers():
    inner = torch.nn.Linear(2, 2)

    class Wrapper(torch.nn.Module):  # stands in for DDP (.module) around torch.compile (._orig_mod)
        def __init__(self, attr, m):
            super().__init__()
            setattr(self, attr, m)

    assert unwrap(Wrapper("module", Wrapper("_orig_mod", inner))) is inner


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(1)}})
    with pytest.raises(Exception):
        save_checkpoint(path, {"model": {"w": lambda: 0}})  # unpicklable: fails mid-write
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no temp file left behind


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a facet checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
