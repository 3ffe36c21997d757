"""View cache and torch Dataset: render once, re-render exactly what changed, sample 4D frames."""
from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dataset_trees import bu3dfe_tree, bu4dfe_tree, touch, write_wrl
from facet import reports
from facet.data.datasets import (FaceViewsDataset, model_input, sample_frames,
                                 with_neutral_references)
from facet.data.layouts import index_dataset
from facet.data.view_cache import (CACHE_FORMAT, ICP_STEPS, ViewCache, align_to, render_frames,
                                   settings_key)
from facet.mesh import Mesh
from facet.render import TRAINING_RENDER, RenderSettings, render_views

SMALL = RenderSettings(views=((-20.0, 0.0), (0.0, 0.0), (20.0, 0.0)), image_size=16)


def entry_times(cache, samples) -> list[int]:
    """When each sample's entry was last written (an entry that is re-rendered is rewritten)."""
    return [cache.entry(s).stat().st_mtime_ns for s in samples]


def sequence_root(tmp_path, bumps=(0, 1, 2, 5, 3, 1, 0)):
    """One BU-4DFE-style sequence whose displacement from frame 0 peaks at argmax(bumps)."""
    for i, bump in enumerate(bumps):
        write_wrl(tmp_path / "F001" / "Happy" / f"{i:03d}.wrl", bump=float(bump))
    return index_dataset(tmp_path).samples


def test_second_fill_renders_nothing(tmp_path):
    samples = index_dataset(bu4dfe_tree(tmp_path / "data")).samples  # 3 sequences, 18 frames
    cache = ViewCache(tmp_path / "cache", SMALL)
    report = cache.fill(samples, workers=1, progress=False)
    assert (report.rendered, report.reused, report.failed) == (3, 0, [])
    assert [cache.metadata(s)["shape"][0] for s in samples] == [len(s.frames) for s in samples]
    views = cache.load(samples[0])
    assert views.dtype == np.uint8 and views.shape[0] == 12 and views.shape[1:2] == (3,)
    assert views.shape[2] in (1, 3) and views.shape[3:] == (16, 16)
    written = entry_times(cache, samples)
    again = ViewCache(tmp_path / "cache", SMALL).fill(samples, workers=1, progress=False)
    assert (again.rendered, again.reused) == (0, 3) and entry_times(cache, samples) == written


