"""CLIP pretraining: captions written from ground truth, the pretraining run end to end, and
its weights read back through the same path as OpenAI's (`--pretrained`)."""
from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train
from facet import build
from facet.checkpoint import load_openai, save_openai
from facet.clip import CLIP, PRESETS, normalize_images
from facet.config import parse_args
from facet.data.layouts import EMOTIONS
from facet.faces import synth
from facet.faces.captions import AU_PHRASES, MAX_PARTS, caption, describe_aus
from facet.faces.expressions import expression_aus
from facet.data.datasets import collate
from facet.faces import pretraining
from facet.faces.pretraining import CaptionedViews, EmotionViews, collate_captions
from facet.losses import clip_loss
from facet.model import CentredCLIP
from facet.prompts import CLASS_WORDS
from facet.render import RenderSettings

SMILE = {6: (0.8, 0.8), 12: (0.9, 0.9)}  # cheeks raised, lip corners pulled up


def test_a_caption_names_the_action_units_in_words_never_numbers():
    for seed in range(50):
        text = caption(SMILE, np.random.default_rng(seed), "happiness", 4,
                       {"sex": "female", "age_group": "young"}, view=-20.0)
        assert not re.search(r"\d", text.replace("3D", "")), text  # "3D scan" is the one number
        assert text == text.lower().replace("3d", "3D") and not text.endswith(".")


def test_the_same_random_state_writes_the_same_sentence():
    texts = [caption(SMILE, np.random.default_rng(7), "happiness", 3) for _ in range(2)]
    assert texts[0] == texts[1]


def test_captions_vary_and_a_share_of_them_leaves_the_emotion_out():
    """Over many draws: many different sentences, the emotion's words in most but not all of
    them (the model must also learn the parts alone), and the parts in most."""
    words = CLASS_WORDS["happiness"]
    emotion_words = tuple(words.nouns) + tuple(words.adjectives)
    texts = [caption(SMILE, np.random.default_rng(seed), "happiness", 4) for seed in range(400)]
    named = np.mean([any(w in t for w in emotion_words) for t in texts])
    parts = np.mean([any(p.split("{}")[-1].split()[-1] in t for p in AU_PHRASES[6] + AU_PHRASES[12])
                     for t in texts])
    assert len(set(texts)) > 200
    assert 0.5 < named < 0.95, named  # 75 % of emotional captions use an emotion template
    assert parts > 0.5, parts


def test_strength_side_and_order_follow_the_ground_truth():
    rng = np.random.default_rng(0)
    weak = describe_aus({12: (0.2, 0.2)}, rng)
    assert weak[0].startswith(("lip corners slightly", "mouth corners slightly"))
    one_sided = describe_aus({12: (0.9, 0.1)}, rng)
    assert one_sided[0].endswith("on the left side")
    invisible = describe_aus({12: (0.05, 0.05)}, rng)  # below what a scan shows
    assert invisible == []


def test_a_sentence_names_at_most_max_parts_the_strongest_ones():
    aus = {au: (s, s) for au, s in zip((1, 2, 4, 5, 7, 20, 26), np.linspace(0.9, 0.3, 7))}
    for seed in range(30):
        phrases = describe_aus(aus, np.random.default_rng(seed))
        assert len(phrases) <= MAX_PARTS
        assert not any("lips" in p and "stretched" in p for p in phrases)  # AU20 is 6th strongest


