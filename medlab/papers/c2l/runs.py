"""Chapter 2 runs: the data, pretraining, fine-tuning and the linear probe wired to the settings, and
the grid (pretraining runs first, then the downstream runs that start from their encoders)."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from medlab import data as datasets
from medlab import engine, metrics, results, runtime
from medlab.augment import random_affine_crop
from medlab.data.subsets import RepeatedSubset, random_subset
from medlab.engine import RunContext
from medlab.experiment import Job, RunOutput, job, product, run_dir_for, run_identity, run_once, unique
from medlab.nets.backbones import backbone

from .config import PRETRAINING, PROTOCOLS, SLUG, Settings, variant_settings
from .method import Encoder, FindingClassifier, MomentumContrast, augment_view, compare_views, plain_batch_norms

ENCODER_FILE = "encoder.pt"
# The linear probe's positive control: the backbone of the classifier fine-tuned from scratch on the
# same labels and seed. Its features certainly hold the findings, so its probe shows what the probe can
# read; only probes start from it.
SUPERVISED = "supervised"


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class ChapterData:
    unlabeled: Dataset
    train: Dataset
    val: Dataset
    test: Dataset
    classes: tuple[str, ...]
    info: dict[str, Any]


_DATA_CACHE: dict[tuple, ChapterData] = {}


def load_data(config: Settings, data_dir: str | Path | None = None) -> ChapterData:
    """ChestX-ray14 from ``data_dir``, or the synthetic radiographs when ``data_dir`` is None.

    ``unlabeled`` is the pretraining pool (on the real data: the training split's images, whose labels
    pretraining never reads); ``train`` is the labeled set the label fractions are drawn from.
    Loaded once per process and configuration.
    """
    key = (
        config.image_size, config.n_unlabeled, config.n_labeled, config.n_val, config.n_test,
        config.prevalence_floor, config.data_seed,
        None if data_dir is None else str(Path(data_dir).expanduser().resolve()),
    )
    if key not in _DATA_CACHE:
        common: dict[str, Any] = dict(data_dir=data_dir, image_size=config.image_size)
        if data_dir is None:
            common.update(prevalence_floor=config.prevalence_floor, seed=config.data_seed)
            sizes = {
                "unlabeled": config.n_unlabeled, "train": config.n_labeled, "val": config.n_val, "test": config.n_test,
            }
            splits = {s: datasets.load("chestxray14", s, n=n, **common) for s, n in sizes.items()}
        else:
            splits = {s: datasets.load("chestxray14", s, **common) for s in ("unlabeled", "train", "val", "test")}
        info = {split: ds.info for split, ds in splits.items()}
        info["kind"] = info["train"]["kind"]
        _DATA_CACHE[key] = ChapterData(
            splits["unlabeled"], splits["train"], splits["val"], splits["test"], tuple(splits["train"].classes), info
        )
    return _DATA_CACHE[key]


def check_data(config: Settings, data_dir: str | Path | None = None) -> None:
    """Read the real data once before the grid starts (``run_grid`` calls it), so a bad folder fails
    before any training; the synthetic data needs no check."""
    if data_dir is not None:
        load_data(config, data_dir)


def label_subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """The indices of a ``fraction`` of ``n`` labeled images (at least one), drawn by ``seed``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return random_subset(n, max(1, int(round(fraction * n))), seed)


def targets_of(dataset: Dataset) -> torch.Tensor:
    """The findings of every image of ``dataset`` (a dataset with ``targets``, or a subset of one)."""
    if hasattr(dataset, "targets"):
        return torch.as_tensor(dataset.targets, dtype=torch.float32)
    if isinstance(dataset, RepeatedSubset):
        return targets_of(dataset.dataset)[dataset.indices]
    raise TypeError(f"cannot read the labels of a {type(dataset).__name__}")


# ---------------------------------------------------------------------------------------------
# Pretraining


def new_encoder(config: Settings, pretrained_imagenet: bool = False) -> Encoder:
    """A freshly initialised encoder of ``config``'s architecture."""
    return Encoder(
        config.backbone, width=config.width, feature_dim=config.feature_dim, pretrained_imagenet=pretrained_imagenet
    )


