"""Run scaffolding shared by every chapter: settings with roles, run identity, jobs and grids, one
run with its record, and the one grid entry point.

Every setting of a chapter's ``Settings`` dataclass has a *role*:

* ``training`` (the default): it shapes what a run learns (sizes, epochs, learning rates, loss
  weights). It enters the run's identity, so changing it starts a new run.
* ``grid``: it lists choices of the grid (methods, seeds, label fractions); a run records its own
  choice instead (``method="ccl"``), so adding a method to the list does not invalidate other runs.
* ``execution``: how a run executes (processes, data-loading workers, device, progress bars,
  paths). It never enters the identity: changing it never invalidates a checkpoint.

A training setting may belong to some *stages* only (``training_field(stages=("pretrain",))``): a
pretraining run's identity ignores the fine-tuning settings, so changing a fine-tuning learning rate
does not repeat the pretraining.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from medlab import results
from medlab.engine import FitResult, RunContext
from medlab.runtime import code_fingerprint, distributed_world, environment_record, stable_hash

ROLES = ("training", "grid", "execution")


# ---------------------------------------------------------------------------------------------
# Settings with roles


def _field(role: str, default: Any, stages: Sequence[str] | None = None) -> Any:
    metadata = {"role": role, "stages": None if stages is None else tuple(stages)}
    if default is dataclasses.MISSING:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


def training_field(default: Any = dataclasses.MISSING, *, stages: Sequence[str] | None = None) -> Any:
    """A setting that shapes what a run learns, used by ``stages`` only (default: every stage)."""
    return _field("training", default, stages)


def grid_field(default: Any = dataclasses.MISSING) -> Any:
    """A setting that lists grid choices (methods, seeds): each run records its own choice instead."""
    return _field("grid", default)


def execution_field(default: Any = dataclasses.MISSING) -> Any:
    """How a run executes (processes, workers, device, paths): never part of a run's identity."""
    return _field("execution", default)


def role_of(settings_field: dataclasses.Field) -> str:
    return settings_field.metadata.get("role", "training")


@dataclass(frozen=True, kw_only=True)
class ChapterSettings:
    """The settings every chapter has; a chapter's ``Settings`` subclasses it (keyword-only fields)."""

    seeds: tuple[int, ...] = grid_field((0, 1, 2))
    workers: int = execution_field(0)  # parallel training processes for the grid; 0 = automatic
    num_workers: int = execution_field(0)  # data-loading processes per training process

    def fields_of_role(self, role: str) -> list[str]:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        return [f.name for f in dataclasses.fields(self) if role_of(f) == role]


def run_identity(config: Any, *, stage: str | None = None, **choices: Any) -> dict[str, Any]:
    """The parameters that identify a run: every training setting of ``config`` (those of ``stage``
    when given) and the run's own grid ``choices`` (its method, data folder, ...)."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"settings must be a dataclass, got {type(config).__name__}")
    params: dict[str, Any] = {}
    for setting in dataclasses.fields(config):
        if role_of(setting) != "training":
            continue
        stages = setting.metadata.get("stages")
        if stage is not None and stages is not None and stage not in stages:
            continue
        value = getattr(config, setting.name)
        params[setting.name] = list(value) if isinstance(value, tuple) else value
    clash = sorted(set(choices) & set(params))
    if clash:
        raise ValueError(f"run choice(s) {clash} are also training settings; a choice must be a grid axis")
    for name, value in choices.items():
        params[name] = str(value) if isinstance(value, Path) else value
    return params


def fingerprint(params: Mapping[str, Any], code: str | None = None) -> str:
    """Identifies a configuration and the code that runs it (changed code invalidates checkpoints).
    ``code`` is the fingerprint of the sources the run depends on (default: the whole package)."""
    return stable_hash({"params": dict(params), "code": code or code_fingerprint()}, 16)


# ---------------------------------------------------------------------------------------------
# Jobs and grids


@dataclass(frozen=True)
class Job:
    """One cell of a chapter's grid: an experiment, a seed and the run's choices (its method, share
    of labels, ...), in the order they name the variant. ``job.method`` reads a choice. Jobs of a
    later ``phase`` run after those of earlier phases (e.g. fine-tuning after pretraining);
    ``stage`` selects the training settings of the run's identity (see :func:`run_identity`)."""

    experiment: str
    seed: int
    choices: tuple[tuple[str, Any], ...] = ()
    phase: int = 0
    stage: str | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for key, value in object.__getattribute__(self, "choices"):
            if key == name:
                return value
        raise AttributeError(f"job {self} has no choice {name!r}")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.choices)

    @property
    def variant(self) -> str:
        """The run's choices joined by ``/`` (e.g. ``shufflenet_v2_x1_0/ccl``)."""
        return "/".join(f"{v:g}" if isinstance(v, float) else str(v) for _, v in self.choices) or "default"

    def __str__(self) -> str:
        choices = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.choices)
        return f"{self.experiment}: {choices + ', ' if choices else ''}seed {self.seed}"


