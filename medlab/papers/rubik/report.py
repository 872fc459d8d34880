"""Chapter 3 report: labels, figures, tables and findings, read from the runs' records (and, for the
figure of a pretrained network's puzzle, from the run folder its record names)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from medlab import metrics, plots, results
from medlab.chapter import ComparisonSpec, GateSpec, TableSpec
from medlab.nets.volumes import VolumeEncoder
from medlab.report import evaluate_all, paired, spread, verdicts_markdown

from .config import INITS, PRETRAINING, TASKS, Settings
from .method import (
    ROTATION_AXES, SiameseOctad, assemble, cut_cubes, make_proxy_batch, permutation_set, random_layout, scramble,
    slot_after_turn, unscramble,
)
from .runs import TaskData, targets_of

INIT_LABELS = {
    "scratch": "from scratch (random encoder)",
    "rubik": "Rubik's cube (both)",
    "rearrangement": "rearrangement only",
    "rotation": "rotation only",
    "supervised": "fine-tuned from scratch (the probe's positive control)",
}
TASK_METRICS = {
    "classification": {"accuracy": "accuracy %", "macro_f1": "macro F1 %", "macro_auroc": "macro AUROC %"},
    "segmentation": {
        "dice/whole tumour": "Dice WT %",
        "dice/tumour core": "Dice TC %",
        "dice/enhancing tumour": "Dice ET %",
        "hd95/whole tumour": "HD95 WT",
        "hd95/tumour core": "HD95 TC",
        "hd95/enhancing tumour": "HD95 ET",
    },
}
HEADLINE = {"classification": "macro_f1", "segmentation": "dice/whole tumour"}  # the score each comparison reads
HEADLINE_NAMES = {"macro_f1": "macro F1", "dice/whole tumour": "whole-tumour Dice"}
VALIDATION = {"classification": "macro_f1", "segmentation": "whole_tumour_dice"}  # what selects the epoch

TABLES = (
    TableSpec(
        experiments=("label_efficiency",),
        filter={"params.task": "classification"},
        by=("params.init", "params.labels"),
        metrics=("accuracy", "macro_f1", "macro_auroc"),
        percent=("accuracy", "macro_f1", "macro_auroc"),
        labels={"params.init": INIT_LABELS},
        order={"params.init": list(INIT_LABELS), "params.labels": None},
        names={"accuracy": "accuracy %", "macro_f1": "macro F1 %", "macro_auroc": "macro AUROC %"},
        caption="Haemorrhage-type classification on head CT volumes by initialisation and labeled volumes.",
    ),
    TableSpec(
        experiments=("label_efficiency",),
        filter={"params.task": "segmentation"},
        by=("params.init", "params.labels"),
        metrics=("dice/whole tumour", "dice/tumour core", "dice/enhancing tumour", "mean_hd95"),
        percent=("dice/whole tumour", "dice/tumour core", "dice/enhancing tumour"),
        labels={"params.init": INIT_LABELS},
        order={"params.init": list(INIT_LABELS), "params.labels": None},
        names={
            "dice/whole tumour": "Dice WT %", "dice/tumour core": "Dice TC %", "dice/enhancing tumour": "Dice ET %",
            "mean_hd95": "mean HD95 (voxels)",
        },
        caption="Brain tumour segmentation (3D U-Net) by initialisation and labeled volumes.",
    ),
)

# The evidence standard (medlab.report): whole-tumour Dice, floor 0 (an empty mask), ceiling 1. Whole
# tumour, because the demo's enhancing rim is a few dozen voxels and its Dice is noise. Rubik's cube
# pretraining counts only when its puzzle is solved on held-out volumes (at least half the
# arrangements, and the rotations at least halfway from chance, 50%, to 100%) and a linear probe of
# its frozen features segments better than the same probe of a random encoder, a probe that itself
# learns (at least 10% whole-tumour Dice: a probe stuck at an empty mask would pass "above" on noise).
FLOOR, CEILING = 0.0, 1.0
PRIMARY = "dice/whole tumour"
COMPARED_LABELS = 40  # labelled volumes of the compared runs (a label count of the demo and paper profiles)
PUZZLE = {"experiment": "pretrain", "params.task": "segmentation", "params.method": "rubik"}
PROBE_LEARNS = 0.1  # whole-tumour Dice a random encoder's probe must reach for the probe gate to mean anything
PRETRAINING_GATES = (
    GateSpec("puzzle arrangement learned on held-out volumes (accuracy >= 50%)", "val_permutation_accuracy", where=PUZZLE, at_least=0.5),
    GateSpec("puzzle rotation learned on held-out volumes (accuracy >= 75%)", "val_rotation_accuracy", where=PUZZLE, at_least=0.75),
    GateSpec(
        f"linear probe of a random encoder learns (whole-tumour Dice >= {PROBE_LEARNS:.0%})", PRIMARY,
        where={"experiment": "probe", "params.init": "scratch"}, at_least=PROBE_LEARNS,
    ),
    GateSpec(
        "linear probe of the Rubik encoder above a random encoder's", PRIMARY,
        where={"experiment": "probe", "params.init": "rubik"}, above={"experiment": "probe", "params.init": "scratch"},
    ),
)
COMPARISONS: tuple[ComparisonSpec, ...] = (
    # Main: the paper's claim, a Rubik's-cube-pretrained 3D U-Net against the same network from scratch.
    ComparisonSpec(
        name=f"Rubik's cube vs from scratch, fine-tuned on {COMPARED_LABELS} volumes", metric=PRIMARY,
        column="params.init", method="rubik", baseline="scratch", floor=FLOOR, ceiling=CEILING, main=True,
        where={"experiment": "label_efficiency", "params.task": "segmentation", "params.labels": COMPARED_LABELS},
        gates=PRETRAINING_GATES,
    ),
    # The gate's own measurement, shown as a comparison: what the frozen features hold.
    ComparisonSpec(
        name=f"Rubik's cube vs random encoder, linear probe on {COMPARED_LABELS} volumes", metric=PRIMARY,
        column="params.init", method="rubik", baseline="scratch", floor=FLOOR, ceiling=CEILING,
        where={"experiment": "probe", "params.task": "segmentation", "params.labels": COMPARED_LABELS},
        gates=PRETRAINING_GATES[:2],
    ),
)


# ---------------------------------------------------------------------------------------------
# The data


def orthogonal_slices(volume: np.ndarray, centre: Sequence[int] | None = None) -> list[np.ndarray]:
    """The three orthogonal slices of a volume (D, H, W) through ``centre`` (default: the middle)."""
    centre = [s // 2 for s in volume.shape] if centre is None else centre
    return [volume[centre[0]], volume[:, centre[1]], volume[:, :, centre[2]]]


def _show(ax, image: np.ndarray, title: str = "", cmap: str = "gray") -> None:
    ax.imshow(np.rot90(image), cmap=cmap, vmin=-1, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def data_table(tasks: Mapping[str, TaskData]) -> pd.DataFrame:
    """The volumes of every split, the channels and the kind of data of each task."""
    return pd.DataFrame(
        {
            task: {split: len(getattr(d, split)) for split in ("unlabeled", "train", "val", "test")}
            | {"channels": d.in_channels, "data": d.info["kind"]}
            for task, d in tasks.items()
        }
    )


def ct_examples_figure(data: TaskData):
    """One head CT volume per class (its first training volume), in three orthogonal slices through
    the volume's centre."""
    import matplotlib.pyplot as plt

    labels = targets_of(data.train).numpy()
    fig, axes = plt.subplots(3, len(data.classes), figsize=(2.6 * len(data.classes), 7.5), squeeze=False)
    for c, name in enumerate(data.classes):
        index = int(np.flatnonzero(labels == c)[0]) if (labels == c).any() else 0
        for r, image in enumerate(orthogonal_slices(data.train[index][0][0].numpy())):
            _show(axes[r, c], image)
        axes[0, c].set_title(name, fontsize=9)
    fig.tight_layout()
    return fig


