"""CCL-Net: learning inter-class visual correlations as soft labels (Wei et al., MICCAI 2020, arXiv:2007.06371).

The official code is not public and only the paper's abstract and introduction could be read, so this
is a reconstruction from the abstract's description; every choice is listed in the chapter's deviation
ledger. The pieces, with the equation numbers used in chapter 1:

* Eq. (1) the CCL block embeds a sample's pooled backbone feature ``h`` on the unit sphere,
  ``z = P h / ||P h||``, next to one learnable embedding per class, ``e_k = E_k / ||E_k||``.
* Eq. (2) distance metric learning: ``p(k | x) = softmax_k(s <z, e_k>)``, ``L_dml = -log p(y | x)``.
* Eq. (3) the class-correlation matrix: ``R_ij = <e_i, e_j>``, the cosine of the angle between two
  class embeddings (the geometric reading of a correlation coefficient).
* Eq. (4) soft labels, generated on the fly: ``q_i = softmax_j(R_ij / tau)``.
* Eq. (5) the correlation loss: class geometry must match sample geometry,
  ``L_cc = mean_x mean_{j != y} (R_yj - sg<z, e_j>)^2``.
* Eq. (6) the classifier learns from the soft labels: ``L_cls = -sum_j sg(q_yj) log softmax(o)_j``.
* Eq. (7) ``L = L_cls + lambda_dml L_dml + lambda_cc L_cc``, trained end to end.

``sg`` is stop-gradient.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medlab import data as datasets
from medlab import engine, metrics, runtime
from medlab.augment import random_dihedral
from medlab.experiment import RunOutput, fingerprint, run_once
from medlab.nets.backbones import IMAGENET_MEAN, IMAGENET_STD, backbone

CHAPTER = "ccl"

METHODS = {
    "hard": "cross-entropy on one-hot labels",
    "label_smoothing": "cross-entropy on uniformly smoothed labels",
    "ccl": "CCL-Net: soft labels from learned class correlations + DML + correlation loss",
    "ccl_no_cc": "CCL-Net without the correlation loss (Eq. 5)",
    "ccl_no_soft": "CCL block as an auxiliary head only: hard labels for the classifier",
    "oracle_soft": "label smoothing whose mass follows the true class similarity (synthetic data only)",
}


@dataclass(frozen=True)
class Settings:
    """Everything a chapter-1 run depends on; one instance per profile in :data:`PROFILES`."""

    image_size: int
    n_train: int
    n_val: int
    n_test: int
    attribute_noise: float
    backbones: tuple[str, ...]
    methods: tuple[str, ...]
    ablation_backbone: str
    ablation_methods: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    pretrained: bool
    embedding_dim: int = 128
    dml_scale: float = 16.0
    soft_temperature: float = 0.25
    lambda_dml: float = 1.0
    lambda_cc: float = 16.0  # = dml_scale: its gradient on the class embeddings matches DML's in size
    label_smoothing: float = 0.1
    balanced_sampling: bool = True
    workers: int = 0  # parallel training processes for the grid; 0 = automatic
    num_workers: int = 0  # data-loading processes per training process
    data_seed: int = 2018


_DEMO = Settings(
    image_size=32,
    n_train=1400,
    n_val=600,
    n_test=1400,
    attribute_noise=0.14,
    backbones=("shufflenet_v2_x1_0", "mobilenet_v3_small"),
    methods=("hard", "label_smoothing", "ccl"),
    ablation_backbone="shufflenet_v2_x1_0",
    ablation_methods=("ccl_no_cc", "ccl_no_soft", "oracle_soft"),
    seeds=(0, 1, 2),
    epochs=8,
    batch_size=32,
    lr=3e-3,
    weight_decay=5e-4,
    pretrained=False,
)

PROFILES: dict[str, Settings] = {
    # the demo's grid at a few batches, in one process: every code path in seconds
    "smoke": dataclasses.replace(_DEMO, n_train=96, n_val=48, n_test=64, seeds=(0,), epochs=2, workers=1),
    "demo": _DEMO,
    "paper": Settings(  # ISIC 2018 from data_dir; the synthetic-only fields are unused
        image_size=224,
        n_train=0,
        n_val=0,
        n_test=0,
        attribute_noise=0.0,
        backbones=("resnet18", "resnet50", "densenet121"),
        methods=("hard", "label_smoothing", "ccl"),
        ablation_backbone="resnet50",
        ablation_methods=("ccl_no_cc", "ccl_no_soft"),
        seeds=(0, 1, 2),
        epochs=30,
        batch_size=32,
        lr=1e-4,
        weight_decay=1e-4,
        pretrained=True,
        num_workers=2,
    ),
}


def settings(profile: str | None = None, **overrides: Any) -> Settings:
    """The settings of ``profile`` (default: ``$MEDLAB_PROFILE`` or demo) with overrides applied."""
    return runtime.settings_for(PROFILES, runtime.resolve_profile(profile), **overrides)


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class ChapterData:
    train: Any
    val: Any
    test: Any
    classes: tuple[str, ...]
    similarity: np.ndarray | None  # ground-truth class similarity (synthetic data only)
    info: dict[str, Any]


_DATA_CACHE: dict[tuple, ChapterData] = {}


def load_data(config: Settings, data_dir: str | Path | None = None) -> ChapterData:
    """ISIC 2018 Task 3 from ``data_dir``, or its synthetic look-alike when ``data_dir`` is None.

    Loaded once per process and configuration (the grid's runs share it).
    """
    key = (
        config.image_size,
        config.n_train,
        config.n_val,
        config.n_test,
        config.attribute_noise,
        config.data_seed,
        None if data_dir is None else str(Path(data_dir).expanduser().resolve()),
    )
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = _load_data(config, data_dir)
    return _DATA_CACHE[key]


def _load_data(config: Settings, data_dir: str | Path | None) -> ChapterData:
    common = dict(data_dir=data_dir, image_size=config.image_size)
    if data_dir is None:
        common.update(attribute_noise=config.attribute_noise, seed=config.data_seed)
        sizes = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
        splits = {s: datasets.load("isic2018", s, n=sizes[s], **common) for s in sizes}
        from medlab.data.synth.skin_lesions import similarity_matrix

        similarity = similarity_matrix()
    else:
        splits = {s: datasets.load("isic2018", s, **common) for s in ("train", "val", "test")}
        similarity = None
    info = {split: ds.info for split, ds in splits.items()}
    info["kind"] = info["train"]["kind"]
    return ChapterData(
        splits["train"], splits["val"], splits["test"], tuple(splits["train"].classes), similarity, info
    )


# ---------------------------------------------------------------------------------------------
# Model


class CCLBlock(nn.Module):
    """The plug-in CCL block: sample and class embeddings on the unit sphere (Eq. 1)."""

    def __init__(self, in_features: int, num_classes: int, embedding_dim: int = 128):
        super().__init__()
        self.project = nn.Linear(in_features, embedding_dim)
        self.class_embeddings = nn.Parameter(torch.randn(num_classes, embedding_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``z = P h / ||P h||`` (Eq. 1)."""
        return F.normalize(self.project(features), dim=-1)

    def class_vectors(self) -> torch.Tensor:
        """``e_k = E_k / ||E_k||`` (Eq. 1)."""
        return F.normalize(self.class_embeddings, dim=-1)


class Classifier(nn.Module):
    """A torchvision backbone with a linear classifier and, optionally, the CCL block beside it."""

    def __init__(
        self,
        backbone_name: str,
        num_classes: int,
        pretrained: bool = False,
        with_ccl: bool = False,
        embedding_dim: int = 128,
    ):
        super().__init__()
        self.backbone = backbone(backbone_name, pretrained=pretrained)
        self.head = nn.Linear(self.backbone.out_features, num_classes)
        self.ccl = CCLBlock(self.backbone.out_features, num_classes, embedding_dim) if with_ccl else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone((images - self.mean) / self.std)
        out = {"logits": self.head(features)}
        if self.ccl is not None:
            out["embedding"] = self.ccl(features)
        return out


# ---------------------------------------------------------------------------------------------
# The paper's equations, one function each


def dml_logits(embedding: torch.Tensor, class_vectors: torch.Tensor, scale: float) -> torch.Tensor:
    """Eq. (2): the logits ``s <z, e_k>`` of the distance-metric-learning softmax."""
    return scale * embedding @ class_vectors.t()


def dml_loss(
    embedding: torch.Tensor, class_vectors: torch.Tensor, labels: torch.Tensor, scale: float
) -> torch.Tensor:
    """Eq. (2): ``L_dml = -log softmax_y(s <z, e_k>)``, averaged over the batch."""
    return F.cross_entropy(dml_logits(embedding, class_vectors, scale), labels)


def class_correlation(class_vectors: torch.Tensor) -> torch.Tensor:
    """Eq. (3): ``R_ij = <e_i, e_j>``, the cosine between unit class embeddings (``R_ii = 1``)."""
    return class_vectors @ class_vectors.t()


def soft_labels(correlation: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. (4): row ``i`` is the soft label of class ``i``, ``softmax_j(R_ij / tau)``."""
    if temperature <= 0:
        raise ValueError(f"the soft-label temperature must be positive, got {temperature}")
    return torch.softmax(correlation / temperature, dim=1)


def correlation_loss(
    embedding: torch.Tensor, class_vectors: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Eq. (5): class-to-class cosines must match the cosines of the class's samples to other classes.

    ``L_cc = mean_x mean_{j != y} (R_yj - sg<z, e_j>)^2``. The gradient reaches only the class
    embeddings: samples of class ``y`` that look like class ``j`` pull ``e_y`` and ``e_j`` together.
    """
    k = class_vectors.shape[0]
    correlation = class_correlation(class_vectors)[labels]  # (N, K): R_y.
    target = (embedding @ class_vectors.t()).detach()  # (N, K): <z, e_j>
    off = ~F.one_hot(labels, k).bool()
    return ((correlation - target) ** 2)[off].view(-1, k - 1).mean()


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. (6): ``-sum_j q_j log softmax(o)_j`` averaged over the batch (targets are not differentiated)."""
    return -(targets.detach() * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def oracle_soft_labels(similarity: np.ndarray, epsilon: float) -> torch.Tensor:
    """A reference, not part of CCL-Net: label smoothing whose mass follows the true similarity.

    Row ``i`` keeps ``1 - epsilon`` on class ``i`` and spreads ``epsilon`` over the other classes in
    proportion to their true similarity to ``i``: the same mass as label smoothing, placed where the
    correlations say. It asks whether correlation-shaped soft labels help at all on the data.
    """
    if not 0 <= epsilon < 1:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
    s = torch.as_tensor(similarity, dtype=torch.float32).clone()
    s.fill_diagonal_(0)
    return (1 - epsilon) * torch.eye(len(s)) + epsilon * s / s.sum(dim=1, keepdim=True)


# ---------------------------------------------------------------------------------------------
# Training


def make_loss(method: str, config: Settings, oracle: torch.Tensor | None = None) -> Callable:
    """The training loss of ``method`` as ``loss_fn(model, (images, labels)) -> dict`` for the engine.

    ``oracle`` (method ``oracle_soft`` only) holds the soft label of each class, on the training device.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if method == "oracle_soft" and oracle is None:
        raise ValueError(
            "oracle_soft needs the true class similarity, which only the synthetic data has; "
            "drop it from ablation_methods"
        )
    uses_ccl = method.startswith("ccl")

    def loss_fn(model: Classifier, batch) -> dict[str, torch.Tensor]:
        images, labels = batch
        out = model(random_dihedral(images))
        logits = out["logits"].float()
        parts: dict[str, torch.Tensor] = {}
        if method == "hard":
            parts["cls"] = F.cross_entropy(logits, labels)
        elif method == "label_smoothing":
            parts["cls"] = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
        elif method == "oracle_soft":
            parts["cls"] = soft_cross_entropy(logits, oracle[labels])
        if uses_ccl:
            z = out["embedding"].float()
            e = model.ccl.class_vectors()
            if method == "ccl_no_soft":
                parts["cls"] = F.cross_entropy(logits, labels)
            else:
                q = soft_labels(class_correlation(e), config.soft_temperature)
                parts["cls"] = soft_cross_entropy(logits, q[labels])
            parts["dml"] = dml_loss(z, e, labels, config.dml_scale)
            total = parts["cls"] + config.lambda_dml * parts["dml"]
            if method != "ccl_no_cc":
                parts["cc"] = correlation_loss(z, e, labels)
                total = total + config.lambda_cc * parts["cc"]
        else:
            total = parts["cls"]
        return {"loss": total, **parts}

    return loss_fn


def predict_probabilities(
    model: Classifier, dataset, device: torch.device, batch_size: int = 256, num_workers: int = 0
) -> torch.Tensor:
    return engine.predict(
        model,
        dataset,
        forward=lambda m, batch: torch.softmax(m(batch[0])["logits"].float(), dim=1),
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
    )


def learned_correlations(model: Classifier) -> dict[str, np.ndarray]:
    """The class-similarity matrices a trained model holds: ``R`` (Eq. 3) when it has a CCL block,
    and, for every model, the cosines between the classifier's weight vectors (a common probe)."""
    with torch.no_grad():
        found = {"classifier_cosine": metrics.cosine_similarity_matrix(model.head.weight.cpu())}
        if model.ccl is not None:
            found["ccl_correlation"] = class_correlation(model.ccl.class_vectors()).cpu().numpy()
    return found


def run_params(
    config: Settings, backbone_name: str, method: str, data_dir: str | Path | None
) -> dict[str, Any]:
    """The parameters that identify a run (the grid-level lists are replaced by this run's choice)."""
    params = dataclasses.asdict(config)
    for grid_field in ("backbones", "methods", "ablation_backbone", "ablation_methods", "seeds", "workers"):
        params.pop(grid_field)
    params.update(backbone=backbone_name, method=method, data_dir=None if data_dir is None else str(data_dir))
    return params


def train_and_evaluate(
    config: Settings,
    chapter_data: ChapterData,
    *,
    backbone_name: str,
    method: str,
    seed: int,
    device: torch.device,
    run_dir: Path,
    run_fingerprint: str,
    progress: bool | None = None,
) -> RunOutput:
    """Train one (backbone, method, seed) on the training split, select the epoch by validation
    balanced accuracy, and evaluate on the test split."""
    runtime.seed_everything(seed)
    num_classes = len(chapter_data.classes)
    model = Classifier(
        backbone_name,
        num_classes,
        pretrained=config.pretrained,
        with_ccl=method.startswith("ccl"),
        embedding_dim=config.embedding_dim,
    )
    oracle = None
    if method == "oracle_soft" and chapter_data.similarity is not None:
        oracle = oracle_soft_labels(chapter_data.similarity, config.label_smoothing).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * (len(chapter_data.train) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=steps, pct_start=0.2
    )
    val_labels = chapter_data.val.targets

    def evaluate(m: Classifier) -> dict[str, float]:
        probs = predict_probabilities(m, chapter_data.val, device, num_workers=config.num_workers)
        scores = metrics.classification_metrics(val_labels, probs, num_classes)
        return {
            "balanced_accuracy": scores["balanced_accuracy"],
            "accuracy": scores["accuracy"],
            "nll": scores["nll"],
        }

    fit = engine.fit(
        model,
        chapter_data.train,
        loss_fn=make_loss(method, config, oracle),
        optimizer=optimizer,
        epochs=config.epochs,
        batch_size=config.batch_size,
        run_dir=run_dir,
        device=device,
        seed=seed,
        sample_weights=engine.class_balanced_weights(chapter_data.train.targets)
        if config.balanced_sampling
        else None,
        evaluate=evaluate,
        monitor="balanced_accuracy",
        scheduler=scheduler,
        scheduler_interval="step",
        channels_last=device.type == "cuda",
        num_workers=config.num_workers,
        fingerprint=run_fingerprint,
        progress=progress,
        desc=f"{backbone_name}/{method}/seed {seed}",
    )
    probs = predict_probabilities(model, chapter_data.test, device, num_workers=config.num_workers)
    labels = chapter_data.test.targets
    scores = metrics.classification_metrics(labels, probs, num_classes)
    scores["val_balanced_accuracy"] = fit.best_value
    matrices = learned_correlations(model)
    artifacts: dict[str, Any] = {name: m.round(4) for name, m in matrices.items()}
    artifacts["confusion"] = metrics.confusion(labels, probs, num_classes).round(4)
    artifacts["per_class_recall"] = metrics.per_class_recall(labels, probs, num_classes).round(4)
    artifacts["classes"] = list(chapter_data.classes)
    confidence, accuracy, counts = metrics.reliability_curve(labels, probs, n_bins=10)
    artifacts["reliability"] = {
        "confidence": confidence.round(4),
        "accuracy": accuracy.round(4),
        "count": counts,
    }
    if chapter_data.similarity is not None:
        for name, matrix in matrices.items():
            agreement = metrics.matrix_agreement(matrix, chapter_data.similarity)
            scores[f"{name}_spearman"] = agreement["spearman"]
    return RunOutput(metrics=scores, fit=fit, artifacts=artifacts)


def run(
    config: Settings,
    chapter_data: ChapterData,
    *,
    profile: str,
    experiment: str,
    backbone_name: str,
    method: str,
    seed: int,
    device: torch.device,
    data_dir: str | Path | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """One run of the chapter's grid: train, evaluate, write the results record, return it.

    Calling it again with the same arguments resumes from the run's checkpoints (a finished run is
    evaluated again from its saved weights, without training).
    """
    params = run_params(config, backbone_name, method, data_dir)
    stamp = fingerprint(params)
    return run_once(
        chapter=CHAPTER,
        profile=profile,
        experiment=experiment,
        variant=f"{backbone_name}/{method}",
        seed=seed,
        params=params,
        dataset=chapter_data.info,
        device=device,
        train=lambda run_dir: train_and_evaluate(
            config,
            chapter_data,
            backbone_name=backbone_name,
            method=method,
            seed=seed,
            device=device,
            run_dir=run_dir,
            run_fingerprint=stamp,
            progress=progress,
        ),
    )


@dataclass(frozen=True)
class Job:
    """One cell of the chapter's grid."""

    experiment: str
    backbone: str
    method: str
    seed: int

    def __str__(self) -> str:
        return f"{self.experiment}: {self.backbone}/{self.method} seed {self.seed}"


def grid(config: Settings) -> list[Job]:
    """The main comparison (every backbone x method x seed), then the ablation rows on one backbone."""
    jobs = [
        Job("comparison", b, m, s) for b in config.backbones for m in config.methods for s in config.seeds
    ]
    jobs += [
        Job("ablation", config.ablation_backbone, m, s) for m in config.ablation_methods for s in config.seeds
    ]
    return jobs


def run_job(
    job: Job, *, config: Settings, profile: str, device: str, data_dir: str | None = None
) -> dict[str, Any]:
    """Run one grid cell (in this process or in a worker process)."""
    return run(
        config,
        load_data(config, data_dir),
        profile=profile,
        experiment=job.experiment,
        backbone_name=job.backbone,
        method=job.method,
        seed=job.seed,
        device=torch.device(device),
        data_dir=data_dir,
    )


def run_grid(
    config: Settings,
    *,
    profile: str,
    device: torch.device,
    data_dir: str | Path | None = None,
    jobs: list[Job] | None = None,
) -> list[dict[str, Any]]:
    """Run the chapter's grid (by default :func:`grid`), in parallel processes on a CPU."""
    from medlab.experiment import auto_workers
    from medlab.experiment import run_grid as run_all

    jobs = grid(config) if jobs is None else jobs
    workers, threads = auto_workers(device, len(jobs), workers=config.workers)
    print(f"{len(jobs)} runs on {device} with {workers} process(es) x {threads} thread(s)")

    def describe(job: Job, record: dict[str, Any]) -> str:
        m = record["metrics"]
        return f"{job}: balanced accuracy {m['balanced_accuracy']:.3f}, ECE {m['ece']:.3f}"

    return run_all(
        run_job,
        jobs,
        workers=workers,
        threads=threads,
        describe=describe,
        config=config,
        profile=profile,
        device=str(device),
        data_dir=None if data_dir is None else str(data_dir),
    )


def correlation_summary(records: list[Mapping[str, Any]], key: str = "ccl_correlation") -> np.ndarray:
    """The mean over runs of a learned class-similarity matrix stored in the records' artifacts."""
    mats = [np.asarray(r["artifacts"][key]) for r in records if key in r.get("artifacts", {})]
    if not mats:
        raise ValueError(f"no record holds the matrix {key!r}")
    return np.mean(mats, axis=0)


METHOD_LABELS = {
    "hard": "hard labels",
    "label_smoothing": "label smoothing",
    "ccl": "CCL-Net",
    "ccl_no_cc": "CCL-Net w/o L_cc",
    "ccl_no_soft": "CCL block + hard labels",
    "oracle_soft": "true-similarity smoothing",
}


METRIC_LABELS = {
    "balanced_accuracy": "bal. acc. %",
    "accuracy": "acc. %",
    "macro_f1": "macro F1 %",
    "macro_auroc": "AUROC %",
    "ece": "ECE",
    "ccl_correlation_spearman": "ρ(R, truth)",
    "classifier_cosine_spearman": "ρ(W cos, truth)",
}
PERCENT = ("balanced_accuracy", "accuracy", "macro_f1", "macro_auroc")


def _spread(diff: Mapping[str, float], scale: float, unit: str, digits: int) -> str:
    text = f"{diff['mean'] * scale:+.{digits}f}{unit}"
    if diff["n"] > 1:
        text += f" ± {diff['std'] * scale:.{digits}f}"
    return text


def findings(frame, metric: str = "balanced_accuracy") -> str:
    """A plain-language summary of the runs, written from their records (Markdown).

    For each backbone: CCL-Net minus each baseline, paired by seed, with a paired t-test; then how
    well the learned correlations match the truth, with and without the correlation loss.
    """
    from scipy import stats

    from medlab.results import format_mean_std, paired_difference

    lines = []
    versus_hard = []
    comparison = frame[frame["experiment"] == "comparison"]
    for backbone_name, group in comparison.groupby("params.backbone", sort=False):
        methods = set(group["params.method"])
        if "ccl" not in methods:
            continue
        for baseline in ("hard", "label_smoothing"):
            if baseline not in methods:
                continue
            d = paired_difference(group, metric, "params.method", "ccl", baseline)
            if baseline == "hard":
                versus_hard.append(d["mean"])
            e = paired_difference(group, "ece", "params.method", "ccl", baseline)
            if d["n"] > 1 and d["std"] > 0:
                p_value = stats.ttest_1samp(d["values"], 0.0).pvalue
                test = f"paired t-test p = {p_value:.2f}"
            else:
                test = "too few seeds for a test"
            lines.append(
                f"- **{backbone_name}**, CCL-Net minus {METHOD_LABELS[baseline]}: {metric.replace('_', ' ')} "
                f"{_spread(d, 100, ' points', 1)} (CCL-Net ahead on {d['wins']} of {d['n']} seeds; {test}); "
                f"calibration error (ECE) {_spread(e, 1, '', 3)} (lower is better)."
            )
    key = "metrics.ccl_correlation_spearman"
    if key in frame:
        by_method = {
            m: frame[frame["params.method"] == m][key].dropna().to_numpy() for m in ("ccl", "ccl_no_cc")
        }
        hard = (
            comparison[comparison["params.method"] == "hard"]["metrics.classifier_cosine_spearman"]
            .dropna()
            .to_numpy()
        )
        if by_method["ccl"].size:
            text = (
                f"- Class correlations: CCL-Net's learned R agrees with the true similarity at Spearman "
                f"{format_mean_std(by_method['ccl'], 2)} ({by_method['ccl'].size} runs)"
            )
            if by_method["ccl_no_cc"].size:
                text += (
                    f"; without the correlation loss (Eq. 5) at {format_mean_std(by_method['ccl_no_cc'], 2)}"
                )
            if hard.size:
                text += f"; the weight cosines of the hard-label classifiers at {format_mean_std(hard, 2)}"
            lines.append(text + ".")
    ablation_backbone = frame[frame["params.method"] == "oracle_soft"]["params.backbone"]
    if len(ablation_backbone):
        group = frame[frame["params.backbone"] == ablation_backbone.iloc[0]]
        if "label_smoothing" in set(group["params.method"]):
            d = paired_difference(group, metric, "params.method", "oracle_soft", "label_smoothing")
            lines.append(
                f"- Smoothing shaped by the *true* similarity minus uniform label smoothing (same mass): "
                f"{metric.replace('_', ' ')} {_spread(d, 100, ' points', 1)} on {ablation_backbone.iloc[0]} "
                f"(ahead on {d['wins']} of {d['n']} seeds)."
            )
    if versus_hard:
        above, below, n = sum(v > 0 for v in versus_hard), sum(v < 0 for v in versus_hard), len(versus_hard)
        name = metric.replace("_", " ")
        if above == n:
            verdict = f"CCL-Net's mean {name} is above hard-label training on every backbone."
        elif below == n:
            verdict = f"CCL-Net does not beat hard-label training on this data: its mean {name} is lower on every backbone."
        else:
            verdict = f"No consistent effect: CCL-Net's mean {name} is above hard-label training on {above} of {n} backbones and below on {below}."
        lines.insert(0, f"**Overall.** {verdict}\n")
    return "\n".join(lines) if lines else "No CCL-Net runs to compare."


BENCHMARK_TABLE = {
    "experiments": ["comparison", "ablation"],
    "by": ["params.backbone", "params.method"],
    "metrics": ["balanced_accuracy", "accuracy", "macro_f1", "ece"],
    "percent": ["balanced_accuracy", "accuracy", "macro_f1"],
    "labels": {"params.method": METHOD_LABELS},
    "order": {"params.backbone": None, "params.method": list(METHOD_LABELS)},
    "names": METRIC_LABELS,
    "caption": "Test-set balanced accuracy, accuracy and macro F1 (%), and expected calibration error.",
}
