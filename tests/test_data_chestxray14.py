"""The ChestX-ray14 reader, on tiny fixtures written in the official NIH layout (labels CSV with the
real header and its quirks, the two list files, PNGs in images_NNN/images/ or images/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medlab.data.formats.chestxray14 import FINDINGS, ChestXray14, read_data_entry, read_list

# The real header: the bracketed names hold unquoted commas, and every line of the 2017 file ends in a
# comma, so pandas sees the columns "OriginalImage[Width", "Height]", ... and "Unnamed: 11".
HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
FINDING_TEXTS = (
    "No Finding",
    "Cardiomegaly",
    "Cardiomegaly|Emphysema",
    "Effusion|Mass|Nodule",
    "Hernia",
    "Pleural_Thickening|Infiltration",
    "No Finding",
    "Atelectasis|Pneumothorax|Consolidation|Edema|Fibrosis|Pneumonia",
)
TEST_PATIENTS = (9, 10)


def fixture_rows(n_patients: int = 10) -> list[tuple[str, str, int]]:
    """(image, finding labels, patient) for patients 1..n, 2 or 3 images each."""
    rows = []
    for patient in range(1, n_patients + 1):
        for k in range(2 + patient % 2):
            text = FINDING_TEXTS[len(rows) % len(FINDING_TEXTS)]
            rows.append((f"{patient:08d}_{k:03d}.png", text, patient))
    return rows


def write_csv(path: Path, rows, trailing_comma: bool = True) -> None:
    end = "," if trailing_comma else ""
    lines = [HEADER + end]
    for k, (image, text, patient) in enumerate(rows):
        lines.append(f"{image},{text},{k % 3},{patient},{40 + patient},M,PA,2500,2048,0.143,0.143{end}")
    path.write_text("\n".join(lines) + "\n")


def write_cxr(root: Path, style: str = "nested", n_patients: int = 10) -> list[tuple[str, str, int]]:
    """Write a tiny ChestX-ray14 in the official layout and return its rows.

    ``style``: "nested" (images_001/images/, images_002/images/), "flat" (images_001/, images_002/)
    or "plain" (images/)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = fixture_rows(n_patients)
    write_csv(root / "Data_Entry_2017.csv", rows)
    rng = np.random.default_rng(0)
    for k, (image, _, _) in enumerate(rows):
        archive = f"images_{1 + k % 2:03d}"
        folders = {"nested": root / archive / "images", "flat": root / archive, "plain": root / "images"}
        folder = folders[style]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / image)
    train_val = [image for image, _, patient in rows if patient not in TEST_PATIENTS]
    test = [image for image, _, patient in rows if patient in TEST_PATIENTS]
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    return rows


def multi_hot(text: str) -> list[float]:
    names = text.split("|")
    return [1.0 if finding in names else 0.0 for finding in FINDINGS]


@pytest.fixture(name="cxr")
def _cxr(tmp_path):
    return tmp_path, write_cxr(tmp_path)


def image_of(root: Path, name: str) -> Path:
    return next(root.glob(f"images*/**/{name}"))


# --- reading ---------------------------------------------------------------------------------------


def test_read_data_entry_parses_multi_labels_and_no_finding(cxr):
    root, rows = cxr
    assert pd.read_csv(root / "Data_Entry_2017.csv").columns[-1] == "Unnamed: 11"  # the real file's quirk
    table = read_data_entry(root / "Data_Entry_2017.csv")
    assert list(table.columns) == ["image", "patient", *FINDINGS]
    assert table["image"].tolist() == [image for image, _, _ in rows]
    assert table["patient"].tolist() == [patient for _, _, patient in rows]
    assert table["patient"].dtype == np.int64
    labels = table[list(FINDINGS)].to_numpy()
    assert labels.tolist() == [multi_hot(text) for _, text, _ in rows]
    assert labels[0].sum() == 0 and labels[3].sum() == 3  # "No Finding"; "Effusion|Mass|Nodule"


def test_read_list(tmp_path):
    (tmp_path / "list.txt").write_text("a.png\nb.png\n\n")
    assert read_list(tmp_path / "list.txt") == ["a.png", "b.png"]
    (tmp_path / "twice.txt").write_text("a.png\nb.png\na.png\n")
    with pytest.raises(ValueError, match=r"twice.txt lists these images more than once: a.png"):
        read_list(tmp_path / "twice.txt")


