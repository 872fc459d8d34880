"""Chapter 3's development runs: the studies behind the demo's design, on the development data seed
(7, never the book's 2019), each a small grid of pretrainings, fine-tunings and linear probes.

Their records ship with the package (``medlab/resources/development/rubik/<study>/``) and the chapter
reads them with :func:`medlab.papers.rubik.development_table`. They were made on one GPU (mixed
precision); to make them again, on any device::

    python -m medlab.papers.rubik.development wide --root /tmp/rubik-development
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from medlab import development
from medlab.data.subsets import RepeatedSubset
from medlab.development import DEVELOPMENT_DATA_SEED, load_studies, study_cli
from medlab.experiment import Job, job
from medlab.report import direction, paired

from .config import BRATS_2018_TRAIN_CASES, PRETRAINING, SLUG, Settings, settings
from .report import INIT_LABELS, PRIMARY
from .runs import SUPERVISED, grid

DEVELOPMENT_ROOT = development.DEVELOPMENT_ROOT / SLUG  # the shipped records
WIDE = (16, 32, 64)
# study: (settings changed from the demo's, fine-tuning initialisations, linear-probe initialisations)
STUDIES: dict[str, tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]] = {
    "narrow": ({"widths": (8, 16, 32), "seeds": tuple(range(8))}, ("scratch", "rearrangement"), ()),
    "wide": ({"widths": WIDE, "seeds": tuple(range(8))}, ("scratch", "rearrangement", "rubik"), ("scratch", "rearrangement", "rubik")),
    "wide8ep": ({"widths": WIDE, "seeds": tuple(range(8)), "finetune_epochs": 8}, ("scratch", "rearrangement"), ()),
    "rotation": ({"widths": WIDE}, ("rotation",), ("rotation",)),
    "k100": ({"widths": WIDE, "num_permutations": 100}, ("rearrangement",), ("rearrangement",)),
    "long48": ({"widths": WIDE, "pretrain_epochs": 48}, ("rubik",), ("rubik",)),
    "lab8": ({"widths": WIDE, "label_counts": (8,), "probe_labels": 8}, ("scratch", "rubik"), ("scratch", "rubik")),
    "lab8b": ({"widths": WIDE, "label_counts": (8,), "probe_labels": 8}, ("rotation", "rearrangement"), ("rotation", "rearrangement")),
    # the probe's positive control: can it read an encoder that certainly holds the tumour?
    "control": ({"widths": WIDE, "seeds": (0, 1, 2)}, ("scratch",), ("scratch", SUPERVISED)),
    # the paper's per-cube intensity normalisation, in place of the demo's one range per volume
    "cube_norm": ({"widths": WIDE, "seeds": (0, 1, 2), "normalise_cubes": True}, (), ("rubik", "rearrangement")),
}
# Why the full puzzle's rotation stays at chance: full-puzzle pretrainings only (three seeds), with the
# rearrangement term's weight (alpha of Eq. 4) and a ramp that makes every turn readable (intensity_ramp)
PUZZLE_STUDIES: dict[str, dict[str, Any]] = {
    "joint": {},
    "rotation_term": {"permutation_weight": 0.0},
    "ramp_joint": {"intensity_ramp": 0.9},
    "ramp_rotation_term": {"intensity_ramp": 0.9, "permutation_weight": 0.0},
    "ramp_alpha01": {"intensity_ramp": 0.9, "permutation_weight": 0.1},
}
# Does the puzzle need a trained encoder? Pretrainings only (three seeds) whose encoder stays at its
# random initialisation while the heads learn (freeze_encoder), for the full puzzle and rearrangement only
FROZEN_STUDIES: dict[str, str] = {"frozen_joint": "rubik", "frozen_rearrangement": "rearrangement"}
# their trained counterparts: the same pretrainings with the encoder learning (seeds 0-2 of these studies)
TRAINED_COUNTERPARTS = {"rubik": "joint", "rearrangement": "wide"}
# reported by their own tables, not the development table (their runs repeat its cells, or have none)
REPORTED_APART = ("control", "cube_norm", *PUZZLE_STUDIES, *FROZEN_STUDIES)
ALL_STUDIES = (*STUDIES, *PUZZLE_STUDIES, *FROZEN_STUDIES)


def study_settings(name: str) -> Settings:
    """The demo's settings on the development data seed with the study's changes (5 seeds unless it
    says otherwise, linear probes on the first three, 200 test volumes; a puzzle study: three seeds)."""
    if name not in ALL_STUDIES:
        raise ValueError(f"unknown development study {name!r}; expected one of {', '.join(ALL_STUDIES)}")
    changes = {"seeds": (0, 1, 2, 3, 4), "probe_seeds": (0, 1, 2), "n_test": 200}
    if name in PUZZLE_STUDIES:
        changes |= {"widths": WIDE, "seeds": (0, 1, 2)} | PUZZLE_STUDIES[name]
    elif name in FROZEN_STUDIES:
        changes |= {"widths": WIDE, "seeds": (0, 1, 2), "freeze_encoder": True}
    else:
        changes |= STUDIES[name][0]
    return settings("demo", data_seed=DEVELOPMENT_DATA_SEED, **changes)


def study_jobs(name: str) -> list[Job]:
    """The study's pretrainings (every proxy task it fine-tunes or probes; a puzzle study: the full
    puzzle only; a frozen-encoder study: its proxy task only), fine-tunings and probes."""
    config = study_settings(name)
    if name in PUZZLE_STUDIES or name in FROZEN_STUDIES:
        method = FROZEN_STUDIES.get(name, "rubik")
        return [job("pretrain", s, stage="pretrain", task="segmentation", method=method) for s in config.seeds]
    _, inits, probes = STUDIES[name]
    labels = config.label_counts[0]
    proxy_tasks = [i for i in dict.fromkeys((*inits, *probes)) if i in PRETRAINING]
    jobs = [job("pretrain", s, stage="pretrain", task="segmentation", method=m) for m in proxy_tasks for s in config.seeds]
    jobs += [
        job("label_efficiency", s, phase=1, stage="finetune", task="segmentation", init=i, labels=labels)
        for i in inits for s in config.seeds
    ]
    jobs += [  # a probe of the fine-tuned encoder waits for that fine-tuning
        job("probe", s, phase=2 if i == SUPERVISED else 1, stage="probe", task="segmentation", init=i, labels=config.probe_labels)
        for i in probes for s in config.probe_seeds
    ]
    return jobs


def run_study(name: str, root: str | Path, device: str | None = None) -> list[dict[str, Any]]:
    """Run one study; its records go to ``<root>/<name>/results/demo/rubik`` (runs beside them)."""
    return development.run_study(SLUG, study_settings(name), study_jobs(name), name, root, device)


# ---------------------------------------------------------------------------------------------
# Their report, read from the records


def development_frame(root: str | Path | None = None) -> pd.DataFrame:
    """The development records (one folder per study under ``root``, default the package's
    ``resources/development/rubik``) as one frame, with ``study`` and ``network`` columns."""
    frame = load_studies(SLUG, root)
    frame["network"] = frame["params.widths"].map(_network)
    return frame


def _network(widths: Any) -> str:
    """``16-32-64`` from the widths of a record (``results.to_frame`` writes a list as ``16,32,64``)."""
    return "-".join(str(int(c)) for c in (widths.split(",") if isinstance(widths, str) else widths))


def _puzzle_accuracy(pretrained: pd.DataFrame) -> str:
    """Held-out arrangement / rotation accuracy (%, mean over seeds) of pretraining records."""
    parts = []
    for key, name in (("val_permutation_accuracy", "arrangement"), ("val_rotation_accuracy", "rotation")):
        column = f"metrics.{key}"
        if column in pretrained and pretrained[column].notna().any():
            parts.append(f"{name} {100 * pretrained[column].mean():.0f}")
    return ", ".join(parts)


NO_TUMOUR = 0.1  # a run whose test whole-tumour Dice is below this found no tumour


def development_cells(frame: pd.DataFrame | None = None, metric: str = PRIMARY) -> list[dict[str, Any]]:
    """The cells of :func:`development_table`, unformatted: per fine-tuning schedule (network, labels,
    epochs), the scratch cell, then each pretrained cell with its paired difference (``diff``, a
    :class:`medlab.report.Paired`), its puzzle accuracy and its probe beside the random encoder's."""
    frame = development_frame() if frame is None else frame
    frame = frame[~frame["study"].isin(REPORTED_APART)]
    finetuned = frame[frame["experiment"] == "label_efficiency"]
    pretrain = frame[frame["experiment"] == "pretrain"]
    schedule = ["network", "params.labels", "params.finetune_epochs"]
    # a pretraining differs from the demo's by its proxy task and these settings
    knobs = {"params.num_permutations": "K = {:.0f}", "params.pretrain_epochs": "{:.0f} pretraining epochs"}
    defaults = {k: pretrain[k].mode().iloc[0] for k in knobs if k in pretrain}
    score = f"metrics.{metric}"
    cells = []
    for key, scratch in finetuned[finetuned["params.init"] == "scratch"].groupby(schedule, sort=False):
        scratch = scratch.drop_duplicates("seed")  # the same cell may be repeated by several studies
        where = dict(zip(schedule, key))
        same = (finetuned[schedule] == pd.Series(where)).all(axis=1)
        probes = frame[(frame["experiment"] == "probe") & (frame[schedule] == pd.Series(where)).all(axis=1)]
        random_probe = probes[probes["params.init"] == "scratch"].drop_duplicates("seed")[score]
        base = {"network": key[0], "labels": int(key[1]), "epochs": int(key[2]), "random_probe": random_probe.mean()}
        cells.append(base | {
            "init": "scratch", "changed": [], "puzzle": "", "probe": random_probe.mean(), "mean": scratch[score].mean(),
            "no_tumour": int((scratch[score] < NO_TUMOUR).sum()), "runs": len(scratch), "diff": None, "rank": 0,
        })
        for (study, init), cell in finetuned[same & (finetuned["params.init"] != "scratch")].groupby(["study", "params.init"], sort=False):
            pretrained = pretrain[(pretrain["study"] == study) & (pretrain["params.method"] == init)]
            changed = [fmt.format(pretrained[k].iloc[0]) for k, fmt in knobs.items() if k in defaults and pretrained[k].iloc[0] != defaults[k]]
            both = pd.concat([cell, scratch[scratch["seed"].isin(cell["seed"])]])
            own_probe = probes[(probes["study"] == study) & (probes["params.init"] == init)][score]
            cells.append(base | {
                "init": init, "changed": changed, "puzzle": _puzzle_accuracy(pretrained), "probe": own_probe.mean(),
                "mean": cell[score].mean(), "no_tumour": int((cell[score] < NO_TUMOUR).sum()), "runs": len(cell),
                "diff": paired(both, metric, "params.init", init, "scratch"),
                "rank": 1 + list(INIT_LABELS).index(init) + 10 * len(changed),
            })
    # the widest network, most labels and longest schedule first; in each block from scratch, then the
    # proxy tasks at the demo's settings, then those with a setting changed
    return sorted(cells, key=lambda c: (-len(c["network"]), -c["labels"], -c["epochs"], c["rank"]))


