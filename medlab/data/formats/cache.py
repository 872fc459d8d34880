"""An on-disk cache of decoded, resized items, shared by the 2D readers.

A reader whose items are fixed-shape uint8 arrays (the resized crop before it becomes a float tensor)
keeps them in one folder per (reader, resolved root, split, options that shape the pixels, and the
files with their sizes and modification times)::

    <cache_dir>/<reader>/<split>-<digest>/
        key.json      what the digest is made of (for people)
        items.npy     uint8 (N, *shape), opened as a memory map
        filled.npy    uint64 (N,): 0 while item i is not cached, else 2**32 + the CRC-32 of its bytes

``cache_dir`` defaults to ``$MEDLAB_CACHE_DIR`` if set, else ``~/.cache/medlab``. The cache fills as
items are first read and is complete after one epoch; from then on no file is decoded. DataLoader
workers (forked or spawned) each open the memory maps lazily (only the paths are pickled) and write
distinct items. The folder is created whole, atomically (written under a temporary name, then renamed);
an unreadable or truncated cache is discarded and rebuilt with a warning, and an item whose bytes do
not match its CRC is decoded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import PIL
from PIL import Image
from torch.utils.data import Dataset

from medlab.data.formats.common import item_index, to_float

VERSION = 1  # bump when the layout of a cache changes
FILLED = np.uint64(1 << 32)
ITEMS, STATE, KEY = "items.npy", "filled.npy", "key.json"
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_BROKEN = (OSError, ValueError, EOFError)  # what an unreadable cache raises (JSONDecodeError is a ValueError)


def default_cache_dir() -> Path:
    """``$MEDLAB_CACHE_DIR`` if set, else ``~/.cache/medlab``."""
    return Path(os.environ.get("MEDLAB_CACHE_DIR") or Path.home() / ".cache" / "medlab").expanduser()


def files_digest(paths: Iterable[Path]) -> tuple[int, str]:
    """The number of ``paths`` and a digest of their names, sizes and modification times (a file
    replaced, edited or touched changes it)."""
    digest = hashlib.sha256()
    count = 0
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        count += 1
    return count, digest.hexdigest()


def _map(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The ``.npy`` at ``path`` as a writable memory map; ValueError when its header is unreadable or
    not ``dtype`` and ``shape``, or its size is not the header's plus the data's (truncated, padded)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version not in _HEADER_READERS:
            raise ValueError(f"{path} is a .npy file of version {version}, not one this cache writes")
        found_shape, fortran, found_dtype = _HEADER_READERS[version](handle)
        offset = handle.tell()
    if found_dtype != dtype or tuple(found_shape) != shape or fortran:
        raise ValueError(f"{path} holds {found_dtype} {tuple(found_shape)}, not {dtype} {shape}")
    expected = offset + dtype.itemsize * int(np.prod(shape))
    size = os.path.getsize(path)
    if size != expected:
        raise ValueError(f"{path} has {size} bytes, expected {expected} (truncated?)")
    return np.load(path, mmap_mode="r+")


class ItemCache:
    """``n`` uint8 items of ``shape`` in ``folder`` (see the module's docstring); ``key`` is stored with
    them and checked when they are opened. Picklable: the memory maps are opened lazily in each process."""

    def __init__(self, folder: Path, n: int, shape: tuple[int, ...], key: dict[str, Any]):
        if n < 1:
            raise ValueError(f"an item cache needs at least one item, got n={n}")
        self.folder, self.n, self.shape, self.key = Path(folder), int(n), tuple(int(s) for s in shape), key
        self._items: np.ndarray | None = None
        self._state: np.ndarray | None = None

    @classmethod
    def for_files(
        cls,
        reader: str,
        root: Path,
        split: str,
        options: dict[str, Any],
        files: Sequence[Path],
        n: int,
        shape: tuple[int, ...],
        cache_dir: str | Path | None = None,
    ) -> "ItemCache":
        """The cache of ``n`` items of ``shape`` that ``reader`` makes of ``files`` for ``split`` of
        ``root`` with ``options`` (every option that shapes the pixels), under ``cache_dir``."""
        count, digest = files_digest(files)
        key = {
            "version": VERSION,
            "reader": reader,
            "root": str(Path(root).resolve()),
            "split": split,
            "options": options,
            "shape": [n, *shape],
            "pillow": PIL.__version__,  # its resampling shapes the pixels too
            "files": count,
            "files_digest": digest,
        }
        name = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
        base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        return cls(base / reader / f"{split}-{name}", n, shape, key)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_items"] = state["_state"] = None  # each process maps the files itself
        return state

    # --- opening ------------------------------------------------------------------------------------

    def _key_text(self) -> str:
        return json.dumps(self.key, sort_keys=True, indent=1, default=str)

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        """Map the cache files, checking the key and, before mapping (which would extend a short file),
        each file's dtype, shape and size."""
        if (self.folder / KEY).read_text() != self._key_text():
            raise ValueError(f"{self.folder / KEY} does not hold this cache's key")
        items = _map(self.folder / ITEMS, np.dtype(np.uint8), (self.n, *self.shape))
        state = _map(self.folder / STATE, np.dtype(np.uint64), (self.n,))
        return items, state

    def _create(self) -> None:
        """Write an empty cache under a temporary name and rename it to ``folder`` (atomic; when another
        process created it first, its copy is kept)."""
        parent = self.folder.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.tmp-", dir=parent))
        except OSError as error:
            raise OSError(
                f"cannot create the item cache {self.folder} ({error}); pass cache_dir=, set "
                f"$MEDLAB_CACHE_DIR to a writable folder, or pass cache=False"
            ) from None
        try:
            items = np.lib.format.open_memmap(tmp / ITEMS, mode="w+", dtype=np.uint8, shape=(self.n, *self.shape))
            state = np.lib.format.open_memmap(tmp / STATE, mode="w+", dtype=np.uint64, shape=(self.n,))
            items.flush()
            state.flush()
            del items, state
            (tmp / KEY).write_text(self._key_text())
            os.replace(tmp, self.folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not self.folder.is_dir():
                raise

    def _discard(self, error: Exception) -> None:
        warnings.warn(f"medlab: the item cache {self.folder} is unreadable ({error}); rebuilding it", stacklevel=4)
        trash = self.folder.with_name(f".{self.folder.name}.broken-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            os.replace(self.folder, trash)
        except FileNotFoundError:
            return  # another process moved it first
        shutil.rmtree(trash, ignore_errors=True)

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        if self._items is None or self._state is None:
            if not self.folder.exists():
                self._create()
            try:
                self._items, self._state = self._load()
            except _BROKEN as error:
                self._discard(error)
                self._create()
                self._items, self._state = self._load()
        return self._items, self._state

    # --- items --------------------------------------------------------------------------------------

    def get(self, index: int) -> np.ndarray | None:
        """A copy of item ``index``, or None when it is not cached (or its bytes fail their CRC)."""
        items, state = self._open()
        stamp = state[index]
        if stamp == 0:
            return None
        item = np.array(items[index])
        if FILLED | np.uint64(zlib.crc32(item)) != stamp:
            return None
        return item

    def put(self, index: int, item: np.ndarray) -> None:
        """Store item ``index`` (uint8 of the cache's shape), then mark it filled."""
        if item.dtype != np.uint8 or item.shape != self.shape:
            raise ValueError(f"an item of {self.folder} must be uint8 {self.shape}, got {item.dtype} {item.shape}")
        items, state = self._open()
        items[index] = item
        state[index] = FILLED | np.uint64(zlib.crc32(np.ascontiguousarray(item)))

    def fetch(self, index: int, make: Callable[[int], np.ndarray]) -> np.ndarray:
        """Item ``index`` from the cache, else ``make(index)``, stored for next time."""
        item = self.get(index)
        if item is None:
            item = make(index)
            self.put(index, item)
        return item

    @property
    def filled(self) -> int:
        """How many items are cached."""
        return int(np.count_nonzero(self._open()[1]))


class CachedReader(Dataset):
    """Base of the readers whose items are made from one fixed-shape uint8 array each (:meth:`prepare`),
    kept in an :class:`ItemCache` unless ``cache=False``."""

    item_cache: ItemCache | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def prepare(self, index: int) -> np.ndarray:
        """Decode item ``index`` from its files: the uint8 array the cache holds."""
        raise NotImplementedError

    def use_cache(
        self,
        cache: bool,
        cache_dir: str | Path | None,
        reader: str,
        options: dict[str, Any],
        files: Sequence[Path],
        shape: tuple[int, ...],
    ) -> None:
        """Set up the item cache of this split (``self.root``, ``self.split``), or none when ``cache`` is
        False or the split is empty."""
        self.cache = bool(cache)
        self.item_cache = (
            ItemCache.for_files(reader, self.root, self.split, options, files, len(self), shape, cache_dir)
            if cache and len(self)
            else None
        )

    def array(self, index: int) -> np.ndarray:
        """The uint8 array of item ``index``: from the cache when it holds it, else decoded (and cached)."""
        index = item_index(index, len(self))
        if self.item_cache is None:
            return self.prepare(index)
        return self.item_cache.fetch(index, self.prepare)


class ImageReader(CachedReader):
    """Base of the readers of one image file and one target per item (ISIC 2018, ChestX-ray14):
    ``(image, target)`` with ``image`` a float32 tensor (C, S, S) in [0, 1].

    A subclass sets ``paths``, ``targets``, ``transform`` and ``resize`` (a PIL image to a uint8 tensor
    (C, S, S)) and calls :meth:`use_cache`. The cache holds ``resize``'s output as uint8 (S, S, C);
    ``transform``, if given, is applied to the float tensor after it."""

    mode = "RGB"  # the PIL mode the files are converted to
    paths: list[Path]
    resize: Callable

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, index: int) -> Image.Image:
        """The full-resolution image of item ``index``; RuntimeError naming the file if unreadable."""
        path = self.paths[item_index(index, len(self))]
        try:
            with Image.open(path) as image:
                return image.convert(self.mode)
        except (OSError, SyntaxError, ValueError) as error:  # PIL raises SyntaxError for some broken PNGs
            raise RuntimeError(f"cannot read image {path}: {error}") from None

    def prepare(self, index: int) -> np.ndarray:
        """Item ``index`` decoded and resized: uint8 (S, S, C)."""
        return self.resize(self.load_image(index)).permute(1, 2, 0).numpy().copy()

    def __getitem__(self, index: int):
        index = item_index(index, len(self))
        image = to_float(self.array(index))
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]
