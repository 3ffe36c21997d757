"""facet.config: --key=value overrides parsed as the fields' types, presets, checks, help."""
from __future__ import annotations

from dataclasses import replace

import pytest

from facet.config import (BEFORE_THEY_EXISTED, PRESETS, SYNTH_KINDS, TrainConfig, from_dict,
                          help_text, parse_args, to_dict)
from facet.faces import synth


def test_types_parse():
    config = parse_args(["--epochs=5", "--lr", "3e-4", "--amp", "--name=x y", "--fold=all",
                         "--intensities=1,2", "--subjects=none", "--split=loso",
                         "--no-augment", "--views=-30;0;30"])
    assert (config.epochs, config.lr, config.amp, config.name, config.fold) == \
        (5, 3e-4, True, "x y", "all")
    assert (config.intensities, config.subjects, config.split, config.augment) == \
        ((1, 2), None, "loso", False)
    assert parse_args(["--fold=3"]).fold == 3  # int tried before str
    assert parse_args(["--amp", "--amp=false"]).amp is False  # the last word wins


@pytest.mark.parametrize("arg, words", [
    ("--epochs=2.5", "--epochs='2.5': expected int"),
    ("--lr=fast", "--lr='fast': expected float"),
    ("--amp=maybe", "boolean"),
    ("--split=random", "expected one of kfold, loso"),
    ("--intensities=3,x", "--intensities='3,x': expected comma-separated ints or none"),
    ("--epochs", "needs a value"),
    ("epochs=3", "--key=value"),
    ("--epoch=3", "unknown option --epoch. Did you mean: --epochs"),
    ("--preset=gpus", "unknown preset 'gpus'"),
    ("--fusion_gate=vector", "expected one of scalar, matrix"),
    ("--mtgf_queries=prompts --no-mtgf", "--mtgf_queries=prompts chooses how MTGF attends, "
                                         "and --no-mtgf switches MTGF off"),
    ("--onset_common", "it needs --onset=difference or --onset=magnified"),
    ("--preset=4d --onset_common --mode=texture", "--mode=normals or shaded"),
    ("--synth_crop_per_frame", "makes static scans, not sequences"),
])
def test_bad_values_name_the_option(arg, words):
    with pytest.raises(ValueError) as caught:
        parse_args(arg.split())
    assert words in str(caught.value), str(caught.value)


def test_validation_lists_every_problem_at_once():
    with pytest.raises(ValueError) as caught:
        parse_args(["--epochs=0", "--lr=-1", "--mix_prob=2", "--image_size=20", "--mode=ink",
                    "--name=a/b", "--views=1,2,3", "--tau=inf"])
    text = str(caught.value)
    for words in ("--epochs must be >= 1", "--lr must be > 0", "--mix_prob must be in [0, 1]",
                  "not a multiple of the tiny-stem patch size", "--mode='ink'", "--name='a/b'",
                  "cannot read '1,2,3'", "--tau=inf must be a finite number"):
        assert words in text, words


def test_presets_and_roundtrip():
    config = parse_args(["--preset=4d", "--lr=0.1"])
    assert (config.preset, config.frames, config.lr) == ("4d", PRESETS["4d"].frames, 0.1)
    assert parse_args(["--preset", "micro"]).split == "loso"
    default = parse_args([])  # fine-tunes facet's CLIP, so no from-scratch embedding centring
    assert default == replace(PRESETS["cpu"], center_images=False)
    assert parse_args(["--pretrained="]).center_images is True  # from scratch: centred
    assert parse_args(["--pretrained=", "--no-center_images"]).center_images is False
    assert parse_args(["--center_images"]).center_images is True  # an explicit choice wins
    # to_dict holds only primitives (checkpoint/JSON-safe); from_dict restores tuples
    d = to_dict(parse_args(["--intensities=3,4"]))
    assert d["intensities"] == [3, 4] and from_dict(d).intensities == (3, 4)
    assert from_dict({**d, "removed_field": 1}) == from_dict(d)


def test_help_lists_fields_with_their_comments():
    text = help_text()
    assert "--epochs=30 [int]  passes over the training split" in text
    assert "--fold=0 [int or str]  the test fold: an index, or \"all\" to run every fold" in text
    assert "presets (--preset=NAME): cpu, vit-b-16, bosphorus, 4d, micro" in text


def test_every_built_in_kind_is_a_synth_kind():
    assert set(SYNTH_KINDS) == set(synth.WRITERS) >= {"bosphorus", "bp4d"}
    bosphorus = parse_args(["--preset=bosphorus"])
    assert (bosphorus.synth_kind, bosphorus.synth_subjects, bosphorus.folds) == ("bosphorus",
                                                                                  60, 10)
    assert to_dict(bosphorus) == {**to_dict(parse_args([])), "preset": "bosphorus",
                                  "synth_kind": "bosphorus"}  # else the cpu preset
    with pytest.raises(ValueError, match="--synth_kind='bp4': choose one of bu3dfe, "):
        parse_args(["--synth_kind=bp4"])


@pytest.mark.parametrize("entry, words", [({"views": 5}, "views is a int, not a str"),
                                          ({"lr": "1e-3"}, "lr is a str, not a float"),
                                          ({"amp": 1}, "amp is a int, not a bool"),
                                          ({"epochs": True}, "epochs is a bool, not a int"),
                                          ({"lr": -1.0}, "--lr must be > 0")])
def test_a_checkpoint_config_of_the_wrong_types_is_refused(entry, words):
    """A config read from a checkpoint is data from disk: refused here, by name, instead of
    failing as a TypeError far away."""
    for preset in PRESETS.values():
        assert from_dict(to_dict(preset)) == preset
    with pytest.raises(ValueError, match=words):
        from_dict({**to_dict(TrainConfig()), **entry})


def test_a_config_stored_before_an_option_existed_reads_as_it_ran():
    """A checkpoint made before --mirror existed ran without mirror images, whatever today's
    default is; one that stored the option keeps its value."""
    old = to_dict(TrainConfig())
    for key in BEFORE_THEY_EXISTED:
        del old[key]
    assert not from_dict(old).mirror and not from_dict(old).mirror_test
    assert from_dict(to_dict(TrainConfig())).mirror == TrainConfig().mirror
