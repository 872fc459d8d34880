"""Chapter 1 runs: the data, the training step of every method, one run, and the grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from medlab import data as datasets
from medlab import engine, metrics, runtime
from medlab.augment import random_dihedral
from medlab.engine import RunContext
from medlab.experiment import Job, RunOutput, product, run_identity, run_once

from .config import METHODS, SLUG, Settings
from .method import Classifier, ccl_loss, class_correlation, make_backbone, oracle_soft_labels, soft_cross_entropy


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
        config.image_size, config.n_train, config.n_val, config.n_test, config.attribute_noise, config.balanced_eval,
        config.data_seed,
        None if data_dir is None else str(Path(data_dir).expanduser().resolve()),
    )
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = _load_data(config, data_dir)
    return _DATA_CACHE[key]


def _load_data(config: Settings, data_dir: str | Path | None) -> ChapterData:
    common: dict[str, Any] = dict(data_dir=data_dir, image_size=config.image_size)
    balanced: set[str] = set()
    if data_dir is None:
        from medlab.data.synth.skin_lesions import similarity_matrix

        common.update(attribute_noise=config.attribute_noise, seed=config.data_seed)
        sizes = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
        splits = {}
        for split, n in sizes.items():
            if split != "train" and config.balanced_eval:
                splits[split] = balanced_split(split, n, config)
                balanced.add(split)
            else:
                splits[split] = datasets.load("isic2018", split, n=n, **common)
        similarity = similarity_matrix()
    else:
        splits = {s: datasets.load("isic2018", s, **common) for s in ("train", "val", "test")}
        similarity = None
    info = {split: {**ds.info, "class_balanced": split in balanced} for split, ds in splits.items()}
    info["kind"] = info["train"]["kind"]
    return ChapterData(splits["train"], splits["val"], splits["test"], tuple(splits["train"].classes), similarity, info)


def check_data(config: Settings, data_dir: str | Path | None = None) -> ChapterData:
    """Check, before any training, that the settings fit the data, and return the data.

    :func:`medlab.experiment.run_grid` calls it first, so a profile that cannot run on the folder it
    was given fails in seconds with the reason, not in a worker process hours later: the training
    split must hold a batch; every split must hold every class (class-balanced sampling, balanced
    accuracy and the correlation loss need all seven); ``oracle_soft`` needs the synthetic data's true
    similarity; ImageNet weights must be loadable (fetched once here, not by each worker).
    """
    data = load_data(config, data_dir)
    where = "the synthetic data" if data_dir is None else f"the ISIC 2018 data under {data_dir}"
    problems = []
    if len(data.train) < config.batch_size:
        problems.append(
            f"the training split holds {len(data.train)} images, fewer than one batch (batch_size {config.batch_size})"
        )
    for split in ("train", "val", "test"):
        counts = data.info[split]["class_counts"]
        missing = [name for name, count in zip(data.classes, counts) if count == 0]
        if missing:
            problems.append(
                f"the {split} split holds no image of {', '.join(missing)} (counts {dict(zip(data.classes, counts))}); "
                "every class is needed"
            )
    if data.similarity is None and "oracle_soft" in (*config.methods, *config.ablation_methods):
        problems.append("method oracle_soft needs the true class similarity, which only the synthetic data has")
    if problems:
        raise ValueError(f"the {SLUG} settings do not fit {where}: " + "; ".join(problems))
    if config.pretrained:
        for name in dict.fromkeys((*config.backbones, config.ablation_backbone)):
            make_backbone(name, pretrained=True)  # raises with instructions when the weights cannot be had
    return data


def balanced_split(split: str, n: int, config: Settings):
    """A class-balanced synthetic ``split`` (``n / 7`` images per class) drawn from the split's own seed.

    The registry's look-alike follows ISIC 2018's imbalance (16 DF images in 1,400), so one image of a
    rare class would move balanced accuracy by a point; the generator's ``balanced`` option gives every
    class the same number of images, which makes the per-class recalls, and so balanced accuracy,
    equally precise. The training split keeps ISIC 2018's imbalance.
    """
    from medlab.data.splits import split_seed
    from medlab.data.synth.skin_lesions import SkinLesionSpec, SyntheticSkinLesions

    spec = SkinLesionSpec(
        n=n, image_size=config.image_size, attribute_noise=config.attribute_noise,
        seed=split_seed(config.data_seed, split), balanced=True,
    )
    return SyntheticSkinLesions(spec)


def make_loss(method: str, config: Settings, oracle: torch.Tensor | None = None) -> Callable:
    """The training step of ``method`` as ``loss_fn(model, (images, labels)) -> dict`` for the engine:
    augment on the device, then the method's loss with the chapter's hyper-parameters.

    ``oracle`` (method ``oracle_soft`` only) holds the soft label of each class, on the training device.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if method == "oracle_soft" and oracle is None:
        raise ValueError(
            "oracle_soft needs the true class similarity, which only the synthetic data has; drop it from ablation_methods"
        )

    def loss_fn(model: Classifier, batch) -> dict[str, torch.Tensor]:
        images, labels = batch
        out = model(random_dihedral(images))
        logits = out["logits"].float()
        if method.startswith("ccl"):
            return ccl_loss(
                logits, out["embedding"].float(), model.ccl.class_vectors(), labels,
                scale=config.dml_scale, temperature=config.soft_temperature,
                lambda_dml=config.lambda_dml, lambda_cc=config.lambda_cc,
                soft=method != "ccl_no_soft", with_cc=method != "ccl_no_cc",
            )
        if method == "hard":
            cls = F.cross_entropy(logits, labels)
        elif method == "label_smoothing":
            cls = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
        else:  # oracle_soft
            cls = soft_cross_entropy(logits, oracle[labels])
        return {"loss": cls, "cls": cls}

    return loss_fn


