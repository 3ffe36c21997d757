"""facet.config: --key=value overrides checked against dataclass field types, presets."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from facet.config import (apply_overrides, config_from_args, from_dict, help_text, parse_value,
                          to_dict)


@dataclass
class Cfg:
    preset: str = "a"  # preset name
    epochs: int = 2  # passes over the data
    lr: float = 1e-3  # peak learning rate
    amp: bool = False  # bf16 autocast
    name: str = "run"  # run folder name
    fold: int | str = 0  # fold index or "all"
    pretrained: Optional[str] = None  # path to weights
    mode: Literal["shaded", "depth"] = "shaded"  # render mode
    size: tuple[int, ...] = (1, 2)  # any-length tuple
    pair: tuple[int, float] = (0, 0.5)  # fixed-length tuple
    tags: list[str] = field(default_factory=list)  # free labels


def test_types_parse():
    cfg = apply_overrides(Cfg(), ["--epochs=5", "--lr", "3e-4", "--amp", "--name=x y",
                                  "--fold=all", "--pretrained=none", "--mode=depth",
                                  "--size=4,5,6", "--pair=3,0.25", "--tags=a,b"])
    assert cfg == Cfg(epochs=5, lr=3e-4, amp=True, name="x y", fold="all", pretrained=None,
                      mode="depth", size=(4, 5, 6), pair=(3, 0.25), tags=["a", "b"])
    assert apply_overrides(Cfg(), ["--fold=3"]).fold == 3  # int tried before str
    assert apply_overrides(Cfg(amp=True), ["--no-amp"]).amp is False
    assert apply_overrides(Cfg(), ["--amp=false"]).amp is False


@pytest.mark.parametrize("arg, words", [
    ("--epochs=2.5", "expected int"),
    ("--lr=fast", "expected float"),
    ("--amp=maybe", "boolean"),
    ("--mode=texture", "shaded, depth"),
    ("--pair=1", "2 comma-separated"),
    ("--epochs", "needs a value"),
    ("epochs=3", "--key=value"),
])
def test_bad_values_name_the_option(arg, words):
    with pytest.raises(ValueError, match=words):
        apply_overrides(Cfg(), [arg])


def test_unknown_key_suggests_close_match():
    with pytest.raises(ValueError, match="unknown option --epoch.*--epochs"):
        apply_overrides(Cfg(), ["--epoch=3"])


def test_presets_and_roundtrip():
    presets = {"a": Cfg(), "b": Cfg(epochs=9, size=(7,))}
    cfg = config_from_args(presets, ["--preset=b", "--lr=0.1"], default="a")
    assert (cfg.preset, cfg.epochs, cfg.lr, cfg.size) == ("b", 9, 0.1, (7,))
    assert config_from_args(presets, ["--preset", "b"], default="a").epochs == 9
    assert config_from_args(presets, [], default="a") == Cfg()
    with pytest.raises(ValueError, match="unknown preset 'bb'.*Did you mean b"):
        config_from_args(presets, ["--preset=bb"], default="a")
    # to_dict holds only primitives (checkpoint/JSON-safe); from_dict restores tuples
    d = to_dict(cfg)
    assert d["size"] == [7] and from_dict(Cfg, d) == cfg
    assert from_dict(Cfg, {**d, "removed_field": 1}) == cfg


def test_parse_value_optional_int():
    assert parse_value("none", Optional[int]) is None
    assert parse_value("7", Optional[int]) == 7


def test_help_lists_fields_with_their_comments():
    text = help_text(Cfg, {"a": Cfg()})
    assert "--epochs=2  [int]  passes over the data" in text
    assert "--fold=0  [int | str]  fold index or \"all\"" in text
    assert "presets (--preset=NAME): a" in text