def test_relative_and_absolute_roots_share_entries(tmp_path, monkeypatch):
    """`render_views.py data --cache` (relative) must fill the cache that training (absolute)
    reads."""
    bu4dfe_tree(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    relative = index_dataset("data").samples
    cache = ViewCache(tmp_path / "cache", SMALL)
    cache.fill(relative, workers=1, progress=False)
    absolute = index_dataset(tmp_path / "data").samples
    written = entry_times(cache, absolute)
    again = ViewCache(tmp_path / "cache", SMALL).fill(absolute, workers=1, progress=False)
    assert (again.rendered, again.reused) == (0, 3) and entry_times(cache, absolute) == written


def test_changed_setting_corrupt_entry_or_touched_mesh_rerender(tmp_path):
    samples = index_dataset(bu4dfe_tree(tmp_path / "data")).samples
    cache = ViewCache(tmp_path / "cache", SMALL)
    cache.fill(samples, workers=1, progress=False)
    bigger = ViewCache(tmp_path / "cache", RenderSettings(image_size=24))
    assert bigger.folder != cache.folder
    assert bigger.fill(samples, workers=1, progress=False).rendered == 3
    assert bigger.load(samples[2]).shape[-2:] == (24, 24)

    sad, angry = samples[1], samples[2]
    npy = cache.entry(sad)
    npy.write_bytes(npy.read_bytes()[:-7])  # truncated array
    data = bytearray(cache.entry(angry).read_bytes())
    data[-1] ^= 0xFF  # one flipped pixel: only the CRC notices
    cache.entry(angry).write_bytes(bytes(data))
    assert cache.fill(samples, workers=1, progress=False).rendered == 2

    write_wrl(Path(sad.frames[1]), bump=2.0)  # rewritten mesh: new mtime_ns and size
    report = cache.fill(samples, workers=1, progress=False)
    assert (report.rendered, report.reused) == (1, 2)


def test_corrupt_mesh_is_reported_not_fatal_and_strict_raises(tmp_path):
    write_wrl(tmp_path / "data" / "happy" / "ann_1.wrl")
    touch(tmp_path / "data" / "happy" / "bob_1.wrl",
          "#VRML V2.0 utf8\nShape { geometry IndexedFaceSet {")
    samples = index_dataset(tmp_path / "data", kind="folder").samples
    assert len(samples) == 2  # the header looks fine: only loading can tell
    cache = ViewCache(tmp_path / "cache", SMALL)
    report = cache.fill(samples, workers=1, progress=False)
    assert report.rendered == 1 and [p.split("/")[-1] for p, _ in report.failed] == ["bob_1.wrl"]
    assert not cache.entry(samples[1]).exists()
    with pytest.raises(ValueError, match="bob_1.wrl"):
        cache.fill(samples, workers=1, progress=False, strict=True)


def test_apex_from_displacement_and_dataset_sampling(tmp_path):
    samples = sequence_root(tmp_path / "data")
    cache = ViewCache(tmp_path / "cache", SMALL)
    cache.fill(samples, workers=1, progress=False)
    meta = cache.metadata(samples[0])
    assert meta["apex"] == 3 and meta["displacement"][0] == 0.0
    assert np.argsort(meta["displacement"]).tolist()[-3:] == [2, 4, 3]  # bumps 2 < 3 < 5

    apex = FaceViewsDataset(samples, cache, frames=3, sampling="apex")
    views, label, info = apex[0]
    assert views.shape == (3, 3, 3, 16, 16) and views.dtype == torch.float32
    assert 0 <= float(views.min()) and float(views.max()) <= 1
    expected = torch.from_numpy(cache.load(samples[0], [2, 3, 4])).float() / 255  # (3, V, C, H, W)
    assert torch.equal(views, expected.expand_as(views))  # frames 2, 3, 4 around the apex
    assert (label, info["subject"], info["intensity"], info["sex"]) == (0, "F001", -1, "female")

    train = FaceViewsDataset(samples, cache, frames=3, sampling="apex", train=True, seed=1)
    first = train[0][0]
    assert torch.equal(first, train[0][0])  # same seed, epoch, index: same frames

    # the pair an onset picture compares: the first frame and the apex frame, as cached
    pair = apex.onset_and_apex(0)
    cached = torch.from_numpy(cache.load(samples[0], [0, 3])).float() / 255
    assert torch.equal(pair, cached.expand_as(pair))
    onset = FaceViewsDataset(samples, cache, frames=3, sampling="apex", onset="magnified",
                             magnify=2.0)
    torch.testing.assert_close(onset.apex_input(0),
                               (pair[0] + 2 * (pair[1] - pair[0])).clamp(0, 1))
    assert torch.equal(apex.apex_input(0), pair[1])  # no onset reference: the apex frame itself
    picture = reports.plot_onset_change([pair], [onset.apex_input(0)], ["happiness"],
                                        tmp_path / "onset.png", "onset + 2 x change")
    assert picture.stat().st_size > 0


def test_sample_frames():
    assert sample_frames(7, 4).tolist() == [0, 2, 4, 6]
    assert sample_frames(1, 3).tolist() == [0, 0, 0]
    assert sample_frames(10, 3, "apex", apex=9).tolist() == [7, 8, 9]
    assert sample_frames(10, 3, "apex", apex=0).tolist() == [0, 1, 2]
    assert sample_frames(2, 4, "apex", apex=1).tolist() == [0, 1, 1, 1]
    rng = np.random.default_rng(0)
    for _ in range(50):
        uniform = sample_frames(20, 4, rng=rng)  # one frame from each 5-frame segment
        assert ((uniform // 5) == np.arange(4)).all()
        window = sample_frames(20, 4, "apex", apex=10, rng=rng)
        assert (np.diff(window) == 1).all() and 6 <= window[0] <= 10
    with pytest.raises(ValueError, match="unknown frame sampling"):
        sample_frames(5, 2, "peak")


def test_dataloader_with_workers_and_fill_with_two_processes(tmp_path):
    samples = index_dataset(bu4dfe_tree(tmp_path / "data")).samples
    cache = ViewCache(tmp_path / "cache", SMALL)
    report = cache.fill(samples, workers=2, progress=False)
    assert (report.rendered, report.failed) == (3, [])
    dataset = FaceViewsDataset(samples, cache, frames=2, train=True)
    assert dataset.classes == ("anger", "happiness", "sadness")
    loader = DataLoader(dataset, batch_size=2, num_workers=2)
    batches = list(loader)
    views, labels, meta = batches[0]
    assert views.shape == (2, 2, 3, 3, 16, 16) and labels.tolist() == [1, 2]
    assert meta["subject"] == ["F001", "F001"] and meta["intensity"].tolist() == [-1, -1]
    assert sum(len(b[1]) for b in batches) == 3
    clone = pickle.loads(pickle.dumps(dataset))  # spawn-started workers receive a pickled copy
    assert torch.equal(clone[1][0], dataset[1][0])


def test_dataset_rejects_unknown_labels_and_uncached_samples(tmp_path):
    samples = sequence_root(tmp_path / "data")
    cache = ViewCache(tmp_path / "cache", SMALL)
    with pytest.raises(FileNotFoundError, match="not in the view cache"):
        FaceViewsDataset(samples, cache)
    cache.fill(samples, workers=1, progress=False)
    with pytest.raises(ValueError, match="not in classes"):
        FaceViewsDataset(samples, cache, classes=("anger",))


def test_grey_renders_stored_with_one_channel_colour_with_three(tmp_path):
    write_wrl(tmp_path / "data" / "happy" / "ann_1.wrl")
    samples = index_dataset(tmp_path / "data", kind="folder").samples
    for mode, channels in (("shaded", 1), ("normals", 3)):  # grey light vs coloured normals
        cache = ViewCache(tmp_path / f"cache{channels}", replace(SMALL, mode=mode))
        cache.fill(samples, workers=1, progress=False)
        assert cache.load(samples[0]).shape == (1, 3, channels, 16, 16)
        views, _, _ = FaceViewsDataset(samples, cache)[0]
        assert views.shape == (1, 3, 3, 16, 16)
        if channels == 1:  # grey: the three returned channels are the one stored
            assert torch.equal(views[:, :, 0], views[:, :, 2])


def test_settings_key_is_canonical_and_fill_cache_cli(tmp_path):
    from facet.data.view_cache import fill_cache_cli

    assert settings_key(RenderSettings(views=[[0, 0]])) == \
        settings_key(RenderSettings(views=((0.0, 0.0),)))
    assert settings_key(RenderSettings(mode="depth")) != settings_key(RenderSettings())
    with pytest.raises(ValueError, match="image_size"):
        RenderSettings(image_size=0)
    bu4dfe_tree(tmp_path / "data")
    report, text = fill_cache_cli(tmp_path / "data", settings=SMALL, cache_root=tmp_path / "c",
                                  workers=1, progress=False)
    assert (report.rendered, report.failed) == (3, [])
    assert "3 rendered, 0 reused, 0 failed" in text and "skipped" in text  # the Bored folder
    assert len(list(ViewCache(tmp_path / "c", SMALL).folder.glob("*.npy"))) == 3


def test_view_statistics_matches_the_stacked_oracle():
    from facet.data.datasets import view_statistics

    items = [(torch.rand(2, 3, 3, 8, 8), 0, {}) for _ in range(5)]  # 5 samples, T=2, V=3
    mean, std = view_statistics(items)
    stacked = torch.cat([views for views, _, _ in items])  # (10, 3, 3, 8, 8)
    torch.testing.assert_close(mean, stacked.mean(0))
    assert std == pytest.approx(float((stacked - stacked.mean(0)).pow(2).mean().sqrt()), rel=1e-5)


@pytest.mark.parametrize("damage", ["truncated", "not json", "wrong crc", "missing"])
def test_a_corrupt_sidecar_makes_its_entry_render_again(tmp_path, damage):
    samples = index_dataset(bu4dfe_tree(tmp_path / "data")).samples
    cache = ViewCache(tmp_path / "cache", SMALL)
    cache.fill(samples, workers=1, progress=False)
    sidecar = cache.entry(samples[0]).with_suffix(".json")
    text = sidecar.read_text()
    if damage == "truncated":
        sidecar.write_text(text[: len(text) // 2])
    elif damage == "not json":
        sidecar.write_bytes(b"\xff\xfe garbage")
    elif damage == "wrong crc":
        sidecar.write_text(text.replace('"crc32": ', '"crc32": 1'))
    else:
        sidecar.unlink()
    report = cache.fill(samples, workers=1, progress=False)
    assert (report.rendered, report.reused, report.failed) == (1, 2, [])
    assert cache.is_valid(samples[0])


def _displacement(verts, first, icp_steps=ICP_STEPS):
    return align_to(verts, first, icp_steps)[1]


def test_alignment_takes_out_the_heads_rigid_motion():
    """A face turned and shifted but not deformed aligns back onto the first frame (the oracle:
    the unmoved copy) and has not moved, with or without vertex correspondence (raw scans:
    another sampling of the surface); a deformation still counts."""
    y, x = np.mgrid[-60:60:60j, -50:50:50j]  # mm, a face-sized height field
    first = np.stack([x, y, 40 * np.exp(-(x / 45) ** 2 - (y / 55) ** 2)], -1).reshape(-1, 3)
    angle = np.radians(8.0)
    turn = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                     [-np.sin(angle), 0, np.cos(angle)]])
    moved = first @ turn.T + [3.0, -2.0, 5.0]  # the head turned by 8 degrees and shifted
    assert np.linalg.norm(moved - first, axis=1).mean() > 5  # what the old measure reported
    aligned, distance = align_to(moved, first)
    np.testing.assert_allclose(aligned, first, atol=1e-4)  # float32 output, mm
    assert distance < 1e-9
    resampled = moved[::2]  # another vertex count: ICP on nearest neighbours
    still = _displacement(first[::2], first)  # the same sampling without motion: 0.9 mm
    unfitted = _displacement(resampled, first, icp_steps=0)  # nearest neighbours alone: 4.6 mm
    # ICP leaves ~0.5 mm: the turned surface's rim has no counterpart (partial overlap)
    assert _displacement(resampled, first) < min(still + 0.6, unfitted / 3)
    bumped = first.copy()
    bumped[1200:1500, 2] += 10.0  # a tenth of the surface pushed out by 10 mm
    assert _displacement(bumped, first) > 0.5
    assert _displacement(bumped @ turn.T + [3.0, -2.0, 5.0], first) > 0.5


def test_a_sequence_that_only_moves_the_head_renders_unchanged():
    """Frames are aligned to the first and normalised as it is: a neutral face whose head
    turns and drifts renders (almost) the same views in every frame, so its onset difference
    is ~0 -- without the alignment the frames differ by the pose (the check fails)."""
    from facet.faces.scanner import demo_face

    face = demo_face("neutral", seed=1)
    frames = []
    for degrees, shift in ((0, 0), (6, 4.0), (-9, -7.0)):
        a = np.radians(degrees)
        turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        frames.append(replace(face, verts=(face.verts @ turn.T + shift).astype(np.float32)))
    pixels, displacement = render_frames(frames, RenderSettings(image_size=48))
    assert displacement.max() < 1e-3  # mm: the face did not move
    change = np.abs(pixels[1:].astype(int) - pixels[:1].astype(int))  # (T-1, V, C, H, W)
    assert change.mean() < 0.5 and (change > 8).mean() < 0.005  # rounding at silhouette edges
    unaligned = [render_views(f, RenderSettings().views, 48, "normals") for f in frames]
    assert (unaligned[1] - unaligned[0]).abs().mean() * 255 > 5 * change.mean() + 1
    # the ablation renders the frames as scanned: the pose change is back, the displacement
    # (which picks the apex) is still the aligned one, and the setting has a cache folder of its own
    settings = RenderSettings(image_size=48, align_frames=False)
    as_scanned, same_displacement = render_frames(frames, settings)
    np.testing.assert_array_equal(same_displacement, displacement)
    assert np.array_equal(as_scanned[0], pixels[0])
    scanned_change = np.abs(as_scanned[1:].astype(int) - as_scanned[:1].astype(int)).mean()
    assert scanned_change > 5 * change.mean() + 1
    assert settings_key(settings) != settings_key(RenderSettings(image_size=48))
    with pytest.raises(ValueError, match="needs align_frames"):
        replace(settings, apex_motion=1.0)  # it would magnify the head's turn


def test_apex_of_built_in_sequences_lies_in_their_annotated_peak(tmp_path):
    """Built-in BU-4DFE sequences move the head; the estimated apex (argmax of displacement)
    must still fall between the annotated onset and offset of the expression."""
    import json

    from facet.faces import synth

    root = synth.write_bu4dfe(tmp_path / "bu4dfe", subjects=1, seed=0, seconds=(0.8, 1.0))
    truth = {row["folder"]: row for row in map(json.loads, (root / "ground_truth.jsonl")
                                               .read_text().splitlines())}
    samples = index_dataset(root).samples
    cache = ViewCache(tmp_path / "cache", replace(SMALL, image_size=8))
    cache.fill(samples, workers=1, progress=False)
    for sample in samples:
        row = truth[str(Path(sample.path).relative_to(root))]
        apex = cache.metadata(sample)["apex"]
        assert row["onset"] <= apex <= row["offset"], (row["folder"], apex, row)


def test_expressive_sampling_never_evaluates_on_the_neutral_ends():
    """Evaluation takes the T most moved frames (the apex region) in time order; training draws
    among the frames that move at least half as much as the apex; neither takes the neutral
    onset or offset of a rise-and-fall sequence."""
    moved = np.array([0, 0.1, 0.4, 0.8, 1.0, 0.9, 0.6, 0.3, 0.1, 0])  # onset .. apex .. offset
    assert sample_frames(10, 3, "expressive", displacement=moved).tolist() == [3, 4, 5]
    rng = np.random.default_rng(0)
    for _ in range(50):
        picks = sample_frames(10, 4, "expressive", rng=rng, displacement=moved)
        assert set(picks) <= {3, 4, 5, 6} and list(picks) == sorted(picks)
    assert sample_frames(3, 4, "expressive", displacement=[0, 1, 0.2]).tolist() == [0, 1, 1, 2]
    with pytest.raises(ValueError, match="displacement"):
        sample_frames(10, 3, "expressive")


def test_onset_inputs_are_the_change_from_the_first_frame():
    """model_input: the frames / 255; with an onset reference (row 0) 0.5 + alpha (x_t - x_0)
    or x_0 + alpha (x_t - x_0), clipped to [0, 1] -- computed here by hand."""
    pixels = torch.tensor([[[[[100, 200]]]], [[[[110, 180]]]], [[[[100, 255]]]]],
                          dtype=torch.uint8)  # (T'=3, V=1, C=1, H=1, W=2)
    plain = model_input(pixels)
    assert plain.shape == (3, 1, 3, 1, 2)
    torch.testing.assert_close(plain[:, 0, 0, 0], pixels[:, 0, 0, 0].float() / 255)
    x0, xt = pixels[0, 0, 0, 0].float() / 255, pixels[1:, 0, 0, 0].float() / 255  # (2,), (2, 2)
    difference = model_input(pixels, "difference", 2.0)
    assert difference.shape == (2, 1, 3, 1, 2)
    torch.testing.assert_close(difference[:, 0, 1, 0], (0.5 + 2 * (xt - x0)).clamp(0, 1))
    magnified = model_input(pixels, "magnified", 3.0)
    torch.testing.assert_close(magnified[:, 0, 2, 0], (x0 + 3 * (xt - x0)).clamp(0, 1))
    assert torch.equal(model_input(pixels[[0, 0]], "difference")[0], torch.full((1, 3, 1, 2), 0.5))


def test_onset_common_keeps_the_change_where_both_frames_show_the_face():
    """--onset_common: a pixel that the first frame or frame t leaves as background (white in
    every channel: a border or hole of one scan only) does not change; elsewhere the change is
    the plain one. Three pixels: both frames' face, the later frame's only, the first's only."""
    first = [[[[90, 255, 255]], [[40, 255, 255]], [[50, 255, 30]]]]  # (V=1, C=3, H=1, W=3)
    later = [[[[99, 80, 255]], [[60, 255, 255]], [[20, 255, 255]]]]  # face: a channel not white
    pixels = torch.tensor([first, later], dtype=torch.uint8)  # (T'=2, V=1, C=3, H=1, W=3)
    plain = model_input(pixels, "difference", 2.0)  # (T=1, V=1, C=3, H=1, W=3)
    common = model_input(pixels, "difference", 2.0, common=True)
    torch.testing.assert_close(common[..., 0], plain[..., 0])  # both frames: the same change
    assert not torch.equal(plain[..., 1:], torch.full_like(plain[..., 1:], 0.5))
    assert torch.equal(common[..., 1:], torch.full_like(common[..., 1:], 0.5))  # no change
    magnified = model_input(pixels, "magnified", 3.0, common=True)
    torch.testing.assert_close(magnified[0, 0, :, 0, 1], pixels[0, 0, :, 0, 1].float() / 255)


def test_change_rms_normalises_the_largest_change():
    """--change_rms: alpha = target / RMS of the most changed frame, computed by hand; a faint
    and a broad copy of the same change come out the same; a change below half an 8-bit level
    is not blown up."""
    pixels = torch.tensor([[[[[100, 100]]]], [[[[104, 100]]]], [[[[100, 92]]]]],
                          dtype=torch.uint8)  # (T'=3, V=1, C=1, H=1, W=2)
    change = (pixels[1:, 0, 0, 0].float() - 100) / 255  # (2, 2): RMS 4/255/sqrt2, 8/255/sqrt2
    alpha = 0.2 / (8 / 255 / 2 ** 0.5)  # frame 2 is the most changed
    got = model_input(pixels, "difference", magnify=7.0, change_rms=0.2)  # magnify is ignored
    torch.testing.assert_close(got[:, 0, 0, 0], (0.5 + alpha * change).clamp(0, 1))
    broad = 100 + 5 * (pixels.long() - 100)  # the same change five times as large
    torch.testing.assert_close(model_input(broad.to(torch.uint8), "difference", change_rms=0.2),
                               got)
    still = torch.tensor([[[[[100, 100]]]], [[[[100, 100]]]]], dtype=torch.uint8)
    assert torch.equal(model_input(still, "magnified", change_rms=0.2)[0, 0, 0],
                       torch.full((1, 2), 100 / 255))


def test_magnify_motion_scales_the_motion_since_the_first_frame():
    """Oracle by construction: with correspondence every vertex ends at x_0 + g (x_t - x_0);
    without it (another sampling of the same surface) a sheet lifted by d along its normal ends
    lifted by g d, its points' sliding kept."""
    from facet.data.view_cache import magnify_motion

    grid = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0)), -1).reshape(-1, 2)  # (25, 2)
    corner = np.array([r * 5 + c for r in range(4) for c in range(4)])  # (16,) lower left
    faces = np.concatenate([np.stack([corner, corner + 1, corner + 5], 1),
                            np.stack([corner + 1, corner + 6, corner + 5], 1)])  # (32, 3)
    sheet = Mesh(np.column_stack([grid, np.zeros(25)]).astype(np.float32), faces)  # z = 0
    moved = sheet.verts + np.random.default_rng(0).normal(0, 0.1, (25, 3)).astype(np.float32)
    np.testing.assert_allclose(magnify_motion(sheet, replace(sheet, verts=moved), 3.0),
                               sheet.verts + 3 * (moved - sheet.verts), atol=1e-6)
    dense = np.stack(np.meshgrid(np.linspace(1, 3, 7), np.linspace(1, 3, 7)), -1).reshape(-1, 2)
    lifted = np.column_stack([dense, np.full(49, 0.2)]).astype(np.float32)  # (49, 3) resampled
    dense_faces = np.array([[r * 7 + c, r * 7 + c + 1, r * 7 + c + 7] for r in range(6)
                            for c in range(6)])  # (36, 3): a sampling of its own
    out = magnify_motion(sheet, Mesh(lifted, dense_faces), 3.0)
    np.testing.assert_allclose(out[:, :2], dense, atol=1e-6)  # sliding / sampling kept
    np.testing.assert_allclose(out[:, 2], 0.6, atol=1e-5)  # the lift, three times


