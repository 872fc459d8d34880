"""``medlab bench``: the wall time, training throughput and peak memory of whole chapters per profile.

Each chapter runs in a fresh temporary runs and results folder (nothing is resumed, nothing is added
to ``results/<profile>/``), and one benchmark record per chapter, profile and device is written under
``results/bench/``. The budgets of the profile contract (smoke <= 60 s, demo <= 15 min on 2 CPU
cores) are checked against it.
"""

from __future__ import annotations

import tempfile
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
                unit = "voxels" if "device_voxels_per_s" in values else "images"  # 3D chapters count voxels
                print(
                    f"  {name}: {values.get(f'device_{unit}_per_s', float('nan')):,.0f} {unit}/s "
                    f"(plain fp32 loop: {values.get(f'plain_{unit}_per_s', float('nan')):,.0f}; "
                    f"x{values.get('speedup', float('nan')):.2f})",
                    flush=True,
                )
            rows.append({"chapter": slug, "profile": profile, **measured})
    return rows
