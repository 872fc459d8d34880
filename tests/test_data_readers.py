"""What every reader shares: the ``data_dir`` checks, and the on-disk item cache of the 2D readers
(ISIC 2018, ChestX-ray14, REFUGE, Drishti-GS1), on the fixtures the reader tests write."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import Image
from test_data_chestxray14 import write_cxr
from test_data_drishti_gs import write_drishti
from test_data_refuge import write_refuge
from torch.utils.data import DataLoader

from medlab.data.formats.brats import BraTS
from medlab.data.formats.cache import ItemCache, default_cache_dir
from medlab.data.formats.chestxray14 import ChestXray14
from medlab.data.formats.drishti_gs import DrishtiGS
from medlab.data.formats.isic2018 import ISIC2018Task3, default_transform, write_fixture
from medlab.data.formats.refuge import REFUGE

READERS = {"isic2018": ISIC2018Task3, "chestxray14": ChestXray14, "refuge": REFUGE, "drishti_gs": DrishtiGS}
WRITERS = {
    "isic2018": lambda root: write_fixture(root, labels=(0, 1, 1, 2, 6, 3)),
    "chestxray14": write_cxr,
    "refuge": lambda root: write_refuge(root, splits=("train",)),
    "drishti_gs": lambda root: write_drishti(root, parts=("Training",)),
}


def source_files(dataset) -> list[Path]:
    """The image file of each item of ``dataset``."""
    if isinstance(dataset, REFUGE):
        return [pair.image for pair in dataset.pairs]
    if isinstance(dataset, DrishtiGS):
        return [sample.image for sample in dataset.samples]
    return list(dataset.paths)


@pytest.fixture(params=list(READERS), name="reader")
def _reader(request, fresh_copy):
    """``(open, root)``: ``open(**options)`` reads the train split of a fresh fixture at ``root``."""
    root = fresh_copy(WRITERS[request.param], name=request.param)
    cls = READERS[request.param]

    def open_split(image_size: int = 16, **options):
        return cls(root, "train", image_size=image_size, **options)

    return open_split, root


def items(dataset) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [dataset[i] for i in range(len(dataset))]


def assert_same(a, b) -> None:
    assert len(a) == len(b)
    for (x, y), (u, v) in zip(a, b):
        assert torch.equal(x, u) and torch.equal(y, v)


def forbid_decoding(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"a file was decoded: Image.open{args}")

    monkeypatch.setattr(PIL.Image, "open", refuse)


# --- data_dir ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [*READERS.values(), BraTS], ids=lambda c: c.__name__)
def test_missing_data_dir_or_a_file_instead_are_named(cls, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=rf"data_dir {re.escape(str(missing))} does not exist.*README"):
        cls(missing)
    archive = tmp_path / "release.zip"
    archive.write_bytes(b"PK")
    with pytest.raises(NotADirectoryError, match=rf"data_dir {re.escape(str(archive))} is a file, expected"):
        cls(archive)


@pytest.mark.parametrize(
    "cls, entries, message",
    [
        (
            ISIC2018Task3,
            ("images/",),
            r"not in the ISIC 2018 Task 3 layout.*ISIC2018_Task3_Training_Input/.*found: \['images'\]",
        ),
        (
            ChestXray14,
            ("images/", "test_list.txt"),
            r"neither Data_Entry_2017.csv nor Data_Entry_2017_v2020.csv \(found: \['images', 'test_list.txt'\]\)",
        ),
        (
            REFUGE,
            ("REFUGE/", "readme.txt"),  # unpacked one level too deep
            r"not in the REFUGE layout for split 'train': it has no Training400/Glaucoma/, "
            r"Training400/Non-Glaucoma/, Annotation-Training400/Disc_Cup_Masks/Glaucoma/, "
            r"Annotation-Training400/Disc_Cup_Masks/Non-Glaucoma/ \(found: \['REFUGE/', 'readme.txt'\]\)",
        ),
        (
            DrishtiGS,
            ("Drishti-GS1/", "notes.txt"),
            r"not in the Drishti-GS1 layout: it has neither Training/ and Test/ nor Drishti-GS1_files/ "
            r"\(found: \['Drishti-GS1/', 'notes.txt'\]\)",
        ),
        (
            BraTS,
            ("MICCAI_BraTS_2018_Data_Training/", "notes.txt"),  # extracted one level too deep
            r"has no BraTS case folder: expected .*/<case>/ .*"
            r"\(found: \['MICCAI_BraTS_2018_Data_Training/', 'notes.txt'\]\)",
        ),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_a_wrong_layout_lists_what_was_found(cls, entries, message, tmp_path):
    for name in entries:
        if name.endswith("/"):
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_text("x")
    with pytest.raises(FileNotFoundError, match=message):
        cls(tmp_path)


# --- the item cache ----------------------------------------------------------------------------------


def test_cached_items_equal_decoded_items_and_a_second_pass_decodes_nothing(reader, monkeypatch):
    open_split, _ = reader
    direct = items(open_split(cache=False))
    dataset = open_split()
    assert dataset.item_cache.folder.parent.parent == default_cache_dir()  # $MEDLAB_CACHE_DIR (conftest)
    first = items(dataset)
    assert_same(first, direct)
    assert dataset.item_cache.filled == len(dataset)
    again = open_split()  # another instance finds the same cache
    forbid_decoding(monkeypatch)
    assert_same(items(dataset), direct)
    assert_same(items(again), direct)
    assert again.item_cache.folder == dataset.item_cache.folder


def test_changed_options_or_files_give_another_cache(reader):
    open_split, _ = reader
    dataset = open_split()
    items(dataset)
    assert open_split(image_size=12).item_cache.folder != dataset.item_cache.folder
    if isinstance(dataset, (REFUGE, DrishtiGS)):
        assert open_split(roi_fraction=0.5).item_cache.folder != dataset.item_cache.folder
    path = source_files(dataset)[0]
    image = Image.open(path)
    Image.fromarray(255 - np.asarray(image)).save(path)  # the same name, other pixels
    changed = open_split()
    assert changed.item_cache.folder != dataset.item_cache.folder
    assert_same(items(changed), items(open_split(cache=False)))
    assert not torch.equal(changed[0][0], dataset[0][0])  # the old cache is not read for the new file


def test_through_a_dataloader_with_two_workers(reader):
    open_split, _ = reader
    direct = items(open_split(cache=False))
    dataset = open_split()
    loader = DataLoader(dataset, batch_size=2, num_workers=2)
    for epoch in range(2):
        batches = list(loader)
        images = torch.cat([b[0] for b in batches])
        assert torch.equal(images, torch.stack([d[0] for d in direct])), epoch
    assert dataset.item_cache.filled == len(dataset)  # the workers filled it
    restored = pickle.loads(pickle.dumps(dataset))
    assert restored.item_cache._items is None  # only the path travels
    assert_same(items(restored), direct)


def test_a_spawned_persistent_worker(tmp_path):
    """A spawned worker gets the dataset pickled (the cache's path, not its memory maps) and maps it."""
    write_fixture(tmp_path, labels=(0, 1, 2, 3))
    dataset = ISIC2018Task3(tmp_path, image_size=16)
    items(dataset)  # fills the cache and opens the memory maps in this process
    loader = DataLoader(
        dataset, batch_size=2, num_workers=1, multiprocessing_context="spawn", persistent_workers=True
    )
    direct = torch.stack([d[0] for d in items(ISIC2018Task3(tmp_path, image_size=16, cache=False))])
    for _ in range(2):
        assert torch.equal(torch.cat([images for images, _ in loader]), direct)


@pytest.mark.parametrize("damage", ["truncated", "garbage header", "other key", "flipped bytes"])
def test_a_damaged_cache_is_rebuilt_not_trusted(reader, damage):
    open_split, _ = reader
    direct = items(open_split(cache=False))
    dataset = open_split()
    items(dataset)
    folder = dataset.item_cache.folder
    target = folder / "items.npy"
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "garbage header":
        target.write_bytes(b"not a numpy file" + target.read_bytes()[16:])
    elif damage == "other key":
        (folder / "key.json").write_text("{}")
    else:
        raw = bytearray(target.read_bytes())
        raw[-20:] = bytes(255 - b for b in raw[-20:])  # the last item's bytes no longer match its CRC
        target.write_bytes(bytes(raw))
    again = open_split()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_same(items(again), direct)
    rebuilt = [w for w in caught if "is unreadable" in str(w.message) and "rebuilding" in str(w.message)]
    assert len(rebuilt) == (0 if damage == "flipped bytes" else 1), [str(w.message) for w in caught]
    assert again.item_cache.filled == len(again) and not list(folder.parent.glob(".*"))  # no leftovers


def test_transform_applies_after_the_cache(tmp_path):
    write_fixture(tmp_path)
    plain = ISIC2018Task3(tmp_path, image_size=20, cache=False)
    flipped = ISIC2018Task3(tmp_path, image_size=20, transform=lambda image: image.flip(2))
    for index in range(len(plain)):
        expected = default_transform(20)(plain.load_image(index))  # the reader's pixels, as before the cache
        assert torch.equal(plain[index][0], expected)
        assert torch.equal(flipped[index][0], expected.flip(2))


def test_item_cache_on_its_own(tmp_path):
    cache = ItemCache(tmp_path / "c", 3, (2, 2), {"what": "test"})
    assert cache.get(1) is None and cache.filled == 0
    cache.put(1, np.full((2, 2), 7, np.uint8))
    assert cache.get(1).tolist() == [[7, 7], [7, 7]] and cache.filled == 1
    with pytest.raises(ValueError, match=r"must be uint8 \(2, 2\), got int64 \(2, 2\)"):
        cache.put(0, np.zeros((2, 2), np.int64))
    other = ItemCache(tmp_path / "c", 3, (2, 2), {"what": "test"})
    assert other.get(1).tolist() == [[7, 7], [7, 7]] and other.get(0) is None
    blocked = tmp_path / "file"
    blocked.write_text("x")
    with pytest.raises(OSError, match=r"cannot create the item cache .*file/c .*cache=False"):
        ItemCache(blocked / "c", 1, (1,), {}).get(0)


def test_loader_throughput_records_both_figures(tmp_path, capsys):
    from medlab import bench

    measured = bench.loader_throughput(
        n_images=6, image_size=16, batch_size=4, num_workers=0, size=(60, 45), root=tmp_path
    )
    assert measured["decode_images_per_s"] > 0 and measured["cached_images_per_s"] > 0
    assert measured["speedup"] == pytest.approx(measured["cached_images_per_s"] / measured["decode_images_per_s"])
    path = Path(measured["path"])
    assert path.parent == tmp_path / "bench" / "loaders" and path.name.startswith("isic2018-16__")
    assert "decode every epoch" in capsys.readouterr().out