def job(experiment: str, seed: int, *, phase: int = 0, stage: str | None = None, **choices: Any) -> Job:
    """A :class:`Job`; ``choices`` keep the order in which they are given."""
    return Job(experiment, int(seed), tuple(choices.items()), phase, stage)


def product(
    experiment: str, seeds: Iterable[int], *, phase: int = 0, stage: str | None = None, **axes: Iterable[Any]
) -> list[Job]:
    """Every combination of the ``axes`` (in the order given, the first outermost) for every seed."""
    names = list(axes)
    return [
        job(experiment, seed, phase=phase, stage=stage, **dict(zip(names, values)))
        for values in itertools.product(*[list(v) for v in axes.values()])
        for seed in seeds
    ]


def unique(jobs: Iterable[Job]) -> list[Job]:
    """Jobs with the same choices and seed run once, under the first experiment that asks for them."""
    seen, kept = set(), []
    for item in jobs:
        key = (item.choices, item.seed, item.stage)
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


# ---------------------------------------------------------------------------------------------
# One run


@dataclass
class RunOutput:
    """What a chapter's training function returns for one configuration."""

    metrics: dict[str, float]
    fit: FitResult | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)


def run_dir_for(profile: str, chapter: str, item: Job, params: Mapping[str, Any], root: Path | None = None) -> Path:
    """The run folder of ``item``: ``runs/<profile>/<chapter>/<experiment>__<variant>__seed<k>__<hash>``."""
    base = Path(root) if root is not None else results.runs_root()
    return base / profile / chapter / results.run_name(item.experiment, item.variant, item.seed, params)


