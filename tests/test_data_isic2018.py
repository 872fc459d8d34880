"""The dataset registry, the synthetic skin lesions and the ISIC 2018 Task 3 reader (on fixtures in the
official layout, written by the tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medlab import data
from medlab.data.formats.isic2018 import CLASSES, ISIC2018Task3
from medlab.data.synth import skin_lesions


# --- synthetic -------------------------------------------------------------------------------------


def test_synthetic_split_is_deterministic_imbalanced_and_in_range():
    a = data.load("isic2018", "train", n=70, image_size=24)
    b = data.load("isic2018", "train", n=70, image_size=24)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    image, label = a[0]
    assert image.shape == (3, 24, 24) and image.dtype == torch.float32
    assert 0.0 <= float(a.images.min()) and float(a.images.max()) <= 1.0
    counts = np.bincount(a.targets.numpy(), minlength=7)
    assert counts.sum() == 70 and counts.argmax() == CLASSES.index("NV") and counts.min() >= 1
    assert a.info["kind"] == "synthetic" and a.classes == CLASSES


def test_synthetic_splits_differ():
    train = data.load("isic2018", "train", n=30, image_size=16)
    test = data.load("isic2018", "test", n=30, image_size=16)
    assert not torch.equal(train.images, test.images)


def test_class_counts_follow_isic_proportions():
    counts = skin_lesions.class_counts(10015)
    assert counts.tolist() == skin_lesions.ISIC2018_TRAIN_COUNTS.tolist()
    assert skin_lesions.class_counts(20).sum() == 20
    with pytest.raises(ValueError, match="cannot give each of 7 classes"):
        skin_lesions.class_counts(5)


def test_similarity_matrix_is_a_graded_kernel():
    s = skin_lesions.similarity_matrix()
    assert s.shape == (7, 7) and np.allclose(s, s.T) and np.allclose(np.diag(s), 1)
    off = s[np.triu_indices(7, 1)]
    assert off.max() < 1 and off.min() > 0 and off.std() > 0.05  # graded, not all alike
    # closer prototypes are more similar
    d = np.linalg.norm(skin_lesions.PROTOTYPES[:, None] - skin_lesions.PROTOTYPES[None], axis=-1)
    assert np.all(np.diff(off[np.argsort(d[np.triu_indices(7, 1)])]) <= 1e-12)


def _image_features(images: torch.Tensor) -> np.ndarray:
    pooled = torch.nn.functional.adaptive_avg_pool2d(images, 6).flatten(1)
    quantiles = (
        torch.quantile(images.flatten(2), torch.tensor([0.05, 0.5, 0.95]), dim=2).permute(1, 0, 2).flatten(1)
    )
    return torch.cat([pooled, quantiles], 1).numpy()


def test_confusions_between_classes_follow_the_true_similarity():
    """The phenomenon chapter 1 relies on: a classifier confuses similar classes more often."""
    from scipy.stats import spearmanr
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    spec = dict(image_size=24, balanced=True)
    train = skin_lesions.SyntheticSkinLesions(skin_lesions.SkinLesionSpec(n=700, seed=1, **spec))
    test = skin_lesions.SyntheticSkinLesions(skin_lesions.SkinLesionSpec(n=700, seed=2, **spec))
    scaler = StandardScaler().fit(_image_features(train.images))
    model = LogisticRegression(C=0.1, max_iter=2000).fit(
        scaler.transform(_image_features(train.images)), train.targets.numpy()
    )
    probs = model.predict_proba(scaler.transform(_image_features(test.images)))
    y = test.targets.numpy()
    mean_probs = np.stack([probs[y == k].mean(0) for k in range(7)])
    confusion = (mean_probs + mean_probs.T) / 2
    iu = np.triu_indices(7, 1)
    assert spearmanr(confusion[iu], skin_lesions.similarity_matrix()[iu]).statistic > 0.5


def test_unknown_dataset_and_split_are_named():
    with pytest.raises(ValueError, match=r"unknown dataset 'isic2019'; available: .*isic2018"):
        data.load("isic2019", "train")
    with pytest.raises(ValueError, match=r"unknown split 'training'.*train, val, test"):
        data.load("isic2018", "training", n=10)
    with pytest.raises(ValueError, match="needs n"):
        data.load("isic2018", "train")


# --- ISIC 2018 reader ---------------------------------------------------------------------------------


def test_reader_reads_the_official_layout(tmp_path, write_isic):
    ids = write_isic(tmp_path)
    write_isic(tmp_path, "Validation", labels=(3, 4), csv_inside_folder=False)
    train = data.load("isic2018", "train", data_dir=tmp_path, image_size=32)
    assert len(train) == 5 and train.targets.tolist() == [0, 1, 1, 2, 6]
    image, label = train[3]
    assert image.shape == (3, 32, 32) and label == 2 and 0 <= float(image.min()) and float(image.max()) <= 1
    assert [p.stem for p in train.paths] == ids
    assert train.info["kind"] == "real" and train.info["class_counts"] == [1, 2, 1, 0, 0, 0, 1]
    val = data.load("isic2018", "val", data_dir=tmp_path, image_size=16)
    assert val.targets.tolist() == [3, 4]


def test_missing_ground_truth(tmp_path, write_isic):
    write_isic(tmp_path)
    (tmp_path / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv").unlink()
    with pytest.raises(FileNotFoundError, match="no ground truth for the Training part"):
        ISIC2018Task3(tmp_path)


def test_test_part_missing(tmp_path, write_isic):
    write_isic(tmp_path)
    with pytest.raises(FileNotFoundError, match="ISIC2018_Task3_Test_Input"):
        ISIC2018Task3(tmp_path, "test")


def _csv(root: Path) -> Path:
    return root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"


def test_csv_not_one_hot(tmp_path, write_isic):
    write_isic(tmp_path)
    lines = _csv(tmp_path).read_text().splitlines()
    lines[2] = lines[2].replace("0.0", "1.0", 1)  # two ones in a row
    lines[3] = lines[3].replace("1.0", "0.5")
    _csv(tmp_path).write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ValueError, match=r"GroundTruth.csv: each row must be one-hot.*ISIC_0024307, ISIC_0024308"
    ):
        ISIC2018Task3(tmp_path)


def test_csv_wrong_columns(tmp_path, write_isic):
    write_isic(tmp_path)
    text = _csv(tmp_path).read_text().replace("AKIEC", "AK")
    _csv(tmp_path).write_text(text)
    with pytest.raises(ValueError, match=r"has columns .*'AK'.*expected image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"):
        ISIC2018Task3(tmp_path)


def test_csv_lists_an_image_that_is_missing(tmp_path, write_isic):
    ids = write_isic(tmp_path)
    (tmp_path / "ISIC2018_Task3_Training_Input" / f"{ids[1]}.jpg").unlink()
    with pytest.raises(
        FileNotFoundError, match=rf"lists 1 image\(s\) that are not in .*Training_Input: {ids[1]}"
    ):
        ISIC2018Task3(tmp_path)


def test_image_without_label(tmp_path, write_isic):
    write_isic(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "ISIC2018_Task3_Training_Input" / "ISIC_9999999.jpg")
    with pytest.raises(ValueError, match=r"holds 1 image\(s\) that .*does not label: ISIC_9999999"):
        ISIC2018Task3(tmp_path)


def test_duplicate_rows(tmp_path, write_isic):
    write_isic(tmp_path)
    lines = _csv(tmp_path).read_text().splitlines()
    _csv(tmp_path).write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(ValueError, match="more than once: ISIC_0024306"):
        ISIC2018Task3(tmp_path)


def test_unreadable_image_names_its_path(tmp_path, write_isic):
    ids = write_isic(tmp_path)
    bad = tmp_path / "ISIC2018_Task3_Training_Input" / f"{ids[2]}.jpg"
    bad.write_bytes(b"this is not a jpeg")
    dataset = ISIC2018Task3(tmp_path, image_size=16)
    dataset[0]
    with pytest.raises(RuntimeError, match=rf"cannot read image {bad}"):
        dataset[2]


def test_synthetic_only_options_are_refused_for_real_data(tmp_path, write_isic):
    write_isic(tmp_path)
    with pytest.raises(ValueError, match="cannot be set for the real ISIC 2018"):
        data.load("isic2018", "train", data_dir=tmp_path, n=10)