def test_every_caption_fits_the_tiny_text_tower(tmp_path):
    """The longest captions facet writes (every emotion at its strongest, the most AUs, a
    person and a side) through a BPE learned the way pretraining learns it: they fit the
    `tiny` context with room to spare, so a caption is never cut (the tokenizer would raise)."""
    rng = np.random.default_rng(0)
    truths = [{"aus": {str(a): list(s) for a, s in expression_aus(e, 4, rng).items()},
               "emotion": e, "intensity": 4, "person": {"sex": "male", "age_group": "middle-aged"}}
              for e in EMOTIONS for _ in range(30)]
    truths += [{"aus": {str(a): [0.9, 0.2] for a in (1, 2, 4, 5, 7, 9, 10, 12, 15, 20, 23, 26)},
                "emotion": None, "intensity": None, "person": None}] * 30
    views = np.zeros((len(truths), 3, 3, 8, 8), np.uint8)
    captions = CaptionedViews(views, truths, yaws=[-20, 0, 20])
    config = parse_args(["--preset=pretrain"])
    tokenizer = build.caption_tokenizer(config, captions)
    context = PRESETS["tiny"].context_length
    longest = 0
    for epoch in range(8):
        captions.set_epoch(epoch)
        for i in range(len(captions)):
            longest = max(longest, len(tokenizer.encode(captions[i][1])) + 2)  # + sot, eot
    assert longest <= context - 8, f"{longest} tokens with start/end; context {context}"


def test_clip_loss_is_log_batch_for_random_pairs_and_falls_for_matched_ones():
    """InfoNCE against its definition: uniform logits give ln B; a diagonal that stands out
    gives ~0; both directions count (a row-only argmax is not enough)."""
    assert clip_loss(torch.zeros(8, 8)).item() == pytest.approx(np.log(8), rel=1e-6)
    assert clip_loss(20 * torch.eye(8)).item() < 1e-6
    by_hand = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    rows = -torch.log_softmax(by_hand, 1).diag().mean()
    cols = -torch.log_softmax(by_hand, 0).diag().mean()
    assert clip_loss(by_hand).item() == pytest.approx(((rows + cols) / 2).item(), rel=1e-6)


def test_collate_pairs_image_i_with_caption_i():
    views = np.arange(4 * 3 * 3 * 2 * 2, dtype=np.uint8).reshape(4, 3, 3, 2, 2)
    truths = [{"aus": {"12": [0.9, 0.9]}, "emotion": "happiness", "intensity": 4,
               "person": None}] * 4
    data = CaptionedViews(views, truths, yaws=[-20, 0, 20], train=False)
    batch = collate_captions([data[i] for i in range(4)])
    assert batch["views"].shape == (4, 1, 1, 3, 2, 2)
    assert torch.equal(batch["label"], torch.arange(4))
    assert torch.equal(batch["views"][2, 0, 0], torch.from_numpy(views[2, 1]).float() / 255)


def test_validation_people_show_each_emotion_and_are_nobody_pretraining_sees(tmp_path):
    """Each validation person shows the six emotions once, at the evaluation set's levels
    (3-4); they are persons of the pretraining stream beyond every set it may make (a set
    large enough to reach them is refused); the set is made once and read back."""
    settings = RenderSettings(views=((-20.0, 0.0), (0.0, 0.0)), image_size=16, mode="normals")
    views, truths = pretraining.validation_set(2, settings, tmp_path, workers=1)
    assert views.shape == (12, 2, 3, 16, 16) and views.dtype == np.uint8 and views.max() > 0
    for person in range(2):
        own = truths[6 * person: 6 * person + 6]
        assert sorted(t["emotion"] for t in own) == sorted(EMOTIONS)
        assert {t["intensity"] for t in own} <= {3, 4}
        assert {t["person"]["id"] for t in own} == {pretraining.FIRST_VALIDATION_PERSON + person}
    most = pretraining.FIRST_VALIDATION_PERSON * pretraining.SCANS_PER_PERSON
    with pytest.raises(ValueError, match="validation people"):
        pretraining.pretraining_set(most + 1, settings, tmp_path)
    again_views, again_truths = pretraining.validation_set(2, settings, tmp_path, workers=1)
    assert np.array_equal(again_views, views) and again_truths == truths