def predict_probabilities(model: Classifier, dataset, device: torch.device, num_workers: int = 0) -> torch.Tensor:
    return engine.predict(
        model, dataset, forward=lambda m, batch: torch.softmax(m(batch[0])["logits"].float(), dim=1),
        device=device, num_workers=num_workers,
    )


def learned_correlations(model: Classifier) -> dict[str, np.ndarray]:
    """The class-similarity matrices a trained model holds: ``R`` (Eq. 3) when it has a CCL block,
    and, for every model, the cosines between the classifier's weight vectors (a common probe)."""
    with torch.no_grad():
        found = {"classifier_cosine": metrics.cosine_similarity_matrix(model.head.weight.cpu())}
        if model.ccl is not None:
            found["ccl_correlation"] = class_correlation(model.ccl.class_vectors()).cpu().numpy()
    return found


def train_and_evaluate(config: Settings, data: ChapterData, job: Job, run: RunContext) -> RunOutput:
    """Train one (backbone, method, seed) on the training split, select the epoch by validation
    balanced accuracy, and evaluate on the test split."""
    runtime.seed_everything(job.seed)
    num_classes = len(data.classes)
    model = Classifier(
        job.backbone, num_classes, pretrained=config.pretrained, with_ccl=job.method.startswith("ccl"),
        embedding_dim=config.embedding_dim, width=config.width,
    )
    oracle = None
    if job.method == "oracle_soft" and data.similarity is not None:
        oracle = oracle_soft_labels(data.similarity, config.label_smoothing).to(run.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * (len(data.train) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps, pct_start=0.2)

    def evaluate(m: Classifier) -> dict[str, float]:
        probs = predict_probabilities(m, data.val, run.device, run.num_workers)
        scores = metrics.classification_metrics(data.val.targets, probs, num_classes)
        return {k: scores[k] for k in ("balanced_accuracy", "accuracy", "nll")}

    fit = engine.fit(
        model, data.train, run=run, loss_fn=make_loss(job.method, config, oracle), optimizer=optimizer,
        epochs=config.epochs, batch_size=config.batch_size,
        sample_weights=engine.class_balanced_weights(data.train.targets) if config.balanced_sampling else None,
        evaluate=evaluate, monitor="balanced_accuracy", scheduler=scheduler, scheduler_interval="step",
    )
    probs = predict_probabilities(model, data.test, run.device, run.num_workers)
    labels = data.test.targets
    scores = metrics.classification_metrics(labels, probs, num_classes)
    scores["val_balanced_accuracy"] = fit.best_value
    scores["n_eval"] = float(len(labels))
    matrices = learned_correlations(model)
    artifacts: dict[str, Any] = {name: m.round(4) for name, m in matrices.items()}
    artifacts["confusion"] = metrics.confusion(labels, probs, num_classes).round(4)
    artifacts["per_class_recall"] = metrics.per_class_recall(labels, probs, num_classes).round(4)
    artifacts["classes"] = list(data.classes)
    confidence, accuracy, counts = metrics.reliability_curve(labels, probs, n_bins=10)
    artifacts["reliability"] = {"confidence": confidence.round(4), "accuracy": accuracy.round(4), "count": counts}
    if data.similarity is not None:
        for name, matrix in matrices.items():
            scores[f"{name}_spearman"] = metrics.matrix_agreement(matrix, data.similarity)["spearman"]
    return RunOutput(metrics=scores, fit=fit, artifacts=artifacts)


def grid(config: Settings) -> list[Job]:
    """The main comparison (every backbone x method x seed), then the ablation rows on one backbone."""
    return product("comparison", config.seeds, backbone=config.backbones, method=config.methods) + product(
        "ablation", config.seeds, backbone=[config.ablation_backbone], method=config.ablation_methods
    )


def run_job(
    job: Job, *, config: Settings, profile: str, device: str, data_dir: str | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """One grid cell: train, evaluate, write the results record, return it (in this process or a
    worker). Called again it resumes from the run's checkpoints; a finished run is evaluated again
    from its saved weights, without training."""
    data = load_data(config, data_dir)
    params = run_identity(config, backbone=job.backbone, method=job.method, data_dir=data_dir)
    return run_once(
        chapter=SLUG, profile=profile, job=job, params=params, dataset=data.info, device=torch.device(device),
        train=lambda run: train_and_evaluate(config, data, job, run), progress=progress, num_workers=config.num_workers,
    )


def describe(job: Job, record: Mapping[str, Any]) -> str:
    m = record["metrics"]
    return f"{job}: balanced accuracy {m['balanced_accuracy']:.3f}, ECE {m['ece']:.3f}"
