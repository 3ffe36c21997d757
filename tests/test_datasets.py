"""Indexing every layout: exact samples, labels, subjects, and where each decoy went."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from dataset_trees import (bosphorus_tree, bp4d_tree, bu3dfe_tree, bu4dfe_tree, touch, write_bnt,
                           write_wrl)
from facet.data.layouts import EMOTIONS, detect_kind, index_dataset
from facet.data.meshio import check_mesh_file


def names(pairs: list[tuple[str, str]]) -> set[str]:
    return {Path(p).name for p, _ in pairs}


def test_bu3dfe_samples_labels_and_decoys(tmp_path):
    index = index_dataset(bu3dfe_tree(tmp_path), kind="auto")
    assert index.kind == "bu3dfe"
    assert len(index.samples) == 21
    assert all(s.frames[0].endswith("_F3D.wrl") and len(s.frames) == 1 for s in index.samples)
    assert Counter(s.subject for s in index.samples) == {"F0001": 7, "M0002": 7, "F0010": 7}
    assert Counter(s.label for s in index.samples) == {"happiness": 12, "surprise": 6, "neutral": 3}
    assert Counter(s.intensity for s in index.samples) == {0: 3, 1: 3, 2: 3, 3: 6, 4: 6}
    ha02 = next(s for s in index.samples if "M0002_HA02BL" in s.path)
    assert (ha02.sex, ha02.ethnicity, ha02.intensity, ha02.dataset) == ("male", "BL", 2, "bu3dfe")
    assert names(index.skipped) == {"F0001_XX03WH_F3D.wrl", "M0002_AN01BL_F3D.wrl"}
    reasons = Counter(r.split(":")[0] for _, r in index.ignored)
    assert reasons == {"F3D texture/landmarks": 42, "2D image": 21, "raw scan": 3,
                       "name does not follow the BU-3DFE pattern": 1}
    # natural order of subjects: F0001 < F0010 < M0002 (the sort key is stable, not ASCII-only)
    assert [s.subject for s in index.samples[::7]] == ["F0001", "F0010", "M0002"]


def test_strict_raises_listing_every_unusable_file(tmp_path):
    with pytest.raises(ValueError, match="2 unusable") as err:
        index_dataset(bu3dfe_tree(tmp_path), strict=True)
    assert "F0001_XX03WH_F3D.wrl" in str(err.value) and "M0002_AN01BL_F3D.wrl" in str(err.value)


def test_bu4dfe_sequences_naturally_sorted(tmp_path):
    index = index_dataset(bu4dfe_tree(tmp_path))
    assert index.kind == "bu4dfe"
    assert [(s.subject, s.label, len(s.frames)) for s in index.samples] == [
        ("F001", "happiness", 12), ("F001", "sadness", 3), ("M002", "anger", 3)]
    happy = index.samples[0]
    assert [Path(f).stem for f in happy.frames] == [str(i) for i in range(12)]
    assert happy.path == str(tmp_path / "F001" / "Happy") and happy.sex == "female"
    assert names(index.skipped) == {"Bored"}
    assert names(index.ignored) >= {"BU4DFE_BND_V1.1", "readme.txt", "0.jpg"}


def test_bosphorus_emotions_rotations_occlusions_and_aus(tmp_path):
    root = bosphorus_tree(tmp_path)
    index = index_dataset(root)
    assert index.kind == "bosphorus"
    assert sorted((s.subject, s.label) for s in index.samples) == [
        (sub, lab) for sub in ("bs000", "bs001") for lab in ("anger", "happiness", "neutral")]
    assert names(index.skipped) == {"bs001_E_BORED_0.bnt", "bs001_E_FEAR_0.bnt"}
    rules = Counter(r for _, r in index.ignored)
    assert rules["occlusion: not part of the expression protocol"] == 2
    assert rules["head rotation (yaw): not part of the expression protocol"] == 2
    with_au = index_dataset(root, include_au=True)
    aus = [s for s in with_au.samples if s.label is None]
    assert sorted(s.aus for s in aus) == ["LFAU_12", "LFAU_12"]
    assert len(with_au.samples) == 8


def test_bp4d_tasks_map_through_the_table(tmp_path):
    index = index_dataset(bp4d_tree(tmp_path))
    assert index.kind == "bp4d"
    assert [(s.subject, s.label, len(s.frames)) for s in index.samples] == [
        ("F001", "happiness", 3), ("F001", "disgust", 3), ("M002", "anger", 3)]
    assert names(index.skipped) == {"T9"}
    assert any(Path(p).name == "T4" and "embarrassment" in r for p, r in index.ignored)


def test_4dme_clip_layout(tmp_path):
    for subject, cls, clip in (("s01", "positive", "c1"), ("s01", "surprise", "c2"),
                               ("s02", "negative", "c1")):
        for i in range(4):
            write_wrl(tmp_path / subject / cls / clip / f"{i:03d}.wrl")
    write_wrl(tmp_path / "s02" / "boredom" / "c9" / "000.wrl")
    index = index_dataset(tmp_path)
    assert index.kind == "4dme"
    assert [(s.subject, s.label, len(s.frames)) for s in index.samples] == [
        ("s01", "positive", 4), ("s01", "surprise", 4), ("s02", "negative", 4)]
    assert names(index.skipped) == {"boredom"}


def test_4dme_labels_csv_layout_of_the_synthetic_writer(tmp_path):
    rows = ["subject,clip,emotion,kind,sex,age_group,ethnicity,num_frames,onset,apex,offset,aus",
            "S01,S01_C01,repression,micro,female,young,WH,3,0,1,2,17+24",
            "S01,S01_C02,positive,macro,female,young,WH,2,0,1,1,6+12",
            "S02,S02_C01,boredom,micro,male,old,BL,2,0,1,1,4",  # unknown class: skipped
            "S02,S02_C02,others,micro,male,old,BL,5,0,1,1,4"]  # wrong frame count: skipped
    touch(tmp_path / "labels.csv", "\n".join(rows) + "\n")
    for clip, count in (("S01/S01_C01", 3), ("S01/S01_C02", 2), ("S02/S02_C01", 2),
                        ("S02/S02_C02", 2), ("S02/S02_C09", 1)):  # C09: not listed, ignored
        for i in range(count):
            write_wrl(tmp_path / clip / f"{i:03d}.wrl")
            touch(tmp_path / clip / f"{i:03d}.bnd")
    index = index_dataset(tmp_path)
    assert index.kind == "4dme"
    assert [(s.subject, s.label, len(s.frames), s.apex, s.clip_kind, s.aus, s.age_group)
            for s in index.samples] == [("S01", "repression", 3, 1, "micro", "17+24", "young"),
                                        ("S01", "positive", 2, 1, "macro", "6+12", "young")]
    assert names(index.skipped) == {"S02_C01", "S02_C02"}
    assert "S02_C09" in names(index.ignored) and "labels.csv" not in names(index.ignored)


def test_synthetic_bu3dfe_reindexes_exactly(tmp_path):
    from facet.faces.synth import write_bu3dfe

    index = index_dataset(write_bu3dfe(tmp_path / "bu3dfe", subjects=1, seed=0))
    assert (index.kind, len(index.samples), index.skipped) == ("bu3dfe", 25, [])
    assert Counter(s.label for s in index.samples) == {"neutral": 1, **{e: 4 for e in EMOTIONS}}
    assert sorted(s.intensity for s in index.samples) == sorted([0] + [1, 2, 3, 4] * 6)


def test_folder_layout_aliases_scans_and_sequences(tmp_path):
    write_wrl(tmp_path / "Happy" / "ann_01.wrl")
    write_wrl(tmp_path / "happy" / "bob_02.wrl")
    write_wrl(tmp_path / "SA" / "ann_03.wrl")
    write_wrl(tmp_path / "smirk" / "bob_seq" / "000.wrl")
    write_wrl(tmp_path / "smirk" / "bob_seq" / "001.wrl")
    touch(tmp_path / "happy" / "nosubject.wrl", "#VRML V2.0 utf8")
    touch(tmp_path / "happy" / "bob_02.png")
    index = index_dataset(tmp_path, kind="folder")
    assert sorted((s.subject, s.label, len(s.frames)) for s in index.samples) == [
        ("ann", "happiness", 1), ("ann", "sadness", 1), ("bob", "happiness", 1),
        ("bob", "smirk", 2)]
    assert names(index.ignored) == {"nosubject.wrl", "bob_02.png"}


def test_subjects_csv_fills_metadata(tmp_path):
    bu3dfe_tree(tmp_path)
    touch(tmp_path / "subjects.csv", "subject,sex,age_group,ethnicity\nF0001,female,30s,WH\n")
    index = index_dataset(tmp_path)
    f1 = [s for s in index.samples if s.subject == "F0001"]
    assert {s.age_group for s in f1} == {"30s"}
    assert {s.age_group for s in index.samples if s.subject != "F0001"} == {""}
    assert "subjects.csv" not in names(index.ignored)


@pytest.mark.parametrize("name, text, words", [
    ("subjects.csv", "name,sex\nF0001,female\n", "missing column(s) ['subject']"),
    ("subjects.csv", "subject,sex\nF0001,female,extra\n", "data row 1"),
    ("subjects.csv", "subject,sex\nF0001\n", "data row 1"),
    ("subjects.csv", "subject,sex\nF0001,f\xe9male\n".encode("latin-1"), "not a readable CSV"),
    ("labels.csv", "subject,clip\nS01,S01_C01\n", "missing column(s) ['emotion']"),
    ("labels.csv", "subject,clip,emotion\nS01,S01_C01\n", "data row 1"),
])
def test_malformed_metadata_csv_names_the_file_and_row(tmp_path, name, text, words):
    bu3dfe_tree(tmp_path)
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError) as caught:
        index_dataset(tmp_path, kind="4dme" if name == "labels.csv" else "bu3dfe")
    assert str(path) in str(caught.value) and words in str(caught.value), str(caught.value)


def test_check_mesh_file_catches_empty_foreign_and_truncated(tmp_path):
    assert check_mesh_file(write_wrl(tmp_path / "ok.wrl")) is None
    assert check_mesh_file(write_bnt(tmp_path / "ok.bnt")) is None
    touch(tmp_path / "empty.wrl", "")
    assert check_mesh_file(tmp_path / "empty.wrl") == "empty file"
    assert "truncated" in check_mesh_file(write_bnt(tmp_path / "cut.bnt", truncate=True))


def test_bad_roots_and_kinds(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        index_dataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown dataset kind"):
        index_dataset(tmp_path, kind="bu5dfe")
    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match="cannot tell the layout"):
        detect_kind(tmp_path)


def test_4dme_labels_csv_rows_that_cannot_be_samples_are_skipped_with_the_reason(tmp_path):
    """Every bad row is named (not silently dropped): a non-integer apex, an apex past the last
    frame, a second row for a clip (it would count twice), a clip path outside the root."""
    header = "subject,clip,emotion,kind,num_frames,apex"
    rows = ["S01,S01_C01,surprise,micro,2,1",
            "S01,S01_C01,surprise,micro,2,1",  # the same clip again
            "S01,S01_C02,surprise,micro,2,abc",
            "S01,S01_C03,surprise,micro,2,7",  # two frames: apex 0 or 1
            "S01,../../outside,surprise,micro,2,1"]
    touch(tmp_path / "labels.csv", "\n".join([header, *rows]) + "\n")
    for clip in ("S01/S01_C01", "S01/S01_C02", "S01/S01_C03", "outside"):
        for i in range(2):
            write_wrl(tmp_path / clip / f"{i:03d}.wrl")
    index = index_dataset(tmp_path, kind="4dme")
    assert [Path(s.path).name for s in index.samples] == ["S01_C01"]  # once
    reasons = {Path(p).name: r for p, r in index.skipped}
    assert "line 3: a second row for this clip" in reasons["S01_C01"]
    assert "num_frames/apex are not integers" in reasons["S01_C02"]
    assert "apex 7 is not a frame of the 2 found" in reasons["S01_C03"]
    assert "line 6: subject and clip must be folder names" in reasons["outside"]