def mr_example_figure(data: TaskData):
    """The first training MR volume: its contrasts and the tumour labels on FLAIR, in the axial slice
    through the tumour's centre."""
    import matplotlib.pyplot as plt

    volume, mask = data.train[0]
    tumour = np.argwhere(mask.numpy() > 0)
    z = int(np.median(tumour[:, 2])) if len(tumour) else mask.shape[2] // 2
    colours = plt.matplotlib.colors.ListedColormap(["none", "red", "limegreen", "yellow"])
    names = getattr(data.train, "modalities", ("t1", "t1ce", "t2", "flair"))
    fig, axes = plt.subplots(1, len(volume) + 1, figsize=(2.6 * (len(volume) + 1), 2.9))
    for ax, channel, name in zip(axes, volume, names):
        ax.imshow(np.rot90(channel[:, :, z].numpy()), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(name)
        ax.axis("off")
    axes[-1].imshow(np.rot90(volume[-1, :, :, z].numpy()), cmap="gray", vmin=-1, vmax=1)
    axes[-1].imshow(np.rot90(mask[:, :, z].numpy()), cmap=colours, vmin=0, vmax=3, alpha=0.6, interpolation="nearest")
    axes[-1].set_title("labels on FLAIR")
    axes[-1].axis("off")
    fig.tight_layout()
    return fig


def label_summary(tasks: Mapping[str, TaskData]) -> pd.DataFrame:
    """Volumes per class (classification) and voxels per tumour label in % (segmentation), in the
    labelled and test sets."""
    summary = {}
    for task, data in tasks.items():
        for split in ("train", "test"):
            targets = targets_of(getattr(data, split))
            if task == "classification":
                counts = np.bincount(targets.numpy(), minlength=len(data.classes))
                summary[f"CT {split} volumes"] = pd.Series(counts, index=data.classes)
            else:
                share = [(targets == k).float().mean().item() * 100 for k in range(len(data.classes))]
                summary[f"MR {split} voxels %"] = pd.Series(share, index=data.classes).round(2)
    return pd.DataFrame(summary)


# ---------------------------------------------------------------------------------------------
# The proxy task


@torch.no_grad()
def turned_cube_lookalikes(
    volumes: torch.Tensor, cube_size: int, seed: int = 0, starts: torch.Tensor | None = None
) -> pd.DataFrame:
    """Why the full puzzle's rotations are hard to read: how much a turned cube looks like (a) its own
    slot's cube in another head and (b) the cube that the same turn of the whole arrangement would have
    brought into its slot (:func:`~.method.slot_after_turn`), in the same head. Similarity is the
    Pearson correlation of two cubes' voxels (all channels), averaged over the 8 slots and over
    consecutive pairs of ``volumes`` (B, C, S, S, S); cubes are cut at a random layout drawn by ``seed``
    (or at ``starts``). The "no turn" row's first column is the reference: how alike one slot is
    in two heads. When (b) is as high as that reference, a turned cube and the unturned cube from across
    the head explain what the network sees equally well."""
    if volumes.ndim != 5 or len(volumes) < 2:
        raise ValueError(f"need at least two volumes (B, C, S, S, S), got shape {tuple(volumes.shape)}")
    if starts is None:
        generator = torch.Generator(device=volumes.device).manual_seed(seed)
        starts = random_layout(len(volumes), volumes.shape[-1], cube_size, volumes.device, generator)
    raw = cut_cubes(volumes.float(), starts, cube_size)  # (B, 8, C, c, c, c)
    batch = len(volumes)

    def standardised(c: torch.Tensor) -> torch.Tensor:
        c = c.flatten(2) - c.flatten(2).mean(-1, keepdim=True)
        return c / c.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    def turned(axis: str) -> torch.Tensor:
        bits = torch.tensor([axis in (a, "both") for a in ROTATION_AXES], device=volumes.device)
        in_place = torch.arange(8, device=volumes.device).expand(batch, 8)
        return standardised(scramble(raw, in_place, bits.expand(batch, 8, len(ROTATION_AXES))))

    def corr(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a * b).sum(-1).mean())

    cubes = standardised(raw)
    rows = {"no turn": (corr(cubes[:-1], cubes[1:]), float("nan"))}
    for axis in (*ROTATION_AXES, "both"):
        t = turned(axis)
        across = cubes[:, [slot_after_turn(i, axis) for i in range(8)]]
        rows[axis] = (corr(t[:-1], cubes[1:]), corr(t, across))
    return pd.DataFrame.from_dict(
        rows, orient="index",
        columns=["like its own slot in another head", "like the cube the turn brings from across, same head"],
    ).rename_axis("turn")


