"""INbreast (Moreira et al., Academic Radiology 2012) in its official on-disk layout, as 2D crops
centred on the breast masses, with masks rasterised from the radiologists' outlines.

Expected under ``root`` (the ``INbreast Release 1.0`` folder)::

    AllDICOMs/20586908_6c613a14b80a8591_MG_R_CC_ANON.dcm ...    full-field digital mammograms
    AllXML/20586908.xml ...                                      the outlines of the annotated images
    INbreast.csv (or .xls)                                        BI-RADS and views (ignored)

A DICOM's name is ``<image id>_<patient id>_MG_<L|R>_<CC|ML|MLO>_ANON.dcm``; an XML file is named after
the image id. The XML files are OsiriX property lists: ``Images`` holds one dict whose ``ROIs`` are
dicts with a ``Name`` ("Mass", "Calcification", "Cluster", ...) and ``Point_px``, the outline's
vertices as ``"(x, y)"`` strings in pixels (x the column). Only ROIs named in ``roi_names`` (default
"Mass") are read; images without one are not part of the mass task (counted in ``info``). The pixels
are read with pydicom (``MONOCHROME1`` images are inverted so that dense tissue is bright).

An XML file without its DICOM (the labels do not match the images), two DICOMs of one image id, a
DICOM name outside the pattern, an unreadable DICOM or XML, or an outline with fewer than three
vertices or outside its image raises an error naming the file at fault; a missing ``AllDICOMs`` or
``AllXML`` folder too.

Every mass gives one crop: the square around its outline, ``margin`` times its longer side (at least
``min_side`` pixels), of the image scaled to [0, 1] by the 1st and 99.5th percentiles of its breast
pixels, resized to ``image_size``; the mask holds every mass outline of the image that falls in the
crop. Patients are split into train, val and test by :func:`medlab.data.formats.roi2d.split_names`.
"""

from __future__ import annotations

import plistlib
import re
from pathlib import Path
from typing import Sequence
from xml.parsers.expat import ExpatError

import numpy as np
from PIL import Image, ImageDraw

from medlab.data.formats.common import check_data_dir, examples, found
from medlab.data.formats.roi2d import RoiCrops, check_size, check_split, crop, resize_pair, split_names, square_box, stack_crops

DICOM_NAME = re.compile(r"(?P<image>\d+)_(?P<patient>[0-9a-fA-F]+)_MG_(?P<side>[LR])_(?P<view>CC|ML|MLO)_ANON\.dcm")
POINT = re.compile(r"\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)")
DOCS = "see data/README.md (INbreast) for how to obtain the data and the layout medlab expects"