def test_apex_motion_renders_every_sequence_at_one_motion_size():
    """With apex_motion the apex frame of a faint and a broad copy of one sequence renders the
    same; frame 0 is the scan itself; the displacement is the scanned one; a still sequence is
    left as it is; the setting is part of the cache key (and 0 keeps the old key)."""
    from facet.faces.scanner import demo_face

    face = demo_face("neutral", seed=1)  # mm
    centre = face.verts.mean(axis=0)
    bump = np.zeros_like(face.verts)  # a 1 mm swelling of the cheeks' middle, 20 mm wide
    bump[:, 2] = np.exp(-((face.verts[:, :2] - centre[:2]) ** 2).sum(axis=1) / 20 ** 2)
    frames = lambda size: [face] + [replace(face, verts=face.verts + s * size * bump)
                                    for s in (0.5, 1.0)]
    settings = replace(SMALL, apex_motion=2.0)
    faint_pixels, faint_moved = render_frames(frames(0.3), settings)
    broad_pixels, broad_moved = render_frames(frames(3.0), settings)
    assert np.array_equal(faint_pixels[0], render_frames([face], SMALL)[0][0])
    np.testing.assert_allclose(broad_moved, 10 * faint_moved, rtol=1e-3)  # as scanned
    # one size of motion: the same pixels up to a level of rounding here and there
    assert np.abs(faint_pixels.astype(int) - broad_pixels.astype(int)).max() <= 1
    assert not np.array_equal(faint_pixels, render_frames(frames(0.3), SMALL)[0])  # magnified
    still, _ = render_frames([face, face], settings)
    assert np.array_equal(still[1], still[0])
    assert settings_key(settings) != settings_key(SMALL)
    assert settings_key(replace(SMALL, apex_motion=0.0)) == settings_key(SMALL)
    # the default is hashed as if apex_motion did not exist (so that folders made before it
    # existed stay valid within a cache format): the hash worked out by hand
    fields = {"views": [list(v) for v in TRAINING_RENDER.views], "image_size": 64,
              "mode": "normals", "distance": TRAINING_RENDER.distance,
              "fov_y": TRAINING_RENDER.fov_y, "format": CACHE_FORMAT}
    by_hand = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
    assert settings_key(TRAINING_RENDER) == by_hand


