"""The INbreast reader on fixtures written in the official layout: mass crops with masks rasterised from the
XML outlines, patient splits, and the bad inputs (missing folders, outlines without their image, names
outside the pattern, unreadable DICOM or XML, outlines outside the image)."""

from __future__ import annotations

import numpy as np
import pytest

from medlab.data.formats.inbreast import INbreast, read_dicom, read_outlines, write_dicom, write_fixture, write_outlines


def test_one_crop_per_mass_with_its_outline_rasterised(written):
    root = written(write_fixture, 6)
    parts = {split: INbreast(root, split, image_size=32) for split in ("train", "val", "test")}
    assert sum(len(p) for p in parts.values()) == 6  # one mass per patient; calcifications and plain views ignored
    assert parts["train"].info["images_without_masses"] == 6
    image, mask = parts["train"][0]
    assert image.shape == (1, 32, 32) and 0 <= image.min() and image.max() <= 1
    fraction = mask.float().mean()
    assert 0.2 < fraction < 0.8  # the crop is 1.4 times the mass's box
    assert image[0][mask.bool()].mean() > image[0][~mask.bool()].mean() + 0.2  # the mass is the bright blob


def test_outlines_and_pixels_are_read_as_written(tmp_path):
    outline = np.array([[1.0, 2.0], [5.5, 2.0], [3.0, 7.25]])
    write_outlines(tmp_path / "1.xml", [outline, outline + 1], ["Mass", "Calcification"])
    assert np.allclose(read_outlines(tmp_path / "1.xml")[0], outline)
    assert len(read_outlines(tmp_path / "1.xml", ("Mass", "calcification"))) == 2
    pixels = np.arange(12, dtype=np.uint16).reshape(3, 4) * 100
    write_dicom(tmp_path / "a.dcm", pixels)
    assert np.array_equal(read_dicom(tmp_path / "a.dcm"), pixels)
    write_dicom(tmp_path / "b.dcm", pixels, photometric="MONOCHROME1")
    assert np.array_equal(read_dicom(tmp_path / "b.dcm"), pixels.max() - pixels)  # dense tissue bright


def test_missing_folders_and_outlines_without_their_image(tmp_path, fresh_copy):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        INbreast(tmp_path / "nowhere")
    (tmp_path / "half" / "AllDICOMs").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no AllXML/ folder"):
        INbreast(tmp_path / "half")
    root = fresh_copy(write_fixture, 6)
    write_outlines(root / "AllXML" / "99999999.xml", [np.array([[1.0, 1], [5, 1], [3, 5]])], ["Mass"])
    with pytest.raises(ValueError, match="have no DICOM in .*AllDICOMs: 99999999.xml .the labels do not match"):
        INbreast(root)


def test_bad_names_unreadable_files_and_outlines_outside_the_image(fresh_copy):
    root = fresh_copy(write_fixture, 6)
    stray = root / "AllDICOMs" / "scan.dcm"
    stray.write_bytes(b"x")
    with pytest.raises(ValueError, match="scan.dcm is not named"):
        INbreast(root)
    stray.unlink()
    xml = sorted((root / "AllXML").glob("*.xml"))[0]
    dicom = next((root / "AllDICOMs").glob(f"{xml.stem}_*.dcm"))
    good = dicom.read_bytes()
    dicom.write_bytes(b"not a dicom")
    with pytest.raises(ValueError, match=f"cannot read DICOM file .*{dicom.name}"):
        for split in ("train", "val", "test"):
            INbreast(root, split)
    dicom.write_bytes(good)
    write_outlines(xml, [np.array([[1.0, 1], [5000, 1], [3, 5]])], ["Mass"])
    with pytest.raises(ValueError, match=f"{xml.name} has an outline outside"):
        for split in ("train", "val", "test"):
            INbreast(root, split)
    xml.write_text("<plist><dict><key>Images</key>")
    with pytest.raises(ValueError, match=f"cannot read the outlines of .*{xml.name}"):
        INbreast(root)