def make_pretrain_loss(method: str, config: Settings) -> Callable:
    """The pretraining loss of ``method`` for the engine: two views augmented on the device, then
    :func:`~medlab.papers.c2l.method.compare_views` with the settings' hyper-parameters."""
    terms = PRETRAINING[method].terms

    def loss_fn(model: MomentumContrast, batch) -> dict[str, torch.Tensor]:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        fill = model.query.fill_value
        views = [
            augment_view(
                images, crop_scale=config.crop_scale, rotation=config.rotation, jitter=config.jitter,
                cutout_holes=config.cutout_holes, cutout_fraction=config.cutout_fraction, fill=fill,
            )
            for _ in range(2)
        ]
        return compare_views(model, *views, terms, temperature=config.temperature, mixup_alpha=config.mixup_alpha)

    return loss_fn


# Held-out checks of the pretraining: the evidence standard's pretext and probe gates, every epoch

PRETEXT_EVAL_IMAGES = 256  # held-out images of the pretext check: chance is 1 / 256
KNN_NEIGHBOURS = 20


def stack_images(dataset: Dataset, n: int | None = None) -> torch.Tensor:
    """The first ``n`` images of ``dataset`` (all by default) as one ``(n, 1, H, W)`` tensor."""
    n = len(dataset) if n is None else min(n, len(dataset))
    return torch.stack([dataset[i][0] for i in range(n)])


@torch.no_grad()
def pretext_accuracy(model: MomentumContrast, images: torch.Tensor, config: Settings, seed: int = 0) -> float:
    """Eq. (1)'s task on held-out images, without the queue: two augmented views of each image (the
    same views at every call); the share of images whose query feature is closest to the key feature
    of their own other view among all the images' keys (chance ``1 / len(images)``)."""
    with torch.random.fork_rng(devices=[]):  # fixed views, and the training's random stream untouched
        torch.manual_seed(seed)
        views = [
            augment_view(
                images, crop_scale=config.crop_scale, rotation=config.rotation, jitter=config.jitter,
                cutout_holes=config.cutout_holes, cutout_fraction=config.cutout_fraction, fill=model.query.fill_value,
            )
            for _ in range(2)
        ]
    device = model.queue.device
    q = F.normalize(model.query(views[0].to(device)).float(), dim=1)
    k = F.normalize(model.key(views[1].to(device)).float(), dim=1)
    return float((q @ k.T).argmax(1).eq(torch.arange(len(q), device=device)).float().mean())


@torch.no_grad()
def knn_auroc(
    encoder: Encoder, train: tuple[torch.Tensor, torch.Tensor], held_out: tuple[torch.Tensor, torch.Tensor],
    k: int = KNN_NEIGHBOURS,
) -> float:
    """A kNN probe of the backbone's pooled features: a held-out image's score for a finding is the
    share of its ``k`` nearest labelled images (cosine) that have it; mean AUROC over the findings."""
    device = next(encoder.parameters()).device

    def features(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.normalize(encoder.features(b.to(device)).float(), dim=1).cpu() for b in images.split(256)])

    neighbours = (features(held_out[0]) @ features(train[0]).T).topk(min(k, len(train[0])), dim=1).indices
    return float(metrics.multilabel_auroc(held_out[1], train[1][neighbours].mean(1))["mean"])


