"""Run one configuration of an experiment: its run folder, timing, provenance and results record.

A chapter supplies ``train(run_dir) -> RunOutput``; :func:`run_once` gives it a run folder named after
the configuration (so an interrupted run resumes from its checkpoints when called again), measures the
wall time, and writes the results record.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from medlab import results
from medlab.engine import FitResult
from medlab.runtime import code_fingerprint, environment_record, stable_hash


@dataclass
class RunOutput:
    """What a chapter's training function returns for one configuration."""

    metrics: dict[str, float]
    fit: FitResult | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)


def fingerprint(params: Mapping[str, Any]) -> str:
    """Identifies a configuration and the code that runs it (a changed package invalidates checkpoints)."""
    return stable_hash({"params": dict(params), "code": code_fingerprint()}, 16)


def run_dir_for(
    profile: str,
    chapter: str,
    experiment: str,
    variant: str,
    seed: int,
    params: Mapping[str, Any],
    root: Path | None = None,
) -> Path:
    base = Path(root) if root is not None else results.runs_root()
    return base / profile / chapter / results.run_name(experiment, variant, seed, params)


def run_once(
    *,
    chapter: str,
    profile: str,
    experiment: str,
    variant: str,
    seed: int,
    params: Mapping[str, Any],
    dataset: Mapping[str, Any],
    device: torch.device,
    train: Callable[[Path], RunOutput],
    runs_root: Path | None = None,
    results_root: Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate one configuration, write its results record, and return the record."""
    run_dir = run_dir_for(profile, chapter, experiment, variant, seed, params, runs_root)
    tic = time.perf_counter()
    output = train(run_dir)
    wall_s = time.perf_counter() - tic
    timing: dict[str, Any] = {"wall_s": wall_s}
    history: list[dict[str, float]] = []
    if output.fit is not None:
        fit = output.fit
        history = fit.history
        timing.update(
            train_s=fit.train_s,
            samples_per_s=fit.samples_per_s,
            peak_memory_mb=fit.peak_memory_mb,
            epochs=len(fit.history),
            best_epoch=fit.best_epoch,
            resumed_from_epoch=fit.resumed_from_epoch,
        )
    path = results.write_record(
        chapter=chapter,
        profile=profile,
        experiment=experiment,
        variant=variant,
        seed=seed,
        metrics=output.metrics,
        params=params,
        dataset=dataset,
        environment=environment_record(device),
        timing=timing,
        history=history,
        artifacts=output.artifacts,
        root=results_root,
    )
    return results.read_record(path)


# ---------------------------------------------------------------------------------------------
# Running a grid of configurations, in parallel worker processes on a CPU


def auto_workers(device: torch.device, jobs: int, max_workers: int = 4, workers: int = 0) -> tuple[int, int]:
    """(processes, threads per process) for a grid of ``jobs`` runs on ``device``.

    One process on an accelerator. On a CPU, small networks train faster as several single-thread
    processes than as one multi-thread process (measured: 1.6x with 2 cores), so use up to
    ``max_workers`` processes and share the cores among them. ``workers > 0`` fixes the number of
    processes (a chapter's ``workers`` setting); the cores are still shared among them.
    """
    cores = os.cpu_count() or 1
    if workers > 0:
        return workers, max(1, cores // workers)
    if device.type != "cpu" or jobs <= 1:
        return 1, torch.get_num_threads()
    workers = max(1, min(cores, jobs, max_workers))
    return workers, max(1, cores // workers)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_grid(
    run_job: Callable[..., dict[str, Any]],
    jobs: Sequence[Any],
    *,
    workers: int = 1,
    threads: int | None = None,
    describe: Callable[[Any, dict[str, Any]], str] | None = None,
    **shared: Any,
) -> list[dict[str, Any]]:
    """Run ``run_job(job, **shared)`` for every job and return the results records in job order.

    With ``workers > 1`` the jobs run in that many fresh (spawned) processes, each with ``threads``
    threads; ``run_job`` must then be a module-level function and ``shared`` picklable. Every job
    writes its own record as it finishes, so an interruption loses no finished run, and a rerun
    resumes unfinished ones from their checkpoints.
    """
    total = len(jobs)
    records: list[dict[str, Any] | None] = [None] * total
    tic = time.perf_counter()

    def report(index: int, record: dict[str, Any]) -> None:
        done = sum(r is not None for r in records)
        text = describe(jobs[index], record) if describe else str(jobs[index])
        print(f"[{done}/{total}] {text}  ({time.perf_counter() - tic:.0f} s)", flush=True)

    if workers <= 1:
        for index, job in enumerate(jobs):
            records[index] = run_job(job, **shared)
            report(index, records[index])
        return records  # type: ignore[return-value]

    context = mp.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(threads or 1,)
    ) as pool:
        futures = {pool.submit(run_job, job, **shared): index for index, job in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                index = futures[future]
                try:
                    records[index] = future.result()
                except Exception as error:
                    raise RuntimeError(
                        f"run {jobs[index]} failed: {type(error).__name__}: {error}"
                    ) from error
                report(index, records[index])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return records  # type: ignore[return-value]