def _percent(value: float) -> str:
    return "" if pd.isna(value) else f"{100 * value:.1f}"


def development_table(frame: pd.DataFrame | None = None, metric: str = PRIMARY) -> pd.DataFrame:
    """Every pretrained fine-tuning cell of the development runs against training from scratch with the
    same network, labels and fine-tuning schedule (paired by seed, 95% t-interval), beside its held-out
    puzzle accuracy and its linear probe (the random encoder's in the scratch row); and the runs that
    found no tumour (test whole-tumour Dice below 10%)."""
    rows = []
    for c in development_cells(frame, metric):
        d = c["diff"]
        rows.append({
            "network": c["network"], "labelled volumes": c["labels"], "fine-tuning epochs": c["epochs"],
            "initialisation": ", ".join(["from scratch" if c["init"] == "scratch" else INIT_LABELS[c["init"]], *c["changed"]]),
            "puzzle accuracy %": c["puzzle"], "probe Dice %": _percent(c["probe"]), "fine-tuned Dice %": _percent(c["mean"]),
            "minus scratch, points [95% CI]": "" if d is None else f"{100 * d.mean:+.1f} [{100 * d.ci95[0]:+.1f}, {100 * d.ci95[1]:+.1f}]",
            "no tumour found": f"{c['no_tumour']} of {c['runs']}",
            "seeds": c["runs"] if d is None else d.n,
        })
    return pd.DataFrame(rows).set_index(["network", "labelled volumes", "fine-tuning epochs", "initialisation"])


