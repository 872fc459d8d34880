"""The dataset registry: one lazy real-or-synthetic dispatch, its errors, and synthetic splits that are
bit-identical to those the book's published numbers were computed from."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medlab import data
from medlab.data import registry
from medlab.data.splits import split_seed
from medlab.data.synth import brains3d, chest_xrays, fundus, skin_lesions

# sha256 (first 16 hex digits) of every item's dtype, shape and bytes, then of the split's ``info``, as the
# registry produced them before its entries became lazy references (commit 6e77d07).
PUBLISHED = [
    ("isic2018", "train", dict(n=7, image_size=16), "dd997f4a3505c162"),
    ("isic2018", "val", dict(n=8, image_size=16), "286a62de51a8dc5a"),
    ("isic2018", "test", dict(n=7, image_size=20, seed=7, attribute_noise=0.1), "55a7b00fb881fa09"),
    ("chestxray14", "train", dict(n=3, image_size=16), "8a54a5c6ca671e48"),
    ("chestxray14", "unlabeled", dict(n=3, image_size=16), "39fa28f143fc935b"),
    ("chestxray14", "test", dict(n=3, image_size=24, seed=3, prevalence_floor=0.05), "3c108bd2a91ef07e"),
    ("head_ct", "train", dict(n=2, size=16), "c8abe5d9fe448573"),
    ("head_ct", "unlabeled", dict(n=2, size=16, seed=5), "9f9d07dc2a1ed0aa"),
    ("brats", "val", dict(n=2, size=16), "89c8baf12818ed21"),
    ("brats", "test", dict(n=2, size=16, seed=4), "05df891fc91870ea"),
    ("refuge", "train", dict(n=3, image_size=16), "65b7e60537da1680"),
    ("refuge", "val", dict(n=2, image_size=24, seed=9), "6bf0df846eb55c1f"),
    ("drishti_gs", "test", dict(n=3, image_size=16), "eb728b1077c2e96f"),
    ("drishti_gs", "train", dict(n=2, image_size=32, seed=1), "547b0a3c88d2f46a"),
]


def digest(dataset) -> str:
    h = hashlib.sha256()
    for index in range(len(dataset)):
        for part in dataset[index]:
            array = part.numpy() if isinstance(part, torch.Tensor) else np.asarray(part)
            h.update(str(array.dtype).encode())
            h.update(str(array.shape).encode())
            h.update(np.ascontiguousarray(array).tobytes())
    h.update(json.dumps(dataset.info, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("name, split, options, expected", PUBLISHED, ids=lambda v: v if isinstance(v, str) else "")
def test_synthetic_splits_are_bit_identical_to_the_published_ones(name, split, options, expected):
    assert digest(data.load(name, split, **options)) == expected


def test_each_synthetic_entry_is_its_generator_with_the_split_seed():
    """The same check without stored digests: the registry gives what the generator's dataset class gives
    for ``seed * 10 + split offset``."""
    isic = data.load("isic2018", "val", n=7, image_size=16, seed=3)
    spec = skin_lesions.SkinLesionSpec(n=7, image_size=16, seed=31)
    assert torch.equal(isic.images, skin_lesions.SyntheticSkinLesions(spec).images)
    cxr = data.load("chestxray14", "unlabeled", n=2, image_size=16)
    assert torch.equal(cxr.images, chest_xrays.SyntheticChestXrays(chest_xrays.ChestXraySpec(2, 16, 20203)).images)
    drishti = data.load("drishti_gs", "test", n=2, image_size=16)
    spec = fundus.SyntheticFundusSpec(n=2, image_size=16, domain="drishti", seed=20202)
    assert np.array_equal(drishti.images, fundus.SyntheticFundus(spec).images)
    brats = data.load("brats", "train", n=1, size=16, seed=1)
    expected = brains3d.SyntheticBrainTumours(brains3d.SyntheticBrainTumourSpec(n=1, size=16, seed=10))
    assert np.array_equal(brats.volumes, expected.volumes)
    assert [split_seed(2018, s) for s in data.SPLITS] == [20180, 20181, 20182, 20183]


def test_entries_name_their_reader_and_generator_lazily():
    entry = data.entry("refuge")
    assert isinstance(entry, data.Entry) and entry.name == "refuge" and entry.splits == ("train", "val", "test")
    assert entry.real == "medlab.data.formats.refuge:REFUGE"
    assert entry.synthetic == "medlab.data.synth.fundus:refuge_lookalike"
    assert entry.modules == ("medlab.data.formats.refuge", "medlab.data.synth.fundus")
    assert data.entry("head_ct").modules == ("medlab.data.synth.brains3d",)
    assert "private" in data.entry("head_ct").real_unavailable
    for name in data.available():
        for reference in filter(None, (data.entry(name).real, data.entry(name).synthetic)):
            assert callable(registry.resolve(reference))
    with pytest.raises(Exception):
        entry.name = "other"  # frozen
    with pytest.raises(ValueError, match=r"unknown dataset 'isic2019'; available: .*isic2018"):
        data.entry("isic2019")


def test_the_registry_imports_no_reader_or_generator():
    source = Path(registry.__file__).read_text()
    assert "import medlab.data.formats" not in source and "from medlab.data.formats" not in source
    assert "import medlab.data.synth" not in source and "from medlab.data.synth" not in source
    code = (
        "import sys, medlab.data as d; d.available(); d.entry('brats').modules; "
        "print(sorted(m for m in sys.modules if m.startswith(('medlab.data.formats', 'medlab.data.synth'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_register_checks_its_entry():
    with pytest.raises(ValueError, match="registered twice"):
        data.register("isic2018", "again", real=None, synthetic="m:f", real_unavailable="no")
    with pytest.raises(ValueError, match=r"unknown split\(s\) \['dev'\]"):
        registry.Entry("x", "x", ("train", "dev"), None, "m:f", "no")
    with pytest.raises(ValueError, match="not a 'module:attribute' reference"):
        registry.Entry("x", "x", ("train",), "medlab.data.formats.refuge", "m:f")
    with pytest.raises(ValueError, match="say why in real_unavailable"):
        registry.Entry("x", "x", ("train",), None, "m:f")


def test_errors_name_the_dataset_and_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match=r"unknown split 'training' for dataset 'isic2018'.*train, val, test"):
        data.load("isic2018", "training", n=10)
    with pytest.raises(ValueError, match="brain tumour volumes need n"):
        data.load("brats", "train")
    with pytest.raises(
        ValueError,
        match=r"dataset 'refuge': the synthetic generator \(medlab.data.synth.fundus:refuge_lookalike\) does "
        r"not accept option\(s\) 'roi'; it accepts n, image_size, seed, transform",
    ):
        data.load("refuge", "train", n=2, roi="disc")
    with pytest.raises(ValueError, match=r"dataset 'isic2018': the reader .* does not accept option\(s\) 'seed'"):
        data.load("isic2018", "train", data_dir=tmp_path, seed=1)
    with pytest.raises(ValueError, match=r"cannot be set for the real Drishti-GS data"):
        data.load("drishti_gs", "train", data_dir=tmp_path, n=3)
    with pytest.raises(ValueError, match=rf"data_dir='{tmp_path}': the head CT set .* is private"):
        data.load("head_ct", "train", data_dir=tmp_path, n=3)


def test_real_options_reach_the_reader(tmp_path, write_isic):
    write_isic(tmp_path)
    dataset = data.load("isic2018", "train", data_dir=tmp_path, n=None, image_size=8, cache=False)
    assert dataset.item_cache is None and dataset[0][0].shape == (3, 8, 8)
