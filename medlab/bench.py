"""``medlab bench``: the wall time, training throughput and peak memory of whole chapters per profile.

Each chapter runs in a fresh temporary runs and results folder (nothing is resumed, nothing is added
to ``results/<profile>/``), and one benchmark record per chapter, profile and device is written under
``medlab/resources/bench/`` (shipped with the package: each chapter's resource card reads it). The budgets of the profile contract (smoke <= 60 s, demo <= 15 min on 2 CPU
cores) are checked against it. :func:`loader_throughput` measures what the readers' item cache gains.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from medlab import notebooks, results
from medlab.runtime import PROFILE_BUDGET_S, choose_device, environment_record


def measure(source: Path, profile: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute one chapter at ``profile`` in a scratch folder and return its measurements."""
    slug = notebooks.slug_of(source)
    with tempfile.TemporaryDirectory(prefix=f"medlab-bench-{slug}-") as tmp:
        scratch = Path(tmp)
        executed = notebooks.execute(
            source,
            scratch / f"{source.stem}.ipynb",
            profile=profile,
            parameters=parameters,
            extra_env={
                "MEDLAB_RUNS_DIR": str(scratch / "runs"),
                "MEDLAB_RESULTS_DIR": str(scratch / "results"),
            },
        )
        frame = results.load(chapter=slug, profile=profile, root=scratch / "results")
    speeds = (
        frame["timing.samples_per_s"].dropna().to_numpy() if "timing.samples_per_s" in frame else np.array([])
    )
    peaks = (
        frame["timing.peak_memory_mb"].dropna().to_numpy()
        if "timing.peak_memory_mb" in frame
        else np.array([])
    )
    budget = PROFILE_BUDGET_S[profile]
    throughput = {}
    if "experiment" in frame:  # chapters that measure their step against a plain loop record it
        for _, row in frame[frame["experiment"] == "throughput"].iterrows():
            metrics = {k[len("metrics."):]: v for k, v in row.items() if k.startswith("metrics.") and pd.notna(v)}
            throughput[row["variant"]] = metrics
        frame = frame[frame["experiment"] != "throughput"]
    return {
        "wall_s": executed["wall_s"],
        "budget_s": budget,
        "within_budget": None if budget is None else bool(executed["wall_s"] <= budget),
        "runs": int(len(frame)),
        "train_samples_per_s": float(np.median(speeds)) if speeds.size else None,
        "peak_memory_mb": float(peaks.max()) if peaks.size else None,
        "throughput": throughput,
        "parameters": parameters or {},
        "environment": environment_record(choose_device()),
    }


def run(chapters: Sequence[str] | None, profiles: Sequence[str]) -> list[dict[str, Any]]:
    """Benchmark chapters (default: all in the table of contents) at each profile; print and record."""
    sources = [notebooks.find_chapter(c) for c in chapters] if chapters else notebooks.chapters()
    rows = []
    for source in sources:
        slug = notebooks.slug_of(source)
        for profile in profiles:
            print(f"{source.name} at {profile} ...", flush=True)
            measured = measure(source, profile)
            path = results.write_bench(slug, profile, measured)
            budget = "no budget" if measured["budget_s"] is None else f"budget {measured['budget_s']:.0f} s"
            status = (
                ""
                if measured["within_budget"] is None
                else ("within budget" if measured["within_budget"] else "OVER BUDGET")
            )
            speed = measured["train_samples_per_s"]
            print(
                f"  {measured['wall_s']:.0f} s ({budget}) {status}; {measured['runs']} runs; "
                f"training {speed:.0f} samples/s per run; peak memory {measured['peak_memory_mb'] or 0:.0f} MiB -> {path}"
                if speed
                else f"  {measured['wall_s']:.0f} s ({budget}) {status} -> {path}",
                flush=True,
            )
            for name, values in measured["throughput"].items():
                # the unit a chapter counts: images, voxels, pixels, volumes, slices ... (device_<unit>_per_s)
                units = [k[len("device_"):-len("_per_s")] for k in values if k.startswith("device_") and k.endswith("_per_s")]
                unit = units[0] if units else "images"
                print(
                    f"  {name}: {values.get(f'device_{unit}_per_s', float('nan')):,.0f} {unit}/s "
                    f"(plain fp32 loop: {values.get(f'plain_{unit}_per_s', float('nan')):,.0f}; "
                    f"x{values.get('speedup', float('nan')):.2f})",
                    flush=True,
                )
            rows.append({"chapter": slug, "profile": profile, **measured})
    return rows


