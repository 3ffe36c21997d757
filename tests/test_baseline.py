"""The CNN baseline: its model's invariants, its config checks, and a train.py run end to end."""
from __future__ import annotations

import pytest
import torch

import evaluate
import train
from facet.baseline import BaselineObjective, ViewsCNN
from facet.config import parse_args
from facet.faces import synth


def test_a_clip_is_the_mean_of_its_frames_logits():
    model = ViewsCNN(views=3, num_classes=6, image_size=32).eval()
    clip = torch.rand(2, 4, 3, 3, 32, 32)  # (B, T, V, 3, H, W)
    output = model(clip)
    per_frame = torch.stack([model(clip[:, t:t + 1]).logits for t in range(4)], dim=1)
    torch.testing.assert_close(output.logits, per_frame.mean(dim=1))
    assert output.logits.shape == (2, 6)


def test_inputs_are_standardised_by_the_training_statistics():
    # oracle: a model with statistics (m, s) on x is the same network with (0, 1) on (x - m) / s
    torch.manual_seed(0)
    model = ViewsCNN(views=2, num_classes=3, image_size=32).eval()
    mean, std = torch.rand(2, 3, 32, 32), 0.2
    views = torch.rand(3, 1, 2, 3, 32, 32)
    model.set_input_statistics(mean, std)
    standardised = model(views).logits
    model.set_input_statistics(torch.zeros(2, 3, 32, 32), 1.0)
    torch.testing.assert_close(standardised, model((views - mean) / std).logits)
    with pytest.raises(ValueError, match=r"mean rendering \(3, 3, 32, 32\)"):
        model.set_input_statistics(torch.zeros(3, 3, 32, 32), 1.0)


def test_the_step_is_cross_entropy_on_the_augmented_views():
    torch.manual_seed(0)
    model = ViewsCNN(views=3, num_classes=6, image_size=32).eval()  # eval: dropout off
    batch = {"views": torch.rand(4, 1, 3, 3, 32, 32), "label": torch.tensor([0, 1, 2, 5]),
             "seed": torch.arange(4)}
    loss, logits, parts = BaselineObjective(model, augment=False)(batch)
    torch.testing.assert_close(logits, model(batch["views"]).logits)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, batch["label"]))
    assert parts == {"ce": loss.item()}
    augmented, *_ = BaselineObjective(model, augment=True)(batch)
    assert augmented.item() != loss.item()  # the warp changed what the model saw


def test_the_baseline_config_names_every_part_it_lacks():
    config = parse_args(["--preset=cnn-baseline"])
    assert (config.model, config.pretrained, config.text_head, config.lambda_cons) == \
        ("cnn", "", False, 0.0)
    with pytest.raises(ValueError) as err:
        parse_args(["--model=cnn"])  # the cpu preset's prompts, CLIP and consistency loss
    for words in ("--pretrained=", "--no-text_head", "--lambda_cons=0",
                  "--preset=cnn-baseline sets all of these"):
        assert words in str(err.value)
    with pytest.raises(ValueError, match="multiple of 32"):
        parse_args(["--preset=cnn-baseline", "--image_size=48"])


def test_train_py_trains_the_baseline_and_evaluate_names_what_it_is(tmp_path):
    root = synth.write_bu3dfe(tmp_path / "bu3dfe", subjects=2, seed=0)
    [metrics] = train.main([
        "--preset=cnn-baseline", f"--data={root}", f"--cache={tmp_path / 'cache'}",
        f"--out={tmp_path}", "--name=cnn", "--folds=2", "--fold=0", "--image_size=32",
        "--batch_size=6", "--epochs=2", "--threads=1", "--render_workers=1"])
    run = tmp_path / "cnn"
    for name in ("ckpt.pt", "metrics.json", "log.jsonl", "predictions.csv", "confusion.png"):
        assert (run / name).is_file(), name
    assert not (run / "view_weights.png").exists()  # no view weights: one 9-channel image
    assert metrics["view_weights"] is None
    assert metrics["n"] == 12 and sum(map(sum, metrics["confusion"])) == 12
    with pytest.raises(ValueError, match=r"cnn/ckpt.pt: a CNN baseline checkpoint"):
        evaluate.main(["--ckpt", str(run / "ckpt.pt")])