def pretrain(config: Settings, chapter_data: ChapterData, method: str, run: RunContext) -> RunOutput:
    """Pretrain with ``method`` on the unlabeled pool and save the query encoder (``encoder.pt``).

    Before training and after every epoch, two held-out checks: the pretext task on validation images
    (:func:`pretext_accuracy`) and a kNN probe of the features (labelled training images as neighbours,
    validation images scored: :func:`knn_auroc`); the record keeps their first and last values."""
    config = variant_settings(config, method)
    runtime.seed_everything(run.seed)
    model = MomentumContrast(new_encoder(config), queue_size=config.queue_size, bn_splits=config.bn_splits)
    optimizer = torch.optim.SGD(
        model.query.parameters(), lr=config.pretrain_lr, momentum=0.9, weight_decay=config.pretrain_weight_decay
    )
    milestones = sorted({max(1, round(f * config.pretrain_epochs)) for f in config.lr_milestones})
    milestones = [m for m in milestones if m < config.pretrain_epochs]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    pretext_images = stack_images(chapter_data.val, PRETEXT_EVAL_IMAGES)
    labelled = (stack_images(chapter_data.train), targets_of(chapter_data.train))
    held_out = (stack_images(chapter_data.val), targets_of(chapter_data.val))

    def checks(m: MomentumContrast) -> dict[str, float]:
        return {
            "pretext_accuracy": pretext_accuracy(m, pretext_images, config),
            "knn_auroc": knn_auroc(m.query, labelled, held_out),
        }

    model.eval()
    at_init = checks(model.to(run.device))
    model.train()
    fit = engine.fit(
        model, chapter_data.unlabeled, run=run, loss_fn=make_pretrain_loss(method, config), optimizer=optimizer,
        epochs=config.pretrain_epochs, batch_size=config.pretrain_batch_size, scheduler=scheduler,
        after_step=lambda m: m.momentum_update(config.momentum), evaluate=checks, restore_best=False,
    )
    rank, world_size = runtime.distributed_world()
    if rank == 0:
        encoder = plain_batch_norms(copy.deepcopy(model.query)).cpu()
        torch.save(encoder.state_dict(), run.path(ENCODER_FILE))
    if world_size > 1:
        torch.distributed.barrier()  # every process's downstream runs read this encoder
    last = fit.history[-1]
    scores = {"loss": last["train/loss"], "accuracy": last["train/accuracy"]}
    scores["images_per_s"] = fit.samples_per_s or float("nan")
    for term in PRETRAINING[method].terms:
        scores[f"loss/{term}"] = last[f"train/{term}"]
    scores["heldout_pretext_accuracy"] = last["val/pretext_accuracy"]
    scores["init_pretext_accuracy"] = at_init["pretext_accuracy"]
    scores["pretext_chance"] = 1.0 / len(pretext_images)
    scores["knn_auroc"] = last["val/knn_auroc"]
    scores["init_knn_auroc"] = at_init["knn_auroc"]
    return RunOutput(metrics=scores, fit=fit, artifacts={"encoder": ENCODER_FILE})


# ---------------------------------------------------------------------------------------------
# Downstream: fine-tuning and the linear probe


def initial_encoder(config: Settings, init: str, encoder_path: Path | None = None) -> Encoder:
    """The encoder a downstream run starts from: random (``scratch``), ImageNet, pretrained weights
    (the query encoder saved by a pretraining run), or (``supervised``, the probe's positive control) the
    encoder inside a fine-tuned classifier's best weights, with a fresh projection head (a probe reads
    the backbone only)."""
    if init == "scratch":
        return new_encoder(config)
    if init == "imagenet":
        return new_encoder(config, pretrained_imagenet=True)
    if encoder_path is None or not Path(encoder_path).exists():
        makes_it = "its fine-tuning from scratch" if init == SUPERVISED else "its pretraining"
        raise FileNotFoundError(f"no trained encoder for {init!r} at {encoder_path}: run {makes_it} first (run_grid does)")
    encoder = new_encoder(config)
    state = engine.load_checkpoint(encoder_path)
    if init == SUPERVISED:
        state = {k.removeprefix("encoder."): v for k, v in state["model"].items() if k.startswith("encoder.")}
        state |= {k: v for k, v in encoder.state_dict().items() if k.startswith("head.")}  # dropped when fine-tuned
    encoder.load_state_dict(state)
    return encoder


def finetune_augment(images: torch.Tensor) -> torch.Tensor:
    """Mild augmentation for fine-tuning: crops of 80-100% of the image, +-5 degrees, no flips (a
    radiograph's left and right differ: the heart lies on the image's right)."""
    return random_affine_crop(images, scale=(0.8, 1.0), degrees=5.0, flip_p=0.0)


