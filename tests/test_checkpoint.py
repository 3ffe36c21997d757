"""facet.checkpoint: atomic writes, weights_only loading, every record's CRC-32 checked, exact
RNG restore, and
OpenAI-layout CLIP weights (state dicts and TorchScript archives read without running code)."""
from __future__ import annotations

import pickle
import random
import shutil
import signal
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from facet.checkpoint import (capture_rng, clean_state_dict, load_checkpoint, load_openai,
                              load_weights, openai_merges, restore_rng, save_checkpoint,
                              save_openai)
from facet.clip import CLIP, CLIPConfig, build_from_state_dict

REPO = Path(__file__).resolve().parents[1]

# head dim 64 so that the architecture can be rebuilt from weight shapes
SMALL = CLIPConfig(embed_dim=32, image_size=32, patch_size=8, vision_width=64, vision_layers=2,
                   vision_heads=1, context_length=16, vocab_size=600, text_width=64,
                   text_heads=1, text_layers=2, quick_gelu=False)


class RunsCode:
    """A pickle payload: unpickling it calls `open(marker, "w")`, i.e. runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _draws(gen: torch.Generator) -> list:
    return [random.random(), float(np.random.rand()), float(torch.rand(1)),
            float(torch.rand(1, generator=gen))]


def _features(model: CLIP, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, SMALL.vocab_size - 1, (2, 16), generator=g)
    tokens[:, 9] = SMALL.vocab_size - 1  # end of text
    with torch.no_grad():
        return (model.encode_image(torch.randn(2, 3, 32, 32, generator=g)),
                model.encode_text(tokens))


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
    cleaned = clean_state_dict({"_orig_mod.module.x": torch.ones(2, dtype=torch.float16),
                                "vocab_size": torch.tensor(7)})
    assert list(cleaned) == ["x"] and cleaned["x"].dtype == torch.float32


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(1)}})
    with pytest.raises(Exception):
        save_checkpoint(path, {"model": {"w": lambda: 0}})  # unpicklable: fails mid-write
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no temp file left behind


def test_the_temp_file_of_a_writer_killed_mid_write_is_removed_by_the_next_write(tmp_path):
    path = tmp_path / "c.pt"
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from facet.atomic import atomic_file\n"
        "with atomic_file(sys.argv[1]) as f:\n"
        "    f.write(b'half a checkpoint'); f.flush(); print('writing', flush=True)\n"
        "    time.sleep(60)\n"), str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "writing\n"
    writer.send_signal(signal.SIGKILL)  # mid-write: its temp file stays behind
    writer.wait()
    orphan = tmp_path / f".c.pt.{writer.pid}.tmp"
    assert orphan.is_file() and not path.exists()
    save_checkpoint(path, {"model": {"w": torch.ones(1)}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other.pt: .*no \['model'\] entry"):
        load_checkpoint(tmp_path / "other.pt")
    save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.ones(1)}})
    with pytest.raises(ValueError, match=r"c.pt: .*no \['config', 'classes'\] entry"):
        load_checkpoint(tmp_path / "c.pt", required=("model", "config", "classes"))


def test_flipped_bytes_in_a_tensor_are_refused(tmp_path):
    path = tmp_path / "c.pt"
    weight = torch.arange(1000, dtype=torch.float32)
    save_checkpoint(path, {"model": {"w": weight}})
    data = bytearray(path.read_bytes())
    at = data.find(weight.numpy().tobytes()[400:416])  # inside the tensor's storage record
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"c.pt: corrupted: record .*data/0 does not match"):
        load_checkpoint(path)


def _edit_in_place(path: Path, old: bytes, new: bytes) -> None:
    """Replace bytes of a file without changing its length: what a disk or an editor may do,
    leaving every zip header and CRC as written."""
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1
    path.write_bytes(data.replace(old, new))


@pytest.mark.parametrize("old, new", [(b"-20,0;0,0;20,0", b"-20,0;0,0;70,0"),  # the views
                                      (b"happiness", b"sadnessss"),  # a class name
                                      (b"qxj", b"qxk")])  # a BPE merge
def test_edited_bytes_outside_tensors_are_refused(tmp_path, old, new):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "config": {"views": "-20,0;0,0;20,0"},
                           "classes": ["anger", "happiness"], "merges": [["zv", "qxj"]],
                           "step": 7})
    _edit_in_place(path, old, new)
    with pytest.raises(ValueError, match=r"c.pt: corrupted: record \w+/data.pkl does not match"):
        load_checkpoint(path)


@pytest.mark.parametrize("entry, value, words", [("config", ["lr", 1e-3], "config is a list"),
                                                 ("classes", 6, "classes is a int"),
                                                 ("classes", ["anger", 3], "not a class name"),
                                                 ("merges", [["a"]], "not a pair of strings"),
                                                 ("step", "7", "step is a str")])
def test_entries_of_the_wrong_type_are_refused(tmp_path, entry, value, words):
    """A file with valid CRCs can still be crafted: its entries' types are checked too."""
    good = {"model": {"w": torch.ones(1)}, "config": {}, "classes": ["a"], "merges": [],
            "step": 0}
    save_checkpoint(tmp_path / "c.pt", {**good, entry: value})
    with pytest.raises(ValueError, match=rf"c.pt: not a valid facet checkpoint: .*{words}"):
        load_checkpoint(tmp_path / "c.pt")