def test_a_static_scan_is_compared_with_its_persons_neutral_scan(tmp_path):
    """With an onset reference a static scan's entry is (neutral scan, scan aligned to it), and
    the item is their change (the oracle: the pair rendered by hand); a scan that equals its
    neutral shows none; a person without a neutral scan is named."""
    root = bu3dfe_tree(tmp_path / "bu3dfe")  # every mesh the same dome
    for decoy in root.glob("*/*.bnd"):  # the tree's landmark files are decoys: unreadable
        decoy.unlink()
    write_wrl(root / "F0001" / "F0001_HA04WH_F3D.wrl", bump=0.4)  # but this one smiles
    index = index_dataset(root)
    samples = with_neutral_references([s for s in index.samples if s.intensity == 4],
                                      index.samples)
    assert {Path(s.reference).name for s in samples} == {
        "F0001_NE00WH_F3D.wrl", "M0002_NE00BL_F3D.wrl", "F0010_NE00AE_F3D.wrl"}
    cache = ViewCache(tmp_path / "cache", SMALL)
    assert not cache.fill(samples, workers=1, progress=False).failed
    data = FaceViewsDataset(samples, cache, frames=2, onset="difference")
    smiling = next(i for i, s in enumerate(samples) if s.path.endswith("F0001_HA04WH_F3D.wrl"))
    views, _, _ = data[smiling]
    pixels, _ = render_frames([samples[smiling].reference, samples[smiling].path], SMALL)
    expected = model_input(torch.from_numpy(pixels[[0, 1, 1]]), "difference")  # scan twice
    assert views.shape[0] == 2 and torch.equal(views, expected)
    assert (views - 0.5).abs().max() > 0.1  # the smile shows
    same = next(i for i, s in enumerate(samples) if s.subject == "M0002")
    assert torch.equal(data[same][0], torch.full_like(views, 0.5))  # no change: exactly grey
    (root / "M0002" / "M0002_NE00BL_F3D.wrl").unlink()
    index = index_dataset(root)
    with pytest.raises(ValueError, match="1 people have none: M0002"):
        with_neutral_references(index.samples, index.samples)