def loader_throughput(
    n_images: int = 400,
    image_size: int = 224,
    batch_size: int = 32,
    num_workers: int = 2,
    size: tuple[int, int] = (600, 450),
    write: bool = True,
    root: str | Path | None = None,
) -> dict[str, Any]:
    """Images per second through a DataLoader of the ISIC 2018 reader at ``image_size``, decoding every
    JPEG every epoch (``cache=False``) and from the item cache (its second epoch; the first fills it).

    The data is a generated fixture in the official layout: ``n_images`` JPEGs of ``size`` (width, height;
    ISIC 2018's are 600 x 450) in a temporary folder, with a temporary cache folder. Both loaders keep
    their ``num_workers`` workers across epochs and the second epoch of each is timed. Prints the two
    figures and their ratio and, if ``write``, records them with :func:`medlab.results.write_bench` as
    chapter ``loaders``, profile ``isic2018-<image_size>``, under ``<root>/bench/loaders/`` (``root``
    defaults to the results folder, so the record stays out of the chapters' benchmark table).
    """
    from torch.utils.data import DataLoader

    from medlab.data.formats.isic2018 import ISIC2018Task3, write_fixture

    labels = tuple(int(k) for k in np.random.default_rng(0).integers(0, 7, n_images))
    with tempfile.TemporaryDirectory(prefix="medlab-bench-loaders-") as tmp:
        data_dir, cache_dir = Path(tmp) / "isic2018", Path(tmp) / "cache"
        write_fixture(data_dir, "Training", labels, size=size)

        def epochs(cache: bool) -> list[float]:
            dataset = ISIC2018Task3(data_dir, "train", image_size=image_size, cache=cache, cache_dir=cache_dir)
            loader = DataLoader(
                dataset, batch_size=batch_size, num_workers=num_workers, persistent_workers=num_workers > 0
            )
            seconds = []
            for _ in range(2):
                start = time.perf_counter()
                count = sum(len(images) for images, _ in loader)
                seconds.append(time.perf_counter() - start)
            if count != n_images:
                raise RuntimeError(f"the loader gave {count} images of {n_images}")
            return seconds

        decode_s, cached_s = epochs(cache=False), epochs(cache=True)
    measured = {
        "kind": "loader_throughput",
        "dataset": "isic2018 (generated fixture, official layout)",
        "n_images": n_images,
        "source_size": list(size),
        "image_size": image_size,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "decode_images_per_s": n_images / decode_s[1],
        "cached_images_per_s": n_images / cached_s[1],
        "filling_images_per_s": n_images / cached_s[0],
        "speedup": decode_s[1] / cached_s[1],
        "wall_s": sum(decode_s) + sum(cached_s),
        "environment": environment_record(choose_device()),
    }
    print(
        f"ISIC 2018 loader, {n_images} JPEGs of {size[0]}x{size[1]} at {image_size}, {num_workers} workers: "
        f"decode every epoch {measured['decode_images_per_s']:,.0f} images/s; cached (second epoch) "
        f"{measured['cached_images_per_s']:,.0f} images/s; x{measured['speedup']:.1f} "
        f"(first, filling epoch {measured['filling_images_per_s']:,.0f} images/s)",
        flush=True,
    )
    if write:
        root = results.results_root() if root is None else root
        measured["path"] = str(results.write_bench("loaders", f"isic2018-{image_size}", measured, root=root))
        print(f"  -> {measured['path']}", flush=True)
    return measured