def find_images(root: str | Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """The DICOM of every image id and the XML of every annotated one; checks the layout only."""
    root = check_data_dir(root, "the INbreast folder (holding AllDICOMs/ and AllXML/)", DOCS)
    folders = {name: root / name for name in ("AllDICOMs", "AllXML")}
    absent = [name for name, folder in folders.items() if not folder.is_dir()]
    if absent:
        raise FileNotFoundError(f"{root} has no {' or '.join(f'{a}/' for a in absent)} folder (found: {found(root)}); {DOCS}")
    dicoms: dict[str, Path] = {}
    for path in sorted(folders["AllDICOMs"].glob("*.dcm")):
        match = DICOM_NAME.fullmatch(path.name)
        if match is None:
            raise ValueError(f"{path} is not named <image id>_<patient id>_MG_<L|R>_<CC|ML|MLO>_ANON.dcm as INbreast's DICOMs are")
        if match["image"] in dicoms:
            raise ValueError(f"image id {match['image']} has two DICOMs: {dicoms[match['image']].name} and {path.name}")
        dicoms[match["image"]] = path
    if not dicoms:
        raise FileNotFoundError(f"{folders['AllDICOMs']} holds no .dcm file (found: {found(folders['AllDICOMs'])}); {DOCS}")
    xmls = {path.stem: path for path in sorted(folders["AllXML"].glob("*.xml"))}
    orphans = sorted(set(xmls) - set(dicoms))
    if orphans:
        raise ValueError(f"{len(orphans)} outline file(s) in {folders['AllXML']} have no DICOM in {folders['AllDICOMs']}: {examples(f'{o}.xml' for o in orphans)} (the labels do not match the images)")
    return dicoms, xmls


def read_outlines(path: Path, roi_names: Sequence[str] = ("Mass",)) -> list[np.ndarray]:
    """The outlines (vertices ``(x, y)``, pixels) of the ROIs of an INbreast XML file named in ``roi_names``."""
    try:
        plist = plistlib.loads(path.read_bytes())
        images = plist["Images"]
    except (plistlib.InvalidFileException, ExpatError, KeyError, TypeError, ValueError, OSError) as error:
        raise ValueError(f"cannot read the outlines of {path} (an OsiriX property list with Images/ROIs): {type(error).__name__}: {error}") from None
    wanted = {name.lower() for name in roi_names}
    outlines = []
    for image in images:
        for roi in image.get("ROIs", []):
            if str(roi.get("Name", "")).strip().lower() not in wanted:
                continue
            points = [POINT.match(str(p)) for p in roi.get("Point_px", [])]
            if len(points) < 3 or not all(points):
                raise ValueError(f"{path}: ROI {roi.get('Name')!r} has {len(points)} vertices or unreadable ones; an outline needs at least 3 '(x, y)' points")
            outlines.append(np.array([[float(m[1]), float(m[2])] for m in points]))
    return outlines


def read_dicom(path: Path) -> np.ndarray:
    """The pixels of a mammogram (float32, dense tissue bright)."""
    import pydicom

    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array.astype(np.float32)
    except Exception as error:  # noqa: BLE001 - pydicom raises many kinds; all mean "unreadable"
        raise ValueError(f"cannot read DICOM file {path}: {type(error).__name__}: {error}") from None
    if pixels.ndim != 2:
        raise ValueError(f"DICOM file {path} holds an array of shape {pixels.shape}; expected one 2D mammogram")
    if str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2")) == "MONOCHROME1":
        pixels = pixels.max() - pixels
    return pixels


def image_crops(dicom: Path, xml: Path, image_size: int, roi_names: Sequence[str] = ("Mass",), margin: float = 1.4, min_side: int = 64):
    """The crops of one annotated image: images, masks and their sources."""
    outlines = read_outlines(xml, roi_names)
    if not outlines:
        return [], [], []
    pixels = read_dicom(dicom)
    h, w = pixels.shape
    for outline in outlines:
        if (outline < -1).any() or (outline[:, 0] > w + 1).any() or (outline[:, 1] > h + 1).any():
            raise ValueError(f"{xml} has an outline outside its {w} x {h} image {dicom.name} (the labels do not match the image)")
    sample = pixels[::8, ::8]
    breast = sample[sample > sample.min()]
    low, high = np.percentile(breast if breast.size else sample, [1, 99.5])
    images, masks, sources = [], [], []
    for k, outline in enumerate(outlines):
        (left, top), (right, bottom) = outline.min(0), outline.max(0)
        box = square_box((int(top), int(left), int(np.ceil(bottom)) + 1, int(np.ceil(right)) + 1), margin, min_side)
        canvas = Image.new("L", (box[3] - box[1], box[2] - box[0]), 0)
        draw = ImageDraw.Draw(canvas)
        for other in outlines:
            draw.polygon([(x - box[1], y - box[0]) for x, y in other], fill=1)
        region = np.clip((crop(pixels, box, float(low)) - low) / max(high - low, 1e-6), 0, 1)
        image, mask = resize_pair(region, np.asarray(canvas, dtype=np.uint8), image_size)
        images.append(image)
        masks.append(mask)
        sources.append({"image": dicom.name, "roi": k})
    return images, masks, sources


class INbreast(RoiCrops):
    """One split of INbreast's masses as 2D crops (see the module's docstring)."""

    title = "INbreast"

    def __init__(
        self, root: str | Path, split: str = "train", image_size: int = 64, roi_names: Sequence[str] = ("Mass",),
        val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0, margin: float = 1.4, min_side: int = 64,
    ):
        check_split(split)
        size = check_size(image_size)
        dicoms, xmls = find_images(root)
        patients: dict[str, list[str]] = {}
        annotated = {i: read_outlines(xml, roi_names) for i, xml in xmls.items()}
        for image_id, outlines in annotated.items():
            if outlines:
                patients.setdefault(DICOM_NAME.fullmatch(dicoms[image_id].name)["patient"], []).append(image_id)
        if not patients:
            raise ValueError(f"no outline named {' or '.join(roi_names)} in {len(xmls)} XML file(s) under {root}")
        chosen = split_names(list(patients), val_fraction, test_fraction, seed)[split]
        if not chosen:
            raise ValueError(f"split {split!r} of the {len(patients)} INbreast patient(s) with masses under {root} is empty")
        images, masks, sources = [], [], []
        for patient in chosen:
            for image_id in sorted(patients[patient]):
                crops, labels, where = image_crops(dicoms[image_id], xmls[image_id], size, roi_names, margin, min_side)
                images += crops
                masks += labels
                sources += [{**s, "patient": patient} for s in where]
        stacked = stack_crops(images, masks, size)
        super().__init__(
            images=stacked[0], masks=stacked[1], sources=sources,
            meta={"name": "INbreast", "path": str(Path(root).expanduser()), "split": split, "target": "mass", "image_size": size,
                  "patients": chosen, "images_without_masses": len(dicoms) - sum(len(v) for v in patients.values())},
        )


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2") -> None:
    """Write ``pixels`` (uint16, 2D) as a mammography DICOM file (explicit VR little endian)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # digital mammography X-ray image, for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Modality = "MG"
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 14, 13, 0
    dataset.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    try:
        pydicom.dcmwrite(path, dataset, enforce_file_format=True)
    except TypeError:  # pydicom < 3
        pydicom.dcmwrite(path, dataset, write_like_original=False)


def write_outlines(path: Path, outlines: Sequence[np.ndarray], names: Sequence[str]) -> None:
    """Write outlines (vertices ``(x, y)``) as an INbreast/OsiriX XML property list."""
    rois = [
        {"Name": name, "NumberOfPoints": len(outline), "Point_px": [f"({x:.2f}, {y:.2f})" for x, y in outline], "Type": 15}
        for outline, name in zip(outlines, names)
    ]
    path.write_bytes(plistlib.dumps({"Images": [{"ImageIndex": 0, "NumberOfROIs": len(rois), "ROIs": rois}]}))


def write_fixture(root: str | Path, patients: int = 3, height: int = 160, width: int = 128, seed: int = 0) -> list[str]:
    """Write a tiny INbreast release under ``root`` in the official layout (for tests and examples): per
    patient two views, the first with a mass (a bright lobulated blob whose outline goes to
    ``AllXML/<id>.xml``, beside a calcification ROI), the second without annotation. Returns the DICOM
    names."""
    root = Path(root)
    (root / "AllDICOMs").mkdir(parents=True, exist_ok=True)
    (root / "AllXML").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:height, :width]
    written = []
    for p in range(patients):
        rng = np.random.default_rng([seed, p])
        patient = "".join(f"{v:x}" for v in rng.integers(0, 16, size=16))
        for view, annotated in (("CC", True), ("ML", False)):
            image_id = str(20586900 + 10 * p + (view == "ML"))
            pixels = 600 + 300 * np.exp(-((xx - width * 0.3) ** 2) / (2 * (width * 0.5) ** 2)) + 40 * rng.standard_normal((height, width))
            name = f"{image_id}_{patient}_MG_R_{view}_ANON.dcm"
            if annotated:
                cy, cx, r = height * rng.uniform(0.35, 0.65), width * rng.uniform(0.35, 0.65), min(height, width) * rng.uniform(0.1, 0.16)
                angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
                radius = r * (1 + 0.1 * np.cos(3 * angles + rng.uniform(0, 6)))
                outline = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)
                canvas = Image.new("L", (width, height), 0)
                ImageDraw.Draw(canvas).polygon([tuple(v) for v in outline], fill=1)
                pixels = pixels + 500 * np.asarray(canvas, dtype=np.float32)
                spot = np.array([[10.0, 10.0], [12.0, 10.0], [11.0, 12.0]])
                write_outlines(root / "AllXML" / f"{image_id}.xml", [outline, spot], ["Mass", "Calcification"])
            write_dicom(root / "AllDICOMs" / name, np.clip(pixels, 0, 2**14 - 1).astype(np.uint16))
            written.append(name)
    return written