def test_emotion_views_are_read_as_the_face_datasets_are():
    """EmotionViews items collate like FaceViewsDataset's: all views of a scan as one
    frame, grey renders as three channels, the emotion's class index; a scan without an
    emotion (a random AU combination) is refused, naming what is missing."""
    views = np.arange(2 * 3 * 1 * 4 * 4, dtype=np.uint8).reshape(2, 3, 1, 4, 4)  # grey
    person = {"sex": "female", "age_group": "twenties", "id": 1000000}
    truths = [{"emotion": "sadness", "intensity": 3, "person": person},
              {"emotion": "anger", "intensity": 4, "person": person}]
    batch = collate([EmotionViews(views, truths, EMOTIONS)[i] for i in range(2)])
    assert batch["views"].shape == (2, 1, 3, 3, 4, 4)
    assert torch.equal(batch["views"][1, 0, 2, 1], torch.from_numpy(views[1, 2, 0]) / 255)
    assert batch["label"].tolist() == [EMOTIONS.index("sadness"), EMOTIONS.index("anger")]
    assert batch["intensity"].tolist() == [3, 4]
    with pytest.raises(ValueError, match="None"):
        EmotionViews(views, [truths[0], {**truths[1], "emotion": None}], EMOTIONS)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny pretraining run: 96 captioned scans, zero-shot on 2 validation people each epoch
    and on a 2-subject BU-3DFE set at the end."""
    root = synth.write_bu3dfe(tmp_path_factory.mktemp("data") / "bu3dfe", subjects=2, seed=0)
    out = tmp_path_factory.mktemp("out")
    argv = [f"--data={root}", f"--cache={tmp_path_factory.mktemp('cache')}", f"--out={out}",
            "--preset=pretrain", "--name=p", "--pretrain_scans=96", "--batch_size=32",
            "--epochs=6", "--image_size=32", "--threads=1", "--render_workers=1",
            "--log_every=1", "--eval_batch_size=32", "--lr=2e-3", "--pretrain_val_people=2"]
    [metrics] = train.main(argv)
    return out / "p", metrics, argv


def test_pretraining_loss_falls_and_writes_openai_layout_weights(pretrained):
    run, metrics, _ = pretrained
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in log if "epoch" in r]
    assert len(epochs) == 6
    # 96 scans in batches of 32: chance is ln 32 = 3.47; the pairs are learned within 6 epochs
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] - 0.3, epochs
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["n"] == 24
    # the epochs are scored on the validation people, the test set once, at the end
    assert all("val_acc" in r and "test_acc" not in r for r in epochs)
    assert metrics["validation"]["accuracy"] == pytest.approx(epochs[-1]["val_acc"], abs=1e-4)
    stored = torch.load(run / "clip.pt", weights_only=True)
    assert set(stored) >= {"state_dict", "merges", "quick_gelu", "made_by"}
    assert stored["made_by"]["seed"] == 0 and "--preset=pretrain" in stored["made_by"]["command"]


def test_pretrained_weights_load_strictly_both_ways(pretrained, tmp_path):
    """facet's file -> load_openai (strict, OpenAI's names); an OpenAI-layout state dict ->
    the pretraining code again (continued pretraining, --pretrained)."""
    run, _, argv = pretrained
    clip = load_openai(run / "clip.pt")  # strict=True inside; architecture from the shapes
    stored = torch.load(run / "clip.pt", weights_only=True)
    assert set(clip.state_dict()) == set(stored["state_dict"])
    reference = CLIP(clip.config)  # OpenAI's names are facet's names
    reference.load_state_dict({k: v.float() for k, v in stored["state_dict"].items()}, strict=True)
    save_openai(tmp_path / "again.pt", clip, stored["merges"])
    again = load_openai(tmp_path / "again.pt")
    for name, value in clip.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value.half().float())  # fp16 file
    more = [a for a in argv if not a.startswith(("--name", "--epochs"))]
    [metrics] = train.main(more + ["--name=continued", "--epochs=1",
                                   f"--pretrained={run / 'clip.pt'}"])
    assert (run.parent / "continued" / "clip.pt").is_file() and metrics["n"] == 24


def test_fine_tuning_starts_from_the_pretrained_towers(pretrained, tmp_path):
    """`train.py --pretrained=clip.pt` builds FACET-VLM on exactly those towers and their BPE."""
    run, _, _ = pretrained
    config = parse_args([f"--pretrained={run / 'clip.pt'}", "--image_size=32",
                         "--no-center_images"])
    tokenizer = build.build_tokenizer(config)
    model = build.build_model(config, tokenizer, num_classes=6)
    clip = load_openai(run / "clip.pt")
    assert tokenizer.merges == [tuple(m) for m in torch.load(
        run / "clip.pt", weights_only=True)["merges"]]
    for name, value in clip.state_dict().items():
        assert torch.equal(model.clip.state_dict()[name], value), name


def _wrapper_and_fold(centred: CentredCLIP, g: torch.Generator
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Give the wrapper's BatchNorm running statistics far from (0, 1), then embed 8 images by
    the wrapper in eval mode (the oracle) and by its folded CLIP on CLIP-normalised pixels.
    Returns (images, want, got), the embeddings unit vectors."""
    centred.train()
    for _ in range(20):
        centred.encode_image(torch.rand(16, 3, 32, 32, generator=g) * 0.5 + 0.3)
    centred.eval()
    images = torch.rand(8, 3, 32, 32, generator=g)
    with torch.no_grad():
        want = F.normalize(centred.encode_image(images), dim=-1)
        got = F.normalize(centred.folded().encode_image(normalize_images(images)), dim=-1)
    return images, want, got