@pytest.mark.parametrize("style", ["nested", "flat", "plain"])
def test_splits_follow_the_official_lists_and_are_patient_disjoint(tmp_path, style):
    rows = write_cxr(tmp_path, style)
    patient_of = {image: patient for image, _, patient in rows}
    train_val = read_list(tmp_path / "train_val_list.txt")
    train = ChestXray14(tmp_path, "train", val_fraction=0.25)
    val = ChestXray14(tmp_path, "val", val_fraction=0.25)
    test = ChestXray14(tmp_path, "test")
    train_names, val_names = [p.name for p in train.paths], [p.name for p in val.paths]
    assert sorted(train_names + val_names) == sorted(train_val)
    assert train_names == [n for n in train_val if n in set(train_names)]  # list order kept
    assert not set(train.patient_ids) & set(val.patient_ids)
    assert len(set(val.patient_ids)) == 2  # round(0.25 * 8 patients)
    assert [patient_of[n] for n in train_names] == train.patient_ids.tolist()
    assert [p.name for p in test.paths] == read_list(tmp_path / "test_list.txt")
    assert set(test.patient_ids) == set(TEST_PATIENTS)


def test_val_is_deterministic_given_split_seed(cxr):
    root, _ = cxr
    draws = [tuple(ChestXray14(root, "val", split_seed=seed, val_fraction=0.25).paths) for seed in range(4)]
    assert draws[0] == tuple(ChestXray14(root, "val", split_seed=0, val_fraction=0.25).paths)
    assert len(set(draws)) > 1  # the seed matters


def test_unlabeled_is_train(cxr):
    root, _ = cxr
    train, unlabeled = ChestXray14(root, "train"), ChestXray14(root, "unlabeled")
    assert unlabeled.paths == train.paths and torch.equal(unlabeled.targets, train.targets)
    assert unlabeled.split == "unlabeled"


def test_items_are_grey_square_tensors_and_multi_hot_labels(cxr):
    root, rows = cxr
    labels = {image: text for image, text, _ in rows}
    train = ChestXray14(root, "train", image_size=24)
    assert train.classes == FINDINGS and train.root == root and train.split == "train"
    assert train.targets.shape == (len(train), 14) and train.targets.dtype == torch.float32
    for index in (0, 3):
        image, target = train[index]
        assert image.shape == (1, 24, 24) and image.dtype == torch.float32
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.std()) > 0
        assert target.dtype == torch.float32 and target.tolist() == multi_hot(labels[train.paths[index].name])
    info = train.info
    assert info["kind"] == "real" and info["split"] == "train" and info["n"] == len(train)
    assert info["image_size"] == 24 and info["path"] == str(root)
    assert info["finding_counts"] == train.targets.sum(0).int().tolist() and len(info["finding_counts"]) == 14
    assert info["n_patients"] == len(set(train.patient_ids.tolist()))


def test_transform_gets_the_float_image_after_the_cache(cxr):
    root, _ = cxr
    plain = ChestXray14(root, "test", image_size=12, cache=False)
    dataset = ChestXray14(root, "test", image_size=12, transform=lambda image: (image.dtype, image * 2))
    (dtype, doubled), _ = dataset[0]
    assert dtype == torch.float32 and torch.equal(doubled, plain[0][0] * 2)


def test_v2020_file_is_used_when_the_2017_file_is_absent(cxr):
    root, rows = cxr
    revised = [(image, "Hernia", patient) for image, _, patient in rows]
    write_csv(root / "Data_Entry_2017_v2020.csv", revised, trailing_comma=False)
    assert ChestXray14(root, "test").info["labels_file"] == "Data_Entry_2017.csv"  # 2017 preferred
    chosen = ChestXray14(root, "test", labels_file="Data_Entry_2017_v2020.csv")
    assert chosen.targets[:, FINDINGS.index("Hernia")].tolist() == [1.0] * len(chosen)
    (root / "Data_Entry_2017.csv").unlink()
    dataset = ChestXray14(root, "test")
    assert dataset.info["labels_file"] == "Data_Entry_2017_v2020.csv"
    assert torch.equal(dataset.targets, chosen.targets)


# --- bad inputs ------------------------------------------------------------------------------------


def test_missing_labels_file(cxr):
    root, _ = cxr
    with pytest.raises(FileNotFoundError, match=rf"labels_file {root / 'other.csv'} does not exist"):
        ChestXray14(root, labels_file="other.csv")


def _edit_csv(root: Path, old: str, new: str, count: int = 1) -> None:
    path = root / "Data_Entry_2017.csv"
    path.write_text(path.read_text().replace(old, new, count))


def test_csv_missing_a_column(cxr):
    root, _ = cxr
    _edit_csv(root, "Patient ID", "PatientID")
    with pytest.raises(
        ValueError,
        match=r"Data_Entry_2017.csv has no column\(s\) \['Patient ID'\].*'PatientID'",
    ):
        ChestXray14(root)


def test_unknown_finding_name(cxr):
    root, _ = cxr
    _edit_csv(root, "00000001_001.png,Cardiomegaly,", "00000001_001.png,Cardiomegaly|Pneumonitis,")
    with pytest.raises(
        ValueError,
        match=r"Data_Entry_2017.csv: unknown finding name\(s\) in 00000001_001.png \('Pneumonitis'\)",
    ):
        ChestXray14(root)