def development_findings(frame: pd.DataFrame | None = None, metric: str = PRIMARY) -> str:
    """What the development runs show, in words that follow the intervals (:func:`medlab.report.direction`:
    better or worse only when the 95% interval excludes zero)."""
    lines = []
    for c in development_cells(frame, metric):
        where = f"{c['network']} network, {c['labels']} labelled volumes, {c['epochs']} fine-tuning epochs"
        if c["diff"] is None:
            lines.append(
                f"- **{where}**: from scratch {_percent(c['mean'])}% test whole-tumour Dice; "
                f"{c['no_tumour']} of {c['runs']} runs found no tumour."
            )
            continue
        d, name = c["diff"], ", ".join([INIT_LABELS[c["init"]], *c["changed"]])
        lo, hi = d.ci95
        words = {"better": "better than", "worse": "worse than"}.get(
            direction(d.ci95), f"no difference detectable at ±{100 * d.half_width:.1f} points from"
        )
        probe = ""
        if not pd.isna(c["probe"]) and not pd.isna(c["random_probe"]):
            side = "above" if c["probe"] > c["random_probe"] else "below"
            probe = f"; its probe {side} the random encoder's ({_percent(c['probe'])} vs {_percent(c['random_probe'])})"
        lines.append(f"  - {name}: {words} scratch, {100 * d.mean:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}]{probe}.")
    return "\n".join(lines)