def test_a_refused_pickle_is_named_with_torch_s_reason(tmp_path):
    torch.save({"model": {}, "evil": RunsCode(tmp_path / "ran")}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil.pt: not readable as facet checkpoint: it holds "
                       r"Python objects other than tensors.*GLOBAL io.open"):
        load_checkpoint(tmp_path / "evil.pt")


ASSETS = {"shipped": REPO / "facet" / "assets" / "facet_clip_stem.pt",
          "shipped-patch": REPO / "facet" / "assets" / "facet_clip_tiny.pt"}


@pytest.mark.parametrize("source", ["saved", "shipped", "shipped-patch"])
def test_clip_weights_with_a_flipped_bit_are_refused(tmp_path, source):
    path = tmp_path / "clip.pt"
    if source in ASSETS:
        shutil.copy(ASSETS[source], path)
    else:
        save_openai(path, CLIP(SMALL), merges=[("a", "b")])
    assert openai_merges(path) is not None and load_openai(path) is not None  # intact: reads
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # the middle of the file: inside a weight's record
    path.write_bytes(bytes(data))
    for read in (load_openai, openai_merges):
        with pytest.raises(ValueError, match=r"clip.pt: corrupted: record \w+/data/\d+ does"):
            read(path)


def test_weights_that_do_not_fit_the_model_name_the_file():
    with pytest.raises(ValueError, match=r"ck.pt: its weights do not fit"):
        load_weights(torch.nn.Linear(3, 2), {"weight": torch.zeros(5, 5)}, "ck.pt")


def test_pickle_payloads_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"model": {}, "evil": RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt"):
        load_openai(tmp_path / "evil.pt")
    # a TorchScript-shaped archive whose data.pkl asks to run code: torch.jit.load would run it
    with zipfile.ZipFile(tmp_path / "evil_ts.pt", "w") as archive:
        archive.writestr("evil_ts/data.pkl", pickle.dumps(RunsCode(marker), protocol=2))
        archive.writestr("evil_ts/code/__torch__/evil.py", "")
    with pytest.raises(ValueError, match=r"evil_ts.pt: .*refusing to load io.open"):
        load_openai(tmp_path / "evil_ts.pt")
    assert not marker.exists()


@pytest.mark.parametrize("config", [SMALL, replace(SMALL, stem_layers=2)],
                         ids=["patches", "conv-stem"])
def test_state_dict_round_trip_is_bit_exact(tmp_path, config):
    model = CLIP(config).eval()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "ckpt.pt")
    loaded = load_openai(tmp_path / "ckpt.pt", quick_gelu=False)
    state_dict = torch.load(tmp_path / "ckpt.pt", weights_only=True)["state_dict"]
    rebuilt = build_from_state_dict(state_dict, quick_gelu=False)
    assert loaded.config == rebuilt.config == config
    for a, b, c in zip(_features(model), _features(loaded), _features(rebuilt)):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_load_openai_fp16_state_dict_with_extras_and_prefix(tmp_path):
    model = CLIP(replace(SMALL, quick_gelu=True)).eval()
    sd = {f"module.{k}": v.half() for k, v in model.state_dict().items()}
    sd |= {"input_resolution": torch.tensor(32), "context_length": torch.tensor(16),
           "vocab_size": torch.tensor(600)}
    torch.save(sd, tmp_path / "fp16.pt")
    loaded = load_openai(tmp_path / "fp16.pt")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    for a, b in zip(_features(model), _features(loaded)):  # same weights after fp16 rounding
        assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script
def test_load_openai_torchscript_archive(tmp_path):
    model = CLIP(replace(SMALL, quick_gelu=True)).eval()
    archive = nn.Module()  # the same names as nested plain modules, like OpenAI's JIT model
    for name, value in model.state_dict().items():
        *path, leaf = name.split(".")
        owner = archive
        for part in path:
            if not hasattr(owner, part):
                owner.add_module(part, nn.Module())
            owner = getattr(owner, part)
        owner.register_parameter(leaf, nn.Parameter(value.clone(), requires_grad=False))
    for extra in ("input_resolution", "context_length", "vocab_size"):
        archive.register_buffer(extra, torch.tensor(7))
    torch.jit.script(archive).save(str(tmp_path / "ViT-tiny.pt"))
    loaded = load_openai(tmp_path / "ViT-tiny.pt")
    for a, b in zip(_features(model), _features(loaded)):
        assert torch.equal(a, b)


def test_load_openai_reports_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_openai(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_openai(tmp_path / "junk.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt.*missing"):
        load_openai(tmp_path / "other.pt")