@torch.no_grad()
def puzzle_figure(
    volume: torch.Tensor, config: Settings, record: Mapping[str, Any] | None = None, channel: int = 0, seed: int = 3
):
    """One volume (C, S, S, S) as the proxy task sees it, in orthogonal slices through the first layer
    of cubes (two voxels inside its inner face, close to the volume's centre): the volume, its cubes
    cut with random gaps, the cubes rearranged and rotated, and the arrangement recovered by inverting
    the labels predicted by the Siamese-Octad of the pretraining ``record`` (saved in its run folder);
    without a record, by inverting the true labels."""
    import matplotlib.pyplot as plt

    permutations = permutation_set(config.num_permutations)
    generator = torch.Generator().manual_seed(seed)
    proxy = make_proxy_batch(volume[None], permutations, config.cube_size, generator)  # the full puzzle
    starts = proxy["starts"]
    classes, rotations = proxy["classes"], proxy["rotations"]
    recovered_by = "true labels"
    if record is not None:
        path = results.run_folder(record) / record["artifacts"]["proxy_model"]
        model = SiameseOctad(VolumeEncoder(volume.shape[0], config.widths), permutations, config.hidden)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.eval()
        permutation_logits, rotation_logits = model(proxy["cubes"])
        classes, rotations = permutation_logits.argmax(1), rotation_logits > 0
        right = int((classes == proxy["classes"]).item()), int((rotations == proxy["rotations"]).sum())
        recovered_by = f"the network's prediction (order {'right' if right[0] else 'wrong'}, {right[1]}/16 turns right)"
    cubes = cut_cubes(volume[None], starts, config.cube_size)
    rows = {
        "volume": volume[None],
        "cut into 2x2x2 cubes (random gaps)": assemble(cubes, starts, config.volume_size),
        "rearranged and rotated (network input)": assemble(proxy["cubes"], starts, config.volume_size),
        f"recovered with {recovered_by}": assemble(
            unscramble(proxy["cubes"], permutations[classes], rotations), starts, config.volume_size
        ),
    }
    centre = (starts[0, :, 0] + config.cube_size - 2).tolist()  # near the inner face of the first layer
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.8 * len(rows)))
    for r, (name, batch) in enumerate(rows.items()):  # columns: slices across the first, second, third axis
        for c, image in enumerate(orthogonal_slices(batch[0, channel].numpy(), centre)):
            _show(axes[r, c], image)
        axes[r, 1].set_title(name, fontsize=9)
    fig.tight_layout()
    return fig