def predict_scores(model: nn.Module, dataset: Dataset, device: torch.device, num_workers: int = 0) -> torch.Tensor:
    """Sigmoid scores of every finding, ``(N, 14)``."""
    return engine.predict(
        model, dataset, forward=lambda m, batch: torch.sigmoid(m(batch[0]).float()), device=device,
        num_workers=num_workers,
    )


def extract_features(encoder: Encoder, dataset: Dataset, device: torch.device, num_workers: int = 0) -> torch.Tensor:
    """The backbone's pooled features of every image (eval mode, no augmentation)."""
    return engine.predict(
        encoder, dataset, forward=lambda m, batch: m.features(batch[0]).float(), device=device, num_workers=num_workers
    )


def auroc_scores(labels: torch.Tensor, scores: torch.Tensor, classes: Sequence[str]) -> dict[str, float]:
    """Mean AUROC over the findings, one ``auroc/<finding>`` per finding (NaN where undefined), and
    ``n_eval``, the number of images scored."""
    result = metrics.multilabel_auroc(labels, scores, classes)
    out = {"mean_auroc": result["mean"], "undefined_auroc": float(result["undefined"])}
    out.update({f"auroc/{name}": float(v) for name, v in zip(classes, result["per_label"])})
    out["n_eval"] = float(len(labels))
    return out


def finetune(
    config: Settings, chapter_data: ChapterData, item: Job, run: RunContext, encoder_path: Path | None
) -> RunOutput:
    """Fine-tune every layer on ``item.fraction`` of the labels (BCE), select the epoch by validation
    mean AUROC, and report test AUROC per finding."""
    runtime.seed_everything(run.seed)
    classes = chapter_data.classes
    model = FindingClassifier(initial_encoder(config, item.init, encoder_path), len(classes))
    indices = label_subset(len(chapter_data.train), item.fraction, run.seed)
    train = RepeatedSubset(chapter_data.train, indices, config.finetune_epoch_samples)
    batch_size = min(config.finetune_batch_size, len(train))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.finetune_lr, weight_decay=config.finetune_weight_decay)
    steps = config.finetune_epochs * (len(train) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.finetune_lr, total_steps=steps, pct_start=0.2
    )
    val_labels = targets_of(chapter_data.val)

    def loss_fn(m: FindingClassifier, batch) -> dict[str, torch.Tensor]:
        images, labels = batch
        return {"loss": F.binary_cross_entropy_with_logits(m(finetune_augment(images)).float(), labels.float())}

    def evaluate(m: FindingClassifier) -> dict[str, float]:
        scores = predict_scores(m, chapter_data.val, run.device, run.num_workers)
        return {"mean_auroc": metrics.multilabel_auroc(val_labels, scores)["mean"]}

    fit = engine.fit(
        model, train, run=run, loss_fn=loss_fn, optimizer=optimizer, epochs=config.finetune_epochs,
        batch_size=batch_size, evaluate=evaluate, monitor="mean_auroc", scheduler=scheduler, scheduler_interval="step",
    )
    scores = auroc_scores(targets_of(chapter_data.test), predict_scores(model, chapter_data.test, run.device), classes)
    scores["val_mean_auroc"] = fit.best_value
    scores["labeled_images"] = float(len(indices))
    return RunOutput(metrics=scores, fit=fit)