def test_folded_clip_computes_what_the_centred_wrapper_computes():
    """CentredCLIP standardises pixels by a mean image and centres embeddings by BatchNorm;
    `folded()` moves both into conv1, the patch positions, ln_post and proj. Oracle: the
    wrapper itself in eval mode, on the same images (CLIP-normalised for the folded CLIP)."""
    clip = CLIP(replace(PRESETS["tiny"], image_size=32, vocab_size=300))
    g = torch.Generator().manual_seed(0)
    images, want, got = _wrapper_and_fold(CentredCLIP(clip, torch.rand(3, 32, 32, generator=g),
                                                      0.2), g)
    # float32 through 4 blocks; the fold changes the order of the sums, not the maths
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    assert not torch.allclose(want, F.normalize(clip.eval().encode_image(
        normalize_images(images)), dim=-1), atol=1e-2)  # the fold is not a no-op


def test_a_stem_tower_folds_its_centring_and_refuses_a_mean_image():
    """A conv stem puts a GELU before conv1, so a mean image cannot be folded: `for_tower` keeps
    CLIP's statistics for such a tower, and the BatchNorm centring still folds exactly (oracle:
    the wrapper in eval mode); a wrapper given a mean image refuses to fold."""
    config = replace(PRESETS["tiny-stem"], image_size=32, vocab_size=300)
    g = torch.Generator().manual_seed(0)
    mean = torch.rand(3, 32, 32, generator=g)
    _, want, got = _wrapper_and_fold(CentredCLIP.for_tower(CLIP(config), mean, 0.2), g)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)  # as the patch tower's fold
    with pytest.raises(ValueError, match="convolutional stem"):
        CentredCLIP(CLIP(config), mean, 0.2).folded()
    plain = CentredCLIP.for_tower(CLIP(replace(PRESETS["tiny"], image_size=32, vocab_size=300)),
                                  mean, 0.2)
    assert torch.equal(plain.pixel_mean, mean)  # a patch tower keeps the set's statistics


def test_identity_wrapper_is_the_plain_clip():
    clip = CLIP(replace(PRESETS["tiny"], image_size=32, vocab_size=300)).eval()
    centred = CentredCLIP.identity(clip).eval()
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # a fresh BN (running stats 0, 1) only scales by 1/sqrt(1 + eps)
        torch.testing.assert_close(
            F.normalize(centred.folded().encode_image(normalize_images(images)), dim=-1),
            F.normalize(clip.encode_image(normalize_images(images)), dim=-1),
            atol=1e-6, rtol=0)  # float32 rounding of unit vectors