def run_once(
    *,
    chapter: str,
    profile: str,
    job: Job,
    params: Mapping[str, Any],
    dataset: Mapping[str, Any],
    device: torch.device,
    train: Callable[[RunContext], RunOutput],
    code: str | None = None,
    progress: bool | None = None,
    num_workers: int = 0,
    runs_root: Path | None = None,
    results_root: Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate one configuration, write its results record (rank 0 only under several
    processes), and return the record.

    ``train(run)`` gets a :class:`medlab.engine.RunContext` whose folder is named after the run's
    identity, so calling it again resumes from the run's checkpoints; its fingerprint covers
    ``params`` and ``code``, by default the sources the chapter runs
    (:func:`medlab.dependencies.code_fingerprint`). The record stores that folder
    relative to the runs root (:func:`medlab.results.run_folder` finds it again).
    """
    root = Path(runs_root) if runs_root is not None else results.runs_root()
    run_dir = run_dir_for(profile, chapter, job, params, root)
    if code is None:
        from medlab import dependencies

        known = dependencies.module_path(f"medlab.papers.{chapter}") is not None
        code = dependencies.code_fingerprint(chapter) if known else None
    context = RunContext(
        run_dir=run_dir,
        device=device,
        seed=job.seed,
        fingerprint=fingerprint(params, code),
        progress=progress,
        num_workers=num_workers,
        desc=f"{job.variant} seed {job.seed}",
    )
    tic = time.perf_counter()
    output = train(context)
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
            world_size=_trained_world_size(fit),
        )
    record = results.make_record(
        chapter=chapter,
        profile=profile,
        experiment=job.experiment,
        variant=job.variant,
        seed=job.seed,
        metrics=output.metrics,
        params=params,
        dataset=dataset,
        environment=environment_record(device),
        timing=timing,
        history=history,
        artifacts=output.artifacts,
        run_dir=run_dir.relative_to(root).as_posix(),
    )
    if distributed_world()[0] == 0:
        path = results.save_record(record, root=results_root)
        return results.read_record(path)
    return record


def _trained_world_size(fit: FitResult) -> int:
    """The processes that trained the run (a run resumed in one process after training in two
    reports two: its checkpoint says so)."""
    from medlab.engine import CHECKPOINT, load_checkpoint

    path = fit.run_dir / CHECKPOINT
    if fit.epochs_trained_now == 0 and path.exists():
        return int(load_checkpoint(path).get("world_size", 1))
    return fit.world_size


# ---------------------------------------------------------------------------------------------
# Running a grid: one entry point for every chapter


def auto_workers(device: torch.device, jobs: int, max_workers: int = 4, workers: int = 0) -> tuple[int, int]:
    """(processes, threads per process) for a grid of ``jobs`` runs on ``device``.

    One process on an accelerator or under ``torchrun``. On a CPU, small networks train faster as
    several single-thread processes than as one multi-thread process (measured: 1.6x with 2 cores),
    so use up to ``max_workers`` processes and share the cores among them. ``workers > 0`` fixes the
    number of processes (a chapter's ``workers`` setting); the cores are still shared among them.
    """
    cores = os.cpu_count() or 1
    if distributed_world()[1] > 1:
        return 1, torch.get_num_threads()
    if workers > 0:
        return workers, max(1, cores // workers)
    if device.type != "cpu" or jobs <= 1:
        return 1, torch.get_num_threads()
    workers = max(1, min(cores, jobs, max_workers))
    return workers, max(1, cores // workers)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _run_chapter_job(packed: tuple[str, Job, Mapping[str, Any]]) -> dict[str, Any]:
    """Module-level, so that worker processes can run it: import the chapter and run one job."""
    import importlib

    slug, item, options = packed
    return importlib.import_module(f"medlab.papers.{slug}").run_job(item, **options)


def run_jobs(
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
        if distributed_world()[0] == 0:
            print(f"[{done}/{total}] {text}  ({time.perf_counter() - tic:.0f} s)", flush=True)

    if workers <= 1:
        for index, item in enumerate(jobs):
            records[index] = run_job(item, **shared)
            report(index, records[index])
        return records  # type: ignore[return-value]

    context = mp.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(threads or 1,)
    ) as pool:
        futures = {pool.submit(run_job, item, **shared): index for index, item in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                index = futures[future]
                try:
                    records[index] = future.result()
                except Exception as error:
                    raise RuntimeError(f"run {jobs[index]} failed: {type(error).__name__}: {error}") from error
                report(index, records[index])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return records  # type: ignore[return-value]


def run_grid(
    chapter: ModuleType,
    config: Any,
    *,
    profile: str,
    device: torch.device,
    data_dir: str | Path | None = None,
    jobs: Sequence[Job] | None = None,
    progress: bool | None = None,
    **data_options: Any,
) -> list[dict[str, Any]]:
    """Run a chapter's grid (by default ``chapter.grid(config)``), phase by phase, in parallel
    processes on a CPU; return the records in job order.

    ``chapter`` is the chapter's package (``medlab.papers.<slug>``): its ``run_job(job, *, config,
    profile, device, data_dir, progress, **data_options)`` runs one job, its ``describe(job, record)``
    prints one, and its optional ``check_data(config, data_dir, **data_options)`` runs first, so a
    bad data folder fails before any training starts.
    """
    slug = chapter.SLUG
    jobs = list(chapter.grid(config) if jobs is None else jobs)
    options = {
        "config": config,
        "profile": profile,
        "device": str(device),
        "data_dir": None if data_dir is None else str(data_dir),
        "progress": progress,
        **{k: (None if v is None else str(v) if isinstance(v, Path) else v) for k, v in data_options.items()},
    }
    check = getattr(chapter, "check_data", None)
    if check is not None:
        check(config, options["data_dir"], **{k: options[k] for k in data_options})
    done: dict[int, dict[str, Any]] = {}
    for phase in sorted({item.phase for item in jobs}):
        batch = [index for index, item in enumerate(jobs) if item.phase == phase]
        workers, threads = auto_workers(torch.device(device), len(batch), workers=config.workers)
        if distributed_world()[0] == 0:
            print(f"{len(batch)} runs on {device} with {workers} process(es) x {threads} thread(s)", flush=True)
        records = run_jobs(
            _run_chapter_job,
            [(slug, jobs[index], options) for index in batch],
            workers=workers,
            threads=threads,
            describe=lambda packed, record: chapter.describe(packed[1], record),
        )
        done.update(zip(batch, records))
    return [done[index] for index in range(len(jobs))]


# ---------------------------------------------------------------------------------------------
# A chapter's setup cell


@dataclass
class Setup:
    """What a chapter's setup cell resolves: the profile, its settings, the device and the provenance."""

    profile: str
    config: Any
    device: torch.device
    environment: dict[str, Any]

    def settings_table(self) -> Any:
        """The settings as a one-column table (for the notebook)."""
        import pandas as pd

        values = {k: str(v) for k, v in dataclasses.asdict(self.config).items()}
        return pd.Series(values, name=self.profile).to_frame()


def setup(
    chapter: ModuleType,
    profile: str | None = None,
    *,
    device: str | torch.device | None = None,
    data_dir: str | Path | None = None,
    seed: int = 0,
    **overrides: Any,
) -> Setup:
    """Resolve a chapter's parameters cell: the profile (``$MEDLAB_PROFILE`` by default), the
    settings with ``overrides`` (``None`` values keep the profile's), the device (cuda > mps > cpu),
    a seed, and the environment record; print one line saying what runs where."""
    from medlab.runtime import choose_device, local_device, resolve_profile, seed_everything

    profile = resolve_profile(profile)
    config = chapter.settings(profile, **overrides)
    if profile == "paper" and data_dir is None:
        raise ValueError(
            f"the paper profile needs the real data ({', '.join(chapter.DATASETS)}): set data_dir, "
            "as data/README.md describes"
        )
    device = local_device(choose_device(device))
    seed_everything(seed)
    environment = environment_record(device)
    commit = ((environment["git"] or {}).get("commit") or "unknown")[:10]
    from medlab import __version__

    print(
        f"profile {profile}; device {device} ({environment['device'].get('name')}); commit {commit}; "
        f"torch {torch.__version__}; medlab {__version__}"
    )
    return Setup(profile, config, device, environment)