def linear_probe(
    config: Settings, chapter_data: ChapterData, item: Job, run: RunContext, encoder_path: Path | None
) -> RunOutput:
    """Train only a linear layer on the frozen encoder's features (standardised with the training
    subset's statistics), select the epoch by validation mean AUROC, report test AUROC."""
    runtime.seed_everything(run.seed)
    classes = chapter_data.classes
    encoder = initial_encoder(config, item.init, encoder_path).to(run.device)
    indices = label_subset(len(chapter_data.train), item.fraction, run.seed)
    train_subset = RepeatedSubset(chapter_data.train, indices)
    features = {
        name: extract_features(encoder, ds, run.device, run.num_workers)
        for name, ds in (("train", train_subset), ("val", chapter_data.val), ("test", chapter_data.test))
    }
    mean, std = features["train"].mean(0), features["train"].std(0, unbiased=False) + 1e-6
    standard = {name: (f - mean) / std for name, f in features.items()}
    train = TensorDataset(standard["train"], targets_of(train_subset))
    val_labels, test_labels = targets_of(chapter_data.val), targets_of(chapter_data.test)
    model = nn.Linear(standard["train"].shape[1], len(classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.probe_lr, weight_decay=1e-4)

    def loss_fn(m: nn.Linear, batch) -> dict[str, torch.Tensor]:
        x, labels = batch
        return {"loss": F.binary_cross_entropy_with_logits(m(x).float(), labels)}

    def scores_of(m: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(m(x.to(run.device)).float()).cpu()

    # features in memory: no loader workers; no progress bar unless asked (the probe takes seconds)
    probe_run = dataclasses.replace(run, num_workers=0, progress=False if run.progress is None else run.progress)
    fit = engine.fit(
        model, train, run=probe_run, loss_fn=loss_fn, optimizer=optimizer, epochs=config.probe_epochs,
        batch_size=min(256, len(train)), drop_last=False, monitor="mean_auroc",
        evaluate=lambda m: {"mean_auroc": metrics.multilabel_auroc(val_labels, scores_of(m, standard["val"]))["mean"]},
    )
    model.eval()
    with torch.no_grad():
        scores = auroc_scores(test_labels, scores_of(model, standard["test"]), classes)
    scores["val_mean_auroc"] = fit.best_value
    scores["labeled_images"] = float(len(indices))
    return RunOutput(metrics=scores, fit=fit)


# ---------------------------------------------------------------------------------------------
# The grid


def imagenet_status(config: Settings) -> str | None:
    """``None`` when ImageNet weights can be used for ``config``, else why they cannot (for the table)."""
    if not config.imagenet:
        return (
            f"not run: the {config.backbone} of this profile has no ImageNet weights "
            "(the paper profile uses torchvision's ResNet-18 and loads them)"
        )
    try:
        backbone(config.backbone, pretrained=True)
    except RuntimeError as error:
        return f"not run: {error}"
    return None


def pretrain_job(method: str, seed: int) -> Job:
    """The pretraining run of ``method`` and ``seed``."""
    return job("pretrain", seed, stage="pretrain", method=method)


def grid(config: Settings) -> list[Job]:
    """The pretraining runs (phase 0), then the downstream runs that start from them (phase 1):
    fine-tuning (on ``finetune_fractions`` of the labels) and linear probe (on ``label_fractions``) from
    every initialisation, and the ablation's probes. Downstream runs come longest first, so that parallel workers finish together."""
    methods = list(dict.fromkeys([*config.pretrain_methods, *config.ablation_methods]))
    pretraining = [pretrain_job(m, s) for m in methods for s in config.seeds]
    inits = ["scratch", *config.pretrain_methods]
    if config.imagenet and imagenet_status(config) is None:
        inits.insert(1, "imagenet")
    fractions = {"finetune": config.finetune_fractions, "probe": config.label_fractions}
    downstream = [
        item
        for protocol in PROTOCOLS
        for item in product(
            "label_efficiency", config.seeds, phase=1, stage=protocol,
            init=inits, protocol=[protocol], fraction=fractions[protocol],
        )
    ]
    downstream += product(
        "ablation", config.seeds, phase=1, stage="probe",
        init=config.ablation_methods, protocol=["probe"], fraction=[config.ablation_fraction],
    )
    downstream.sort(key=lambda j: (j.protocol != "finetune", -j.fraction))
    return pretraining + unique(downstream)


def pretrain_identity(config: Settings, method: str, data_dir: str | None) -> dict[str, Any]:
    """The parameters that identify a pretraining run: the pretraining settings of ``method``'s variant."""
    return run_identity(
        variant_settings(config, method), stage="pretrain", method=method, terms=list(PRETRAINING[method].terms),
        data_dir=data_dir,
    )


def supervised_job(item: Job) -> Job:
    """The fine-tuning from scratch whose backbone a ``supervised`` probe ``item`` reads (same labels
    and seed)."""
    if item.init != SUPERVISED or item.protocol != "probe":
        raise ValueError(f"{item} is not a probe of the {SUPERVISED!r} encoder (the probe's positive control)")
    return job("label_efficiency", item.seed, phase=1, stage="finetune", init="scratch", protocol="finetune", fraction=item.fraction)


def downstream_identity(config: Settings, item: Job, data_dir: str | None) -> dict[str, Any]:
    """The parameters that identify a fine-tuning or probing run: its stage's settings, its choices and,
    from a pretrained encoder, the identity of that pretraining run (a hash of its parameters; both
    runs share the chapter's code, which each run's fingerprint covers); the probe's positive control
    holds the identity of the fine-tuning it reads."""
    choices: dict[str, Any] = dict(init=item.init, protocol=item.protocol, fraction=item.fraction, data_dir=data_dir)
    if item.init in PRETRAINING:
        choices["pretraining"] = runtime.stable_hash(pretrain_identity(config, item.init, data_dir), 16)
    if item.init == SUPERVISED:
        choices[SUPERVISED] = runtime.stable_hash(downstream_identity(config, supervised_job(item), data_dir), 16)
    return run_identity(config, stage=item.stage, **choices)


def run_job(
    job: Job, *, config: Settings, profile: str, device: str, data_dir: str | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """One grid cell (in this process or a worker): train, evaluate, write the results record, return
    it. A downstream run reads its encoder from the folder of the pretraining run it starts from."""
    chapter_data = load_data(config, data_dir)
    common = dict(
        chapter=SLUG, profile=profile, job=job, dataset=chapter_data.info, device=torch.device(device),
        progress=progress, num_workers=config.num_workers,
    )
    if job.experiment == "pretrain":
        params = pretrain_identity(config, job.method, data_dir)
        return run_once(params=params, train=lambda run: pretrain(config, chapter_data, job.method, run), **common)
    encoder_path = None
    if job.init in PRETRAINING:
        source = pretrain_job(job.init, job.seed)
        encoder_path = run_dir_for(profile, SLUG, source, pretrain_identity(config, job.init, data_dir)) / ENCODER_FILE
    elif job.init == SUPERVISED:
        source = supervised_job(job)
        encoder_path = run_dir_for(profile, SLUG, source, downstream_identity(config, source, data_dir)) / engine.BEST
    train = finetune if job.protocol == "finetune" else linear_probe
    params = downstream_identity(config, job, data_dir)
    return run_once(params=params, train=lambda run: train(config, chapter_data, job, run, encoder_path), **common)


def describe(job: Job, record: Mapping[str, Any]) -> str:
    m = record["metrics"]
    if job.experiment == "pretrain":
        return f"pretrain {job.method} seed {job.seed}: loss {m['loss']:.3f}, pretext accuracy {m['accuracy']:.2f}"
    run = f"{job.experiment}: {job.init} {job.protocol} on {job.fraction:.0%} of the labels, seed {job.seed}"
    return f"{run}: mean AUROC {m['mean_auroc']:.3f}"


def encoder_of(record: Mapping[str, Any]) -> Encoder:
    """The encoder a pretraining record saved (``encoder.pt`` in its run folder)."""
    if record.get("experiment") != "pretrain":
        raise ValueError(f"the record {record.get('run', '?')} is not a pretraining run")
    params = record["params"]
    encoder = Encoder(params["backbone"], width=params["width"], feature_dim=params["feature_dim"])
    path = results.run_folder(record) / record.get("artifacts", {}).get("encoder", ENCODER_FILE)
    if not path.exists():
        raise FileNotFoundError(f"the pretraining run {record['run']} has no encoder at {path}; rerun its grid")
    encoder.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return encoder