def test_the_default_run_fine_tunes_the_shipped_clip():
    """`python train.py` starts from facet/assets/facet_clip_stem.pt: its towers, its BPE, no
    from-scratch embedding centring; the file says how it was made and rendered."""
    config = parse_args([])
    assert config.pretrained == "facet-clip" and config.center_images is False
    assert build.pretrained_path(config) == build.FACET_CLIP
    stored = torch.load(build.FACET_CLIP, weights_only=True)
    assert "--preset=pretrain" in stored["made_by"]["command"]
    assert stored["render"] == {"views": config.views, "image_size": config.image_size,
                                "mode": config.mode}
    tokenizer = build.build_tokenizer(config)
    model = build.build_model(config, tokenizer, num_classes=6)
    assert model.image_norm is None  # center_images off
    clip = load_openai(build.FACET_CLIP)
    for name, value in clip.state_dict().items():
        assert torch.equal(model.clip.state_dict()[name], value), name
    # the architecture the run records (--model) is the shipped file's
    assert clip.config == replace(PRESETS[config.model], vocab_size=clip.config.vocab_size)


def test_a_run_rendered_smaller_than_its_pretrained_clip_reloads(pretrained, tmp_path):
    """Fine-tuning 32-px pretrained towers on 16-px renders (the views are resized to the
    towers' side): evaluate.py rebuilds the towers from the checkpoint's weights, not from
    --image_size, and reports the run's own numbers."""
    import evaluate

    run, _, argv = pretrained
    data = next(a for a in argv if a.startswith("--data="))
    cache = next(a for a in argv if a.startswith("--cache="))
    [metrics] = train.main([data, cache, f"--out={tmp_path}", "--name=ft", "--folds=2",
                            "--image_size=16", "--batch_size=6", "--epochs=1", "--threads=1",
                            "--render_workers=1", f"--pretrained={run / 'clip.pt'}"])
    again = evaluate.main(["--ckpt", str(tmp_path / "ft" / "ckpt.pt"),
                           "--cache", cache.split("=", 1)[1], "--out", str(tmp_path / "e")])
    assert again["accuracy"] == metrics["accuracy"]
    for mine, theirs in zip(again["predictions"], metrics["predictions"]):
        assert mine["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-6)


def test_validation_scans_come_centred_both_ways_and_pretraining_scans_on_the_nose_tip(tmp_path):
    """About half the validation scans are centred on the nose tip (a Bosphorus .lm3 names it),
    the others on the bounding box (BU files carry no nose tip); the pretraining scans all on
    the nose tip. Each renders as its mesh does when centred that way: the oracle is
    render_views on the scan with or without its nose tip."""
    from facet.faces import scanner
    from facet.render import render_views

    settings = RenderSettings(views=((20.0, 0.0),), image_size=24, mode="normals")
    _, trained = pretraining.pretraining_set(8, settings, tmp_path, workers=1)
    assert {t["centre"] for t in trained} == {"nose tip"}
    views, truths = pretraining.validation_set(4, settings, tmp_path, workers=1)
    centres = [t["centre"] for t in truths]
    assert set(centres) == {"nose tip", "box"} and 6 <= centres.count("box") <= 18
    for i in (centres.index("box"), centres.index("nose tip")):
        # validation scan i again, from its own generator, as _validation_scan made it
        person = pretraining.FIRST_VALIDATION_PERSON + i // len(EMOTIONS)
        subject, style = synth.person(pretraining.PRETRAIN_SEED, person)
        rng = np.random.default_rng([pretraining.PRETRAIN_SEED, i, 8])
        emotion, intensity = EMOTIONS[i % len(EMOTIONS)], int(rng.integers(3, 5))
        scan = scanner.scan(subject, expression_aus(emotion, intensity, rng, style), rng,
                            texture_size=0).mesh
        boxed = replace(scan, landmarks={"bnd": scan.landmarks["bnd"]})
        rendered = {centre: (render_views(mesh, settings.views, settings.image_size,
                                          settings.mode).clamp(0, 1) * 255).round().byte().numpy()
                    for centre, mesh in (("box", boxed), ("nose tip", scan))}
        assert not np.array_equal(rendered["box"], rendered["nose tip"])  # a side view moves
        np.testing.assert_array_equal(views[i], rendered[truths[i]["centre"]])
