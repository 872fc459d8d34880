"""``medlab sweep``: a chapter executed once per point of a parameter grid, each point a job submitted
through submitit (to Slurm, or to parallel processes on this machine).

Every point writes its executed notebook, its results records (as any execution does) and, when it
finishes, a point record ``runs/sweeps/<chapter>__<profile>/<point>.json``. A point whose point record
exists is skipped when the sweep is run again; a failed point never stops the others, and the sweep
ends with a table of points, their status and record.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

EXECUTORS = ("local", "slurm")


@dataclass
class Point:
    """One point of the sweep: its parameters, where its outputs go, and how it ended."""

    parameters: dict[str, Any]
    notebook: Path
    record: Path
    status: str = "pending"  # pending | skipped | done | failed
    detail: str = ""


def sweep_folder(chapter_stem: str, profile: str) -> Path:
    from medlab.results import runs_root

    return runs_root() / "sweeps" / f"{chapter_stem}__{profile}"


def plan(source: Path, profile: str, points: Sequence[Mapping[str, Any]]) -> list[Point]:
    """The sweep's points, with their notebook and record paths (named after their parameters)."""
    from medlab.notebooks import default_output
    from medlab.runtime import stable_hash

    folder = sweep_folder(source.stem, profile)
    planned = []
    for parameters in points:
        planned.append(
            Point(
                parameters=dict(parameters),
                notebook=default_output(source, profile, parameters),
                record=folder / f"{stable_hash(dict(parameters), 10)}.json",
            )
        )
    return planned


def run_point(source: str, output: str, record: str, profile: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Execute one point (in the job's process) and write its point record; returns the record."""
    from medlab import notebooks

    executed = notebooks.execute(Path(source), Path(output), profile=profile, parameters=parameters)
    payload = {
        "chapter": Path(source).stem,
        "profile": profile,
        "parameters": dict(parameters),
        "notebook": Path(output).name,
        "wall_s": executed["wall_s"],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    path = Path(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    tmp.replace(path)
    return payload


def make_executor(kind: str, folder: Path, *, partition: str | None, gpus: int, time_min: int, parallel: int):
    """A submitit executor: Slurm (a job array of at most ``parallel`` running points) or local."""
    import submitit

    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor {kind!r}; expected one of {', '.join(EXECUTORS)}")
    executor = submitit.AutoExecutor(folder=folder, cluster=kind)
    options: dict[str, Any] = {"timeout_min": time_min, "gpus_per_node": gpus}
    if kind == "slurm":
        options.update(slurm_array_parallelism=parallel)
        if partition:
            options["slurm_partition"] = partition
    executor.update_parameters(**options)
    return executor


def run(
    source: Path,
    profile: str,
    points: Sequence[Mapping[str, Any]],
    *,
    executor: str = "local",
    parallel: int = 2,
    partition: str | None = None,
    gpus: int = 0,
    time_min: int = 60,
    poll_s: float = 1.0,
) -> list[Point]:
    """Run every point not done yet through ``executor`` and return all points with their status."""
    planned = plan(source, profile, points)
    todo = []
    for point in planned:
        if point.record.exists():
            point.status, point.detail = "skipped", "its point record exists"
        else:
            todo.append(point)
    if todo:
        logs = sweep_folder(source.stem, profile) / "logs"
        pool = make_executor(executor, logs, partition=partition, gpus=gpus, time_min=time_min, parallel=parallel)
        arguments = [(str(source), str(p.notebook), str(p.record), profile, p.parameters) for p in todo]
        if executor == "slurm":  # one job array; Slurm keeps at most `parallel` points running
            with pool.batch():
                jobs = [pool.submit(run_point, *a) for a in arguments]
            for point, job in zip(todo, jobs):
                _collect(point, job)
        else:  # at most `parallel` local processes at a time
            running: list[tuple[Point, Any]] = []
            queue = list(zip(todo, arguments))
            while queue or running:
                while queue and len(running) < max(1, parallel):
                    point, a = queue.pop(0)
                    running.append((point, pool.submit(run_point, *a)))
                finished = [(p, j) for p, j in running if j.done()]
                for point, job in finished:
                    _collect(point, job)
                    running.remove((point, job))
                if running and not finished:
                    time.sleep(poll_s)
    return planned


def _collect(point: Point, job: Any) -> None:
    try:
        job.result()
        point.status, point.detail = "done", f"{job.job_id}"
    except Exception as error:  # noqa: BLE001 - one failed point must not stop the others
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raised = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*:", line)]
        point.status = "failed"
        point.detail = (raised[-1] if raised else lines[0] if lines else type(error).__name__)[:200]


def table(points: Sequence[Point]) -> str:
    """The sweep's outcome, one line per point."""
    from medlab.results import runs_root

    def shown(path: Path) -> str:
        try:
            return str(path.relative_to(runs_root().parent))
        except ValueError:
            return str(path)

    lines = [f"{'status':8s}  {'parameters':40s}  record"]
    for point in points:
        params = ", ".join(f"{k}={v}" for k, v in point.parameters.items())
        where = shown(point.record) if point.status in ("done", "skipped") else point.detail
        lines.append(f"{point.status:8s}  {params:40s}  {where}")
    return "\n".join(lines)
