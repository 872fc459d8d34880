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
from medlab.development import DEVELOPMENT_DATA_SEED, load_studies, study_cli
from medlab.experiment import Job, job
from medlab.report import direction, paired

from .config import PRETRAINING, SLUG, Settings, settings
from .report import INIT_LABELS, PRIMARY
from .runs import SUPERVISED

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
# reported by their own tables, not the development table (their runs repeat its cells, or have none)
REPORTED_APART = ("control", *PUZZLE_STUDIES)


def study_settings(name: str) -> Settings:
    """The demo's settings on the development data seed with the study's changes (5 seeds unless it
    says otherwise, linear probes on the first three, 200 test volumes; a puzzle study: three seeds)."""
    if name not in STUDIES and name not in PUZZLE_STUDIES:
        raise ValueError(f"unknown development study {name!r}; expected one of {', '.join([*STUDIES, *PUZZLE_STUDIES])}")
    changes = {"seeds": (0, 1, 2, 3, 4), "probe_seeds": (0, 1, 2), "n_test": 200}
    if name in PUZZLE_STUDIES:
        changes |= {"widths": WIDE, "seeds": (0, 1, 2)} | PUZZLE_STUDIES[name]
    else:
        changes |= STUDIES[name][0]
    return settings("demo", data_seed=DEVELOPMENT_DATA_SEED, **changes)


def study_jobs(name: str) -> list[Job]:
    """The study's pretrainings (every proxy task it fine-tunes or probes; a puzzle study: the full
    puzzle only), fine-tunings and probes."""
    config = study_settings(name)
    if name in PUZZLE_STUDIES:
        return [job("pretrain", s, stage="pretrain", task="segmentation", method="rubik") for s in config.seeds]
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


def main(argv: list[str] | None = None) -> None:
    study_cli(__doc__.splitlines()[0], [*STUDIES, *PUZZLE_STUDIES], run_study, argv)


if __name__ == "__main__":
    main()
