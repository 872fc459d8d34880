"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medlab.data.formats.isic2018 import CLASSES


def write_isic(
    root: Path, part: str = "Training", labels=(0, 1, 1, 2, 6), csv_inside_folder: bool = True
) -> list[str]:
    """Write a tiny ISIC 2018 Task 3 part in the official layout and return its image ids."""
    image_dir = root / f"ISIC2018_Task3_{part}_Input"
    image_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = [f"ISIC_{24306 + i:07d}" for i in range(len(labels))]
    for name in ids:
        Image.fromarray(rng.integers(0, 255, (45, 60, 3), dtype=np.uint8)).save(image_dir / f"{name}.jpg")
    (image_dir / "LICENSE.txt").write_text("licence text shipped with the data")
    rows = ["image," + ",".join(CLASSES)]
    for name, label in zip(ids, labels):
        rows.append(name + "," + ",".join("1.0" if k == label else "0.0" for k in range(7)))
    csv_dir = root / f"ISIC2018_Task3_{part}_GroundTruth" if csv_inside_folder else root
    csv_dir.mkdir(exist_ok=True)
    (csv_dir / f"ISIC2018_Task3_{part}_GroundTruth.csv").write_text("\n".join(rows) + "\n")
    return ids


@pytest.fixture(name="write_isic")
def _write_isic_fixture():
    """Writes a tiny ISIC 2018 Task 3 part in the official layout: ``write_isic(root, part, labels)``."""
    return write_isic