def proxy_curves_figure(records: Sequence[Mapping[str, Any]], task: str):
    """Held-out proxy accuracy per pretraining epoch (mean ± std over seeds), per variant."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for ax, (key, label) in zip(
        axes, (("val/permutation_accuracy", "permutation accuracy"), ("val/rotation_accuracy", "rotation accuracy (per bit)"))
    ):
        series = {}
        for method in PRETRAINING:
            chosen = [
                r for r in results.select(records, experiment="pretrain", task=task, method=method)
                if r["history"] and key in r["history"][0]
            ]
            if chosen:
                series[INIT_LABELS[method]] = results.history(chosen, key)
        plots.curves(series, "pretraining epoch", f"held-out {label}", ax=ax)
    fig.suptitle(f"{task}: proxy task", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The downstream tasks


def downstream_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The fine-tuning rows of ``frame``, with ``init`` (in words) and ``labels`` columns."""
    downstream = frame[frame["experiment"] != "pretrain"].copy()
    downstream["init"] = downstream["params.init"].map(INIT_LABELS)
    downstream["labels"] = downstream["params.labels"]
    return downstream


def task_table(frame: pd.DataFrame, task: str, experiment: str = "label_efficiency") -> pd.DataFrame:
    """The test scores of ``task`` by initialisation and labelled volumes (mean ± std over seeds)."""
    downstream = downstream_frame(frame)
    rows = downstream[(downstream["params.task"] == task) & (downstream["experiment"] == experiment)]
    names = TASK_METRICS[task]
    percent = [m for m in names if not m.startswith("hd95")]
    return results.summarize(rows, list(names), by=("init", "labels"), percent=percent, names=names)