def test_no_finding_combined_with_a_finding(cxr):
    root, _ = cxr
    _edit_csv(root, "00000001_000.png,No Finding,", "00000001_000.png,No Finding|Mass,")
    with pytest.raises(
        ValueError,
        match=r"'No Finding' is combined with a finding in 00000001_000.png \('No Finding\|Mass'\)",
    ):
        ChestXray14(root)


def test_non_integer_patient_id(cxr):
    root, _ = cxr
    row = "00000002_000.png,Effusion|Mass|Nodule,0,"
    _edit_csv(root, row + "2,", row + "x2,")
    with pytest.raises(ValueError, match=r"no integer Patient ID: 00000002_000.png \('x2'\)"):
        ChestXray14(root)


def test_duplicated_rows(cxr):
    root, _ = cxr
    path = root / "Data_Entry_2017.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [lines[2]]) + "\n")
    with pytest.raises(
        ValueError,
        match=r"Data_Entry_2017.csv lists these images more than once: 00000001_001.png",
    ):
        ChestXray14(root)


def test_list_file_missing(cxr):
    root, _ = cxr
    (root / "test_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match=rf"split list {root / 'test_list.txt'} does not exist"):
        ChestXray14(root)


def test_listed_image_not_labelled(cxr):
    root, _ = cxr
    with open(root / "test_list.txt", "a") as handle:
        handle.write("00000099_000.png\n")
    with pytest.raises(
        ValueError,
        match=r"test_list.txt names 1 image\(s\) that .*Data_Entry_2017.csv does not label: 00000099_000",
    ):
        ChestXray14(root)


def test_listed_image_not_on_disk(cxr):
    root, _ = cxr
    image_of(root, "00000003_002.png").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"train_val_list.txt names 1 image\(s\) that are not on disk.*: 00000003_002.png",
    ):
        ChestXray14(root)


def test_image_on_disk_in_no_list(cxr):
    root, _ = cxr
    lines = (root / "train_val_list.txt").read_text().splitlines()
    (root / "train_val_list.txt").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(
        ValueError,
        match=r"1 image\(s\) on disk .* are in neither train_val_list.txt nor test_list.txt: 00000001_000",
    ):
        ChestXray14(root)


def test_image_in_two_folders(cxr):
    root, _ = cxr
    source = image_of(root, "00000001_000.png")
    other = root / "images_003" / "images"
    other.mkdir(parents=True)
    (other / source.name).write_bytes(source.read_bytes())
    with pytest.raises(
        ValueError,
        match=r"in two folders under .*: 00000001_000.png \(.*images_001.*images_003",
    ):
        ChestXray14(root)


def test_image_in_both_lists(cxr):
    root, _ = cxr
    with open(root / "test_list.txt", "a") as handle:
        handle.write("00000001_000.png\n")
    with pytest.raises(
        ValueError,
        match=r"1 image\(s\) are in both .*train_val_list.txt and .*test_list.txt: 00000001_000.png",
    ):
        ChestXray14(root)


def test_patient_in_both_lists(cxr):
    root, _ = cxr
    train_val = read_list(root / "train_val_list.txt")
    moved = [name for name in train_val if name.startswith("00000004_")][0]
    (root / "train_val_list.txt").write_text("\n".join(n for n in train_val if n != moved) + "\n")
    with open(root / "test_list.txt", "a") as handle:
        handle.write(moved + "\n")
    with pytest.raises(
        ValueError,
        match=r"1 patient\(s\) have images in both .*train_val_list.txt.*by patient\): 4",
    ):
        ChestXray14(root)


@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_unreadable_image_names_its_path(cxr, content):
    root, _ = cxr
    dataset = ChestXray14(root, "test", image_size=16)
    bad = dataset.paths[1]
    data = bad.read_bytes()
    bad.write_bytes(b"this is not a png" if content == "garbage" else data[: len(data) // 2])
    dataset[0]
    with pytest.raises(RuntimeError, match=rf"cannot read image {bad}"):
        dataset[1]


def test_unknown_split(cxr):
    root, _ = cxr
    with pytest.raises(
        ValueError,
        match=r"unknown split 'training'; expected one of train, val, test, unlabeled",
    ):
        ChestXray14(root, "training")


@pytest.mark.parametrize("fraction", [0, 0.0, 1, 1.5, -0.1])
def test_bad_val_fraction(cxr, fraction):
    root, _ = cxr
    with pytest.raises(ValueError, match=rf"val_fraction must be between 0 and 1 .*got {fraction}"):
        ChestXray14(root, val_fraction=fraction)