def probe_control_table(frame: pd.DataFrame | None = None, metric: str = PRIMARY) -> pd.DataFrame:
    """The probe's positive control, per study that ran it: the linear probe of the random encoder
    beside that of the encoder fine-tuned from scratch on the same labelled volumes and seed (test
    whole-tumour Dice, %), and their paired difference (95% t-interval over seeds)."""
    frame = development_frame() if frame is None else frame
    probes = frame[frame["experiment"] == "probe"]
    score = f"metrics.{metric}"
    rows = []
    for study, runs in probes[probes["params.init"] == SUPERVISED].groupby("study", sort=False):
        both = probes[(probes["study"] == study) & probes["params.init"].isin(["scratch", SUPERVISED])]
        d = paired(both, metric, "params.init", SUPERVISED, "scratch")
        random_probe = both[both["params.init"] == "scratch"]
        rows.append({
            "study": study, "network": runs["network"].iloc[0], "labelled volumes": int(runs["params.labels"].iloc[0]),
            "random encoder's probe %": _percent(random_probe[score].mean()),
            "fine-tuned encoder's probe %": _percent(runs[score].mean()),
            "difference, points [95% CI]": f"{100 * d.mean:+.1f} [{100 * d.ci95[0]:+.1f}, {100 * d.ci95[1]:+.1f}]",
            "seeds": d.n,
        })
    if not rows:
        raise FileNotFoundError("no development study ran the probe's positive control (a 'supervised' probe)")
    return pd.DataFrame(rows).set_index("study")