def majority_floor(data: TaskData) -> str:
    """What always answering the test split's most frequent class scores (Markdown): the floor of
    the classification scores."""
    targets = targets_of(data.test).numpy()
    majority = int(np.bincount(targets).argmax())
    floor = metrics.classification_metrics(targets, np.eye(len(data.classes))[np.full(len(targets), majority)])
    return (
        f"For reference, always answering *{data.classes[majority]}* scores accuracy {floor['accuracy']:.1%}, "
        f"macro F1 {floor['macro_f1']:.1%} and macro AUROC {floor.get('macro_auroc', 0.5):.1%} on this test split."
    )


def label_efficiency_figure(frame: pd.DataFrame):
    """The headline score of each task against the number of labeled volumes, per initialisation."""
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if t in set(frame["params.task"])]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = frame[(frame["params.task"] == task) & (frame["experiment"] == "label_efficiency")]
        column = f"metrics.{HEADLINE[task]}"
        for init, group in rows.groupby("params.init", sort=False):
            stats = group.groupby("params.labels")[column].agg(["mean", "std"]).sort_index()
            ax.errorbar(
                stats.index, stats["mean"] * 100, yerr=stats["std"].fillna(0) * 100, capsize=3, marker="o",
                label=INIT_LABELS[init],
            )
        ax.set_xscale("log")
        counts = sorted(int(n) for n in set(rows["params.labels"]))
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlabel("labeled volumes")
        ax.set_ylabel(f"test {HEADLINE_NAMES[HEADLINE[task]]} (%)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def finetune_curves_figure(records: Sequence[Mapping[str, Any]], task: str, labels: int):
    """The validation score per fine-tuning epoch, from scratch and from each pretraining (the
    fine-tuning runs only: the linear probes have their own table)."""
    import matplotlib.pyplot as plt

    key = f"val/{VALIDATION[task]}"
    series = {}
    for init in INITS:
        chosen = [
            r for r in results.select(records, task=task, init=init, labels=labels)
            if r["experiment"] in ("label_efficiency", "ablation")  # fine-tuning runs (not pretraining, not probes)
        ]
        if chosen:
            series[INIT_LABELS[init]] = results.history(chosen, key)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    plots.curves(series, "fine-tuning epoch", f"validation {HEADLINE_NAMES[HEADLINE[task]]}", ax=ax)
    ax.set_title(f"{task}, {labels} labeled volumes", fontsize=10)
    fig.tight_layout()
    return fig


def ablation_table(frame: pd.DataFrame, task: str, labels: int) -> pd.DataFrame:
    """The ablation of ``task`` at ``labels`` labelled volumes: the test headline score of every
    initialisation, beside the held-out puzzle accuracies its encoder reached in pretraining."""
    downstream = downstream_frame(frame)
    rows = downstream[
        (downstream["params.task"] == task)
        & (downstream["params.labels"] == labels)
        & downstream["experiment"].isin(["ablation", "label_efficiency"])
    ]
    pretext = frame[(frame["experiment"] == "pretrain") & (frame["params.task"] == task)]
    pretext = pretext[["params.method", "seed", "metrics.val_permutation_accuracy", "metrics.val_rotation_accuracy"]]
    pretext.columns = ["params.init", "seed", "metrics.puzzle_permutation", "metrics.puzzle_rotation"]
    merged = rows.merge(pretext, on=["params.init", "seed"], how="left")
    metric = HEADLINE[task]
    return results.summarize(
        merged, [metric, "puzzle_permutation", "puzzle_rotation"], by=("init",),
        percent=[metric, "puzzle_permutation", "puzzle_rotation"],
        names={
            metric: f"test {metric.replace('_', ' ')} %", "puzzle_permutation": "puzzle permutation acc. %",
            "puzzle_rotation": "puzzle rotation acc. %",
        },
    )


# ---------------------------------------------------------------------------------------------
# Findings


def puzzle_findings(frame: pd.DataFrame) -> str:
    """The held-out puzzle accuracies of each pretraining (Markdown), mean ± std over seeds."""
    rows = frame[frame["experiment"] == "pretrain"]
    if rows.empty or "metrics.val_permutation_accuracy" not in rows:
        return ""
    lines = ["**The pretrainings on held-out volumes** (mean ± std over seeds):"]
    for (task, method), group in rows.groupby(["params.task", "params.method"], sort=False):
        parts = []
        for column, name in (("val_permutation_accuracy", "arrangement"), ("val_rotation_accuracy", "rotation")):
            values = group.get(f"metrics.{column}", pd.Series(dtype=float)).dropna() * 100
            if len(values):
                parts.append(f"{name} accuracy {values.mean():.1f} ± {values.std(ddof=1) if len(values) > 1 else 0:.1f}%")
        lines.append(f"- {task}, {INIT_LABELS.get(method, method)}: " + ", ".join(parts) + ".")
    return "\n".join(lines)


def findings(frame: pd.DataFrame) -> str:
    """What the runs show, in words that follow the intervals (Markdown): the verdicts of the declared
    :data:`COMPARISONS`, the held-out puzzle accuracies, then every other fine-tuning cell (Rubik's
    cube minus scratch per task and label count, and the ablation), paired by seed."""
    if "params.init" not in frame or "rubik" not in set(frame["params.init"].dropna()):
        return "No fine-tuning runs to compare."
    lines = [verdicts_markdown(evaluate_all(COMPARISONS, frame), INIT_LABELS)]
    puzzles = puzzle_findings(frame)
    if puzzles:
        lines.append(puzzles)
    cells: list[str] = []
    for task in TASKS:
        rows = frame[(frame["params.task"] == task) & (frame["experiment"] == "label_efficiency")]
        metric = PRIMARY if task == "segmentation" else HEADLINE[task]
        for labels, group in rows.groupby("params.labels", sort=True):
            if task == "segmentation" and int(labels) == COMPARED_LABELS:
                continue  # the main comparison above
            d = paired(group, metric, "params.init", "rubik", "scratch")
            if d.n:
                cells.append(f"- {task}, {int(labels)} labeled volumes: Rubik's cube minus scratch, {metric} {spread(d)}.")
        ablated = frame[(frame["params.task"] == task) & (frame["experiment"] == "ablation")]
        if not ablated.empty:
            labels = int(ablated["params.labels"].iloc[0])
            both = frame[(frame["params.task"] == task) & (frame["experiment"].isin(["ablation", "label_efficiency"]))]
            group = both[both["params.labels"] == labels]
            parts = [
                f"{INIT_LABELS[m]} {spread(paired(group, metric, 'params.init', m, 'rubik'))}"
                for m in ("rearrangement", "rotation") if m in set(group["params.init"])
            ]
            if parts:
                cells.append(f"- Ablation ({task}, {labels} labeled volumes), each variant minus the full proxy task, {metric}: " + "; ".join(parts) + ".")
    if cells:
        lines.append("**Other cells** (mean ± std of the paired differences over seeds; descriptive, no verdict):\n" + "\n".join(cells))
    return "\n\n".join(lines)