def puzzle_weights_table(frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """The puzzle studies: per study, the intensity ramp and the rearrangement term's weight (alpha of
    Eq. 4; the rotation term's beta is 1), and the held-out arrangement and rotation accuracy (%) of
    each seed's full-puzzle pretraining, with the rotation's mean."""
    frame = development_frame() if frame is None else frame
    rows = []
    for name in PUZZLE_STUDIES:
        runs = frame[(frame["study"] == name) & (frame["experiment"] == "pretrain")].sort_values("seed")
        if runs.empty:
            raise FileNotFoundError(f"no records of the puzzle study {name!r}")
        rows.append({
            "study": name, "intensity ramp": f"±{runs['params.intensity_ramp'].iloc[0]:g}",
            "rearrangement weight α": f"{runs['params.permutation_weight'].iloc[0]:g}",
            "arrangement % per seed": ", ".join(f"{100 * v:.0f}" for v in runs["metrics.val_permutation_accuracy"]),
            "rotation % per seed": ", ".join(f"{100 * v:.0f}" for v in runs["metrics.val_rotation_accuracy"]),
            "rotation % mean": round(100 * runs["metrics.val_rotation_accuracy"].mean(), 1),
        })
    return pd.DataFrame(rows).set_index("study")


def _device(name: str) -> str:
    """A record's device name in words: a CUDA device's own name (e.g. NVIDIA H200), or CPU (a record
    made on a CPU names its architecture, e.g. x86_64)."""
    return name if name.startswith("NVIDIA") else "CPU"


def _per_seed(values: pd.Series) -> str:
    return ", ".join(f"{100 * v:.0f}" for v in values)


def _interval(d: Any) -> str:
    return f"{100 * d.mean:+.1f} [{100 * d.ci95[0]:+.1f}, {100 * d.ci95[1]:+.1f}]"


def frozen_encoder_table(frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Does the puzzle need a trained encoder? Per proxy task (the full puzzle; rearrangement only), the
    held-out arrangement accuracy (%) of each seed's pretraining with the encoder learning and with its
    weights frozen at their random initialisation (only the fully connected heads learn; batch-norm
    statistics still follow the cubes), and the paired difference trained - frozen (95% t-interval over
    seeds). The trained runs are the same seeds of the studies in :data:`TRAINED_COUNTERPARTS`."""
    frame = development_frame() if frame is None else frame
    pretrained = frame[frame["experiment"] == "pretrain"]
    rows = []
    for study, method in FROZEN_STUDIES.items():
        frozen = pretrained[(pretrained["study"] == study) & (pretrained["params.method"] == method)].sort_values("seed")
        if frozen.empty:
            raise FileNotFoundError(f"no records of the frozen-encoder study {study!r}")
        trained = pretrained[
            (pretrained["study"] == TRAINED_COUNTERPARTS[method]) & (pretrained["params.method"] == method)
            & pretrained["seed"].isin(frozen["seed"])
        ].sort_values("seed")
        both = pd.concat([trained.assign(encoder="trained"), frozen.assign(encoder="frozen")])
        d = paired(both, "val_permutation_accuracy", "encoder", "trained", "frozen")
        for label, runs in (("trained (the puzzle as the chapter runs it)", trained), ("frozen at its random weights", frozen)):
            rotation = runs.get("metrics.val_rotation_accuracy")
            rows.append({
                "proxy task": INIT_LABELS[method], "encoder": label,
                "arrangement % per seed": _per_seed(runs["metrics.val_permutation_accuracy"]),
                "arrangement % mean": _percent(runs["metrics.val_permutation_accuracy"].mean()),
                "rotation % mean": "" if rotation is None or rotation.isna().all() else _percent(rotation.mean()),
                "trained minus frozen, points [95% CI]": _interval(d) if runs is trained else "",
                "device": ", ".join(sorted(runs["device"].dropna().map(_device).unique())),
            })
    return pd.DataFrame(rows).set_index(["proxy task", "encoder"])


def cube_normalisation_table(frame: pd.DataFrame | None = None, metric: str = PRIMARY) -> pd.DataFrame:
    """The paper's per-cube intensity normalisation against the demo's one range per volume: per proxy
    task, the held-out puzzle accuracy and the linear probe (test whole-tumour Dice, %) of the encoders
    pretrained each way (studies ``wide`` and ``cube_norm``, the same seeds), beside the random
    encoder's probe, and each probe's paired difference to it (95% t-interval over seeds)."""
    frame = development_frame() if frame is None else frame
    probes, pretrained = frame[frame["experiment"] == "probe"], frame[frame["experiment"] == "pretrain"]
    seeds = probes.loc[probes["study"] == "cube_norm", "seed"].unique()
    if not len(seeds):
        raise FileNotFoundError("no records of the study 'cube_norm'")
    score = f"metrics.{metric}"
    random_probe = probes[(probes["study"] == "wide") & (probes["params.init"] == "scratch") & probes["seed"].isin(seeds)]
    rows = [{
        "proxy task": INIT_LABELS["scratch"], "intensities": "", "puzzle accuracy %": "",
        "probe Dice %": _percent(random_probe[score].mean()), "minus random encoder, points [95% CI]": "",
        "seeds": len(random_probe),
    }]
    for method in ("rubik", "rearrangement"):
        for intensities, study in (("one range per volume (the demo)", "wide"), ("each cube to [-1, 1] (the paper)", "cube_norm")):
            own = probes[(probes["study"] == study) & (probes["params.init"] == method) & probes["seed"].isin(seeds)]
            d = paired(pd.concat([own, random_probe]), metric, "params.init", method, "scratch")
            pretraining = pretrained[(pretrained["study"] == study) & (pretrained["params.method"] == method) & pretrained["seed"].isin(seeds)]
            rows.append({
                "proxy task": INIT_LABELS[method], "intensities": intensities,
                "puzzle accuracy %": _puzzle_accuracy(pretraining), "probe Dice %": _percent(own[score].mean()),
                "minus random encoder, points [95% CI]": _interval(d), "seeds": d.n,
            })
    return pd.DataFrame(rows).set_index(["proxy task", "intensities"])


def paper_budget(frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """A rough estimate of the GPU hours of the paper profile's segmentation grid on BraTS 2018 at 64
    voxels (its 199 training cases are the pretraining pool): the median throughput the development
    runs measured on one GPU at the demo's 32-voxel volumes (pretraining volumes/s, fine-tuning
    samples/s), divided by the ratio of voxels per volume, times the volumes the paper profile's runs
    see. It leaves out the paper profile's fourth encoder stage (more cost) and that a GPU is less
    loaded by small volumes (less cost per voxel at 64)."""
    frame = development_frame() if frame is None else frame
    gpu = frame[frame["device"].map(_device) != "CPU"]
    if gpu.empty:
        raise FileNotFoundError("no development record was measured on a GPU")
    paper, demo = settings("paper"), settings("demo")
    scale = (paper.volume_size / demo.volume_size) ** 3

    def volumes(item: Job) -> int:  # what one run of the paper profile's grid sees
        if item.stage == "pretrain":
            return BRATS_2018_TRAIN_CASES * paper.pretrain_epochs
        labelled = range(item.labels)
        return paper.finetune_epochs * len(RepeatedSubset(labelled, labelled, paper.finetune_epoch_samples))

    jobs = [j for j in grid(paper) if j.task == "segmentation"]
    stages = {"pretraining": ("pretrain", True), "fine-tuning and probes": ("label_efficiency", False)}
    rows = []
    for name, (experiment, pretraining) in stages.items():
        runs = [j for j in jobs if (j.stage == "pretrain") == pretraining]
        seen = sum(volumes(j) for j in runs)
        measured = float(gpu.loc[gpu["experiment"] == experiment, "timing.samples_per_s"].median())
        rows.append({
            "stage": name, "runs": len(runs), "volumes seen": seen,
            "measured at 32 voxels, volumes/s": round(measured), "estimated at 64 voxels, volumes/s": round(measured / scale),
            "GPU hours": round(seen / (measured / scale) / 3600, 1),
        })
    total = {k: "" for k in rows[0]} | {"runs": sum(r["runs"] for r in rows), "GPU hours": round(sum(r["GPU hours"] for r in rows), 1)}
    return pd.DataFrame([*rows, total | {"stage": "total"}], dtype=object).set_index("stage")


def main(argv: list[str] | None = None) -> None:
    study_cli(__doc__.splitlines()[0], ALL_STUDIES, run_study, argv)


if __name__ == "__main__":
    main()
