"""Chapter 2 (C2L): each equation on hand-computed values, the queue, shuffled batch norm (in one
process, channels-last, and across two processes), the runs' identities, the downstream pieces and the
device augmentations."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medlab import augment, metrics
from medlab.data.subsets import RepeatedSubset
from medlab.engine import RunContext
from medlab.nets.backbones import narrow_resnet18
from medlab.papers import c2l

TINY = dataclasses.replace(
    c2l.PROFILES["smoke"], image_size=16, width=4, feature_dim=8, queue_size=12, bn_splits=2, pretrain_batch_size=4
)


def momentum_contrast(config: c2l.Settings) -> c2l.MomentumContrast:
    return c2l.MomentumContrast(c2l.new_encoder(config), queue_size=config.queue_size, bn_splits=config.bn_splits)


def test_info_nce_matches_hand_computation():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0]])
    loss, accuracy = c2l.info_nce(q, k, queue, temperature=0.5)
    # row 0: logits [1, 0] / 0.5 -> -log(e^2 / (e^2 + 1)); row 1: [0, 1] / 0.5 -> -log(1 / (1 + e^2))
    expected = (math.log1p(math.exp(-2)) + math.log1p(math.exp(2))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert accuracy.item() == pytest.approx(0.5)


def test_mixup_lambda_is_folded_to_the_upper_half():
    torch.manual_seed(0)
    values = torch.stack([c2l.mixup_lambda(1.0, torch.device("cpu")) for _ in range(2000)])
    assert values.min() >= 0.5 and values.max() <= 1.0
    # Beta(1, 1) folded: uniform on [0.5, 1], mean 0.75
    assert values.mean().item() == pytest.approx(0.75, abs=0.02)


def test_mix_uses_one_permutation_and_lambda():
    x = torch.tensor([[1.0], [2.0], [4.0]])
    out = c2l.mix(x, torch.tensor(0.75), torch.tensor([2, 0, 1]))
    assert torch.allclose(out, torch.tensor([[0.75 + 1.0], [1.5 + 0.25], [3.0 + 0.5]]))


def test_momentum_update_is_an_exponential_average_of_the_parameters():
    model = momentum_contrast(TINY)
    with torch.no_grad():
        for p in model.query.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.key.parameters()]
    model.momentum_update(0.75)
    for k, k0, q in zip(model.key.parameters(), before, model.query.parameters()):
        assert torch.allclose(k, 0.75 * k0 + 0.25 * q)
    model.momentum_update(0.0)
    for k, q in zip(model.key.parameters(), model.query.parameters()):
        assert torch.equal(k, q)
    assert not any(p.requires_grad for p in model.key.parameters())


def test_queue_is_fifo_and_wraps():
    model = momentum_contrast(dataclasses.replace(TINY, queue_size=5, feature_dim=2))
    first = torch.arange(6.0).view(3, 2)
    model.enqueue(first)
    assert torch.equal(model.queue[:3], first) and int(model.queue_ptr) == 3
    second = -torch.arange(1.0, 7.0).view(3, 2)
    model.enqueue(second)
    assert torch.equal(model.queue[3:], second[:2]) and torch.equal(model.queue[0], second[2])
    assert torch.equal(model.queue[1:3], first[1:]) and int(model.queue_ptr) == 1


def test_split_batch_norm_normalises_each_sub_batch_separately():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4) * 3 + 1
    split = c2l.SplitBatchNorm2d(3, splits=2).train()
    out = split(x)
    for group in range(2):
        plain = nn.BatchNorm2d(3).train()
        assert torch.allclose(out[group::2], plain(x[group::2]), atol=1e-5)
    # running statistics: the average of the groups' updates
    expected = torch.stack([0.1 * x[g::2].mean(dim=(0, 2, 3)) for g in range(2)]).mean(0)
    assert torch.allclose(split.running_mean, expected, atol=1e-6)
    split.eval()
    reference = nn.BatchNorm2d(3)
    reference.load_state_dict(split.state_dict())
    assert torch.allclose(split(x), reference.eval()(x))


def test_split_and_plain_batch_norms_round_trip():
    net = narrow_resnet18(4)
    c2l.split_batch_norms(net, 2)
    assert all(isinstance(m, c2l.SplitBatchNorm2d) for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    c2l.plain_batch_norms(net)
    assert not any(isinstance(m, c2l.SplitBatchNorm2d) for m in net.modules())


def test_batch_shuffle_is_undone():
    x = torch.arange(10.0).view(10, 1)
    shuffled, restore = c2l.batch_shuffle(x)
    assert sorted(shuffled.flatten().tolist()) == x.flatten().tolist()
    assert torch.equal(c2l.batch_unshuffle(shuffled, restore), x)


def test_key_features_without_splits_equal_a_plain_forward():
    model = momentum_contrast(dataclasses.replace(TINY, bn_splits=1)).train()
    x = torch.rand(4, 1, 16, 16)
    assert torch.allclose(model.key_features(x), model.key(x), atol=1e-5)


@pytest.mark.parametrize("method", list(c2l.PRETRAINING))
def test_pretrain_loss_averages_its_comparisons_and_trains_only_the_query(method):
    torch.manual_seed(0)
    config = c2l.variant_settings(TINY, method)
    model = momentum_contrast(config).train()
    terms = c2l.PRETRAINING[method].terms
    out = c2l.make_pretrain_loss(method, config)(model, (torch.rand(4, 1, 16, 16), None))
    assert set(terms) <= set(out) and torch.isfinite(out["loss"])
    assert out["loss"].item() == pytest.approx(sum(out[t].item() for t in terms) / len(terms), rel=1e-6)
    out["loss"].backward()
    assert all(p.grad is not None for p in model.query.parameters())
    assert all(p.grad is None for p in model.key.parameters())
    # each comparison pushed its batch of keys into the queue (Eq. 5)
    assert int(model.queue_ptr) == (4 * len(terms)) % config.queue_size


def test_variant_settings_apply_the_ablation_values():
    assert c2l.variant_settings(TINY, "c2l_queue").queue_size == TINY.ablation_queue_size
    assert c2l.variant_settings(TINY, "c2l_momentum").momentum == TINY.ablation_momentum
    assert c2l.variant_settings(TINY, "c2l") == TINY


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="unknown pretraining method"):
        c2l.settings("smoke", pretrain_methods="moco,simclr")
    with pytest.raises(ValueError, match="label fractions"):
        c2l.settings("smoke", label_fractions="0,0.5")
    with pytest.raises(ValueError, match="bn_splits"):
        c2l.settings("smoke", bn_splits=5)


def test_label_subset_is_deterministic_and_never_empty():
    a, b = c2l.label_subset(200, 0.1, seed=3), c2l.label_subset(200, 0.1, seed=3)
    assert np.array_equal(a, b) and len(a) == 20 and len(set(a.tolist())) == 20
    assert len(c2l.label_subset(30, 0.01, seed=0)) == 1
    assert not np.array_equal(c2l.label_subset(200, 0.1, seed=4), a)
    with pytest.raises(ValueError, match="fraction"):
        c2l.label_subset(10, 0.0, seed=0)


def test_repeated_subset_repeats_every_sample_equally():
    data = torch.utils.data.TensorDataset(torch.arange(10.0), torch.zeros(10))
    subset = RepeatedSubset(data, [2, 5, 7], min_length=8)
    assert len(subset) == 9
    values = [float(subset[i][0]) for i in range(len(subset))]
    assert sorted(values) == [2.0] * 3 + [5.0] * 3 + [7.0] * 3


def test_finding_classifier_starts_from_the_pretrained_encoder(tmp_path):
    encoder = c2l.new_encoder(TINY)
    path = tmp_path / "encoder.pt"
    torch.save(encoder.state_dict(), path)
    loaded = c2l.initial_encoder(TINY, "c2l", path)
    model = c2l.FindingClassifier(loaded, 14)
    x = torch.rand(3, 1, 16, 16)
    encoder.eval(), model.eval()
    assert torch.allclose(model.encoder.features(x), encoder.features(x))
    assert model(x).shape == (3, 14)
    with pytest.raises(FileNotFoundError, match="pretraining first"):
        c2l.initial_encoder(TINY, "moco", tmp_path / "missing.pt")


def test_encoder_feeds_grey_images_to_a_three_channel_backbone():
    config = dataclasses.replace(TINY, backbone="resnet18")
    encoder = c2l.new_encoder(config).eval()
    assert encoder(torch.rand(2, 1, 32, 32)).shape == (2, config.feature_dim)


def test_grid_pretrains_before_it_fine_tunes():
    config = c2l.PROFILES["demo"]
    jobs = c2l.grid(config)
    pretraining = [j for j in jobs if j.phase == 0]
    downstream = [j for j in jobs if j.phase == 1]
    assert jobs == pretraining + downstream
    seeds = len(config.seeds)
    assert len(pretraining) == 2 * seeds and {(j.experiment, j.stage) for j in pretraining} == {("pretrain", "pretrain")}
    # fine-tuning and probes on all the labels, from scratch, MoCo and C2L
    assert len(downstream) == 3 * seeds * 2
    assert {(j.protocol, j.fraction) for j in downstream} == {("finetune", 1.0), ("probe", 1.0)}
    assert {j.init for j in downstream if j.experiment == "label_efficiency"} == {"scratch", "moco", "c2l"}
    assert all(j.stage == j.protocol for j in downstream)
    assert c2l.imagenet_status(config).startswith("not run")
    assert pretraining[0].variant == "moco" and downstream[0].variant == "scratch/finetune/1"
    # the paper profile keeps the ablation's probes
    paper = c2l.grid(c2l.PROFILES["paper"])
    ablation = c2l.PROFILES["paper"].ablation_methods
    assert {j.variant for j in paper if j.experiment == "ablation"} == {f"{m}/probe/0.1" for m in ablation}
    # longest first: fine-tuning on the largest share, then smaller shares, then the probes
    keys = [(j.protocol != "finetune", -j.fraction) for j in downstream]
    assert keys == sorted(keys)


def test_held_out_checks_are_fixed_between_calls_and_find_identical_views(monkeypatch):
    from medlab.papers.c2l import runs

    torch.manual_seed(0)
    model = momentum_contrast(TINY).eval()
    images = torch.rand(16, 1, 16, 16)
    first = c2l.pretext_accuracy(model, images, TINY)
    assert first == c2l.pretext_accuracy(model, images, TINY)  # the same views every call
    assert 0.0 <= first <= 1.0
    # no augmentation and identical encoders (the key encoder starts as a copy): every image finds its own key
    monkeypatch.setattr(runs, "augment_view", lambda views, **_: views)
    assert c2l.pretext_accuracy(model, images, TINY) == 1.0
    # kNN probe: labels that copy a feature direction are found by the neighbours, random labels are not
    labels = torch.zeros(40, 2)
    labels[:20, 0] = 1
    labels[20:, 1] = 1
    train_images = torch.cat([torch.zeros(20, 1, 16, 16), torch.ones(20, 1, 16, 16)]) + 0.01 * torch.rand(40, 1, 16, 16)
    encoder = model.query
    assert c2l.knn_auroc(encoder, (train_images, labels), (train_images, labels), k=5) > 0.9


def _records(probe: dict, finetune: dict, pretext: float, seeds: int = 5):
    """Hand-made records: probes on all the labels and fine-tuning on all the labels per init, and the pretraining
    records' held-out pretext accuracy."""
    rows = []
    for seed in range(seeds):
        wobble = 0.002 * (seed - seeds // 2)
        for init, auroc in probe.items():
            rows.append({"experiment": "label_efficiency", "seed": seed, "params.init": init, "params.protocol": "probe",
                         "params.fraction": 1.0, "metrics.mean_auroc": auroc + wobble})
        for init, auroc in finetune.items():
            rows.append({"experiment": "label_efficiency", "seed": seed, "params.init": init,
                         "params.protocol": "finetune", "params.fraction": 1.0, "metrics.mean_auroc": auroc + wobble * (init == "c2l")})
        for method in ("moco", "c2l"):
            rows.append({"experiment": "pretrain", "seed": seed, "params.method": method,
                         "metrics.heldout_pretext_accuracy": pretext, "metrics.pretext_chance": 1 / 256,
                         "metrics.init_pretext_accuracy": 0.01, "metrics.knn_auroc": 0.6, "metrics.init_knn_auroc": 0.55})
    return rows


def test_comparisons_are_void_until_the_pretraining_gates_pass():
    import pandas as pd

    from medlab import report

    finetune = {"scratch": 0.78, "moco": 0.79, "c2l": 0.82}
    # pretext not learned on held-out images, probes below the random encoder's: every pretrained comparison void
    weak = pd.DataFrame(_records({"scratch": 0.60, "moco": 0.59, "c2l": 0.595}, finetune, pretext=0.012))
    verdicts = {v["name"]: v for v in report.evaluate_all(c2l.COMPARISONS, weak)}
    main = verdicts["C2L vs MoCo, fine-tuned, all labels"]
    assert main["verdict"] == "void" and main["gates"]["baseline_learned"] and not main["gates"]["C2L: pretext task learned on held-out images (accuracy >= 50%)"]
    assert "C2L: pretext task learned on held-out images (accuracy >= 50%) fails: mean heldout_pretext_accuracy 0.012" in main["reason"]
    assert "C2L: linear probe above a random encoder's fails: mean" in main["reason"]
    # the probe comparison is void on its own baseline too: MoCo's probe is not halfway from 0.5 to 1;
    # it is reported, but the one main comparison is the fine-tuned one (the paper's known result)
    assert not verdicts["C2L vs MoCo, linear probe, all labels"]["gates"]["baseline_learned"]
    assert [name for name, v in verdicts.items() if v["main"]] == ["C2L vs MoCo, fine-tuned, all labels"]
    # learned pretext and probes above random: the fine-tuning comparisons get a direction
    strong = pd.DataFrame(_records({"scratch": 0.60, "moco": 0.76, "c2l": 0.78}, finetune, pretext=0.8))
    verdicts = {v["name"]: v for v in report.evaluate_all(c2l.COMPARISONS, strong)}
    assert verdicts["C2L vs MoCo, fine-tuned, all labels"]["verdict"] == "better"
    assert verdicts["C2L vs MoCo, fine-tuned, all labels"]["diff_mean"] == pytest.approx(0.03)
    assert verdicts["MoCo vs random initialisation, fine-tuned, all labels"]["verdict"] == "better"


def test_findings_are_written_from_the_records():
    import pandas as pd

    rows = _records({"scratch": 0.60, "moco": 0.59, "c2l": 0.595}, {"scratch": 0.78, "moco": 0.79, "c2l": 0.82}, 0.012)
    for seed in range(3):
        rows.append({"experiment": "ablation", "seed": seed, "params.init": "c2l_no_mixed", "params.protocol": "probe",
                     "params.fraction": 1.0, "metrics.mean_auroc": 0.58 - 0.01 * seed})
        rows.append({"experiment": "pretrain", "seed": seed, "params.method": "c2l_no_mixed",
                     "metrics.heldout_pretext_accuracy": 0.02, "metrics.pretext_chance": 1 / 256,
                     "metrics.init_pretext_accuracy": 0.01, "metrics.knn_auroc": 0.6, "metrics.init_knn_auroc": 0.55})
    text = c2l.findings(pd.DataFrame(rows))
    # an ablation's pretraining has no probe among the label-efficiency runs: its line has no margin
    assert "- C2L w/o l(q~, k~): pretext accuracy 1.0 ± 0.0 → 2.0 ± 0.0% (chance 0.4%); kNN probe mean AUROC 55.0 ± 0.0 → 60.0 ± 0.0%.\n" in text + "\n"
    assert text.startswith("- (main) **C2L vs MoCo, fine-tuned, all labels**: void")
    # the probe gate's margin, paired by seed: the probes differ by exactly -0.5 points on every seed
    assert (
        "- C2L: pretext accuracy 1.0 ± 0.0 → 1.2 ± 0.0% (chance 0.4%); kNN probe mean AUROC 55.0 ± 0.0 → 60.0 ± 0.0%; "
        "linear probe minus the random encoder's -0.5 points (95% interval -0.5 to -0.5, 5 seeds)."
    ) in text
    assert "C2L w/o l(q~, k~) -2.3 points ± 1.2" in text


# --- shared building blocks used by the chapter -----------------------------------------------------


def test_narrow_resnet18_shapes_and_gradients():
    net = narrow_resnet18(width=8, in_channels=1)
    out = net(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 64) and net.out_features == 64
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="width"):
        narrow_resnet18(width=0)


def test_random_affine_crop_identity_and_flip():
    x = torch.rand(3, 1, 8, 8)
    same = augment.random_affine_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0.0, flip_p=0.0)
    assert torch.allclose(same, x, atol=1e-5)
    flipped = augment.random_affine_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0.0, flip_p=1.0)
    assert torch.allclose(flipped, x.flip(-1), atol=1e-5)
    crops = augment.random_affine_crop(x, scale=(0.2, 0.5))
    assert crops.shape == x.shape and not torch.allclose(crops, x)


def test_intensity_jitter_identity_and_range():
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(augment.intensity_jitter(x, 0.0, 0.0), x)
    out = augment.intensity_jitter(x, 0.9, 0.9)
    assert out.min() >= 0 and out.max() <= 1


def test_cutout_holes_have_the_given_side_and_fill():
    torch.manual_seed(0)
    x = torch.ones(64, 1, 20, 20)
    out = augment.cutout(x, holes=1, length=4, fill=0.5)
    cut = (out == 0.5).sum(dim=(1, 2, 3))
    assert cut.max() == 16 and cut.min() >= 4  # clipped at the border, never more than one square
    assert torch.equal(augment.cutout(x, holes=0, length=4), x)


def test_multilabel_auroc_matches_scikit_learn_and_skips_undefined_labels():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(50, 3))
    y[:, 2] = 0
    s = rng.random((50, 3)) + 0.5 * y
    out = metrics.multilabel_auroc(y, s, ["a", "b", "c"])
    assert out["per_label"][0] == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))
    assert np.isnan(out["per_label"][2]) and out["undefined"] == 1
    assert out["mean"] == pytest.approx(np.mean(out["per_label"][:2]))
    with pytest.raises(ValueError, match="samples, labels"):
        metrics.multilabel_auroc(y, s[:, :2])


def test_engine_calls_after_step_once_per_step(tmp_path):
    from medlab import engine

    data = torch.utils.data.TensorDataset(torch.randn(12, 2), torch.randn(12, 1))
    model = nn.Linear(2, 1)
    calls = []
    engine.fit(
        model,
        data,
        run=RunContext(run_dir=tmp_path, device=torch.device("cpu"), progress=False),
        loss_fn=lambda m, b: {"loss": F.mse_loss(m(b[0]), b[1])},
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=2,
        batch_size=4,
        after_step=lambda m: calls.append(torch.is_grad_enabled()),
    )
    assert calls == [False] * 6


def test_registry_offers_an_unlabeled_split_only_where_it_exists(tmp_path):
    from medlab import data

    assert "unlabeled" in data.splits_of("chestxray14") and "unlabeled" not in data.splits_of("isic2018")
    with pytest.raises(ValueError, match=r"unknown split 'unlabeled' for dataset 'isic2018'; expected one of train, val, test"):
        data.load("isic2018", "unlabeled", n=7)
    pool = data.load("chestxray14", "unlabeled", n=6, image_size=16)
    train = data.load("chestxray14", "train", n=6, image_size=16)
    assert len(pool) == 6 and not torch.equal(pool.images, train.images)
    with pytest.raises(ValueError, match="cannot be set for the real ChestX-ray14"):
        data.load("chestxray14", "train", data_dir=tmp_path, n=6)
    with pytest.raises(ValueError, match="need n"):
        data.load("chestxray14", "train")


# --- chapter 2's package: identities, runs, channels-last and several processes ---------------------


def test_chapter_satisfies_the_contract():
    from medlab import chapter

    assert chapter.check(c2l) == []
    assert c2l.DATASETS == ("chestxray14",)
    assert [spec.main for spec in c2l.COMPARISONS] == [True, False, False, False]


def test_method_shows_its_equations_first_and_imports_no_scaffolding():
    import inspect

    source = inspect.getsource(c2l.method)
    docstring = c2l.method.__doc__
    assert all(f"Eq. ({k})" in docstring for k in range(1, 6))
    for scaffolding in ("medlab.data", "medlab.engine", "medlab.experiment", "medlab.results", "from .config", "from .runs"):
        assert scaffolding not in source


def test_pretraining_identity_holds_the_pretraining_settings_only():
    config = c2l.settings("smoke")
    params = c2l.pretrain_identity(config, "c2l", None)
    kept = (
        "image_size n_unlabeled backbone width pretrain_epochs pretrain_batch_size pretrain_lr queue_size "
        "momentum bn_splits feature_dim temperature mixup_alpha pretrain_weight_decay lr_milestones crop_scale "
        "rotation jitter cutout_holes cutout_fraction prevalence_floor data_seed"
    ).split()
    assert set(params) == {*kept, "method", "terms", "data_dir"}  # the keep-list of earlier versions
    assert params["terms"] == ["instance", "mixed", "mixed_target"]
    assert c2l.pretrain_identity(config, "c2l_queue", None)["queue_size"] == config.ablation_queue_size
    assert c2l.pretrain_identity(config, "c2l_momentum", None)["momentum"] == config.ablation_momentum
    # fine-tuning, probing, grid and execution settings never repeat a pretraining
    other = c2l.settings(
        "smoke", finetune_lr=1.0, probe_epochs=9, n_labeled=7, label_fractions="0.5", ablation_queue_size=5,
        seeds="4", workers=2, num_workers=2,
    )
    assert c2l.pretrain_identity(other, "c2l", None) == params
    assert c2l.pretrain_identity(c2l.settings("smoke", pretrain_lr=1.0), "c2l", None) != params


def test_downstream_identity_holds_its_stage_and_its_pretraining():
    config = c2l.settings("smoke")
    jobs = {(j.init, j.protocol, j.fraction): j for j in c2l.grid(config) if j.phase == 1}
    finetune = c2l.downstream_identity(config, jobs["c2l", "finetune", 1.0], None)
    probe = c2l.downstream_identity(config, jobs["c2l", "probe", 1.0], None)
    scratch = c2l.downstream_identity(config, jobs["scratch", "finetune", 1.0], None)
    assert finetune["finetune_lr"] == config.finetune_lr and "probe_lr" not in finetune
    assert probe["probe_lr"] == config.probe_lr and "finetune_lr" not in probe
    assert "pretrain_lr" not in finetune and "pretraining" not in scratch
    from medlab.runtime import stable_hash

    assert finetune["pretraining"] == stable_hash(c2l.pretrain_identity(config, "c2l", None), 16)
    # a pretraining setting reaches the downstream identity through the pretraining's identity only
    changed = c2l.settings("smoke", pretrain_lr=1.0)
    assert c2l.downstream_identity(changed, jobs["c2l", "finetune", 1.0], None)["pretraining"] != finetune["pretraining"]
    assert c2l.downstream_identity(changed, jobs["scratch", "finetune", 1.0], None) == scratch
    assert c2l.downstream_identity(c2l.settings("smoke", probe_lr=1.0), jobs["c2l", "finetune", 1.0], None) == finetune


def test_auroc_scores_count_the_images_scored():
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    from medlab.papers.c2l.runs import auroc_scores

    scores = auroc_scores(labels, labels * 0.8 + 0.1, ["a", "b"])
    assert scores["n_eval"] == 4.0 and scores["mean_auroc"] == pytest.approx(1.0)
    assert scores["auroc/a"] == pytest.approx(1.0) and scores["undefined_auroc"] == 0.0


def _same_split_batch_norms(splits: int = 2):
    a = c2l.SplitBatchNorm2d(3, splits=splits)
    with torch.no_grad():
        a.weight.uniform_(0.5, 1.5)
        a.bias.uniform_(-0.5, 0.5)
    b = c2l.SplitBatchNorm2d(3, splits=splits)
    b.load_state_dict(a.state_dict())
    return a, b


def test_split_batch_norm_keeps_a_channels_last_input_channels_last():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 4) * 2 + 1
    plain, last = _same_split_batch_norms()
    x_plain = x.clone().requires_grad_()
    x_last = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
    out_plain, out_last = plain(x_plain), last(x_last)
    assert out_last.is_contiguous(memory_format=torch.channels_last) and not out_last.is_contiguous()
    assert out_plain.is_contiguous()
    assert torch.allclose(out_last, out_plain, atol=1e-5)
    for name in ("running_mean", "running_var"):
        assert torch.allclose(getattr(last, name), getattr(plain, name), atol=1e-6)
    assert int(last.num_batches_tracked) == int(plain.num_batches_tracked) == 1
    grad = torch.randn_like(out_plain)
    out_plain.backward(grad)
    out_last.backward(grad)
    assert torch.allclose(x_last.grad, x_plain.grad, atol=1e-5)
    assert torch.allclose(last.weight.grad, plain.weight.grad, atol=1e-4)
    assert torch.allclose(last.bias.grad, plain.bias.grad, atol=1e-4)
    # evaluation: an ordinary batch norm, which keeps the format too
    assert last.eval()(x_last).is_contiguous(memory_format=torch.channels_last)


def test_a_channels_last_encoder_gives_the_contiguous_features():
    import copy

    torch.manual_seed(0)
    model = momentum_contrast(dataclasses.replace(TINY, bn_splits=2)).train()
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.rand(4, 1, 16, 16)
    features = model(x)
    assert torch.allclose(last(x.contiguous(memory_format=torch.channels_last)), features, atol=1e-4)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pretrain_in_process(rank: int, world_size: int, port: int, folder: str) -> None:
    """One of the processes of the two-process test: pretrain through the engine, save the state."""
    from pathlib import Path

    import torch.distributed as dist

    from medlab import engine

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        config = dataclasses.replace(TINY, queue_size=40)
        torch.manual_seed(0)
        model = momentum_contrast(config)
        images = torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(1))
        optimizer = torch.optim.SGD(model.query.parameters(), lr=0.5, momentum=0.9)
        run = RunContext(run_dir=Path(folder) / "run", device=torch.device("cpu"), seed=0, progress=False)
        engine.fit(
            model, torch.utils.data.TensorDataset(images), run=run, loss_fn=c2l.make_pretrain_loss("c2l", config),
            optimizer=optimizer, epochs=1, batch_size=8, after_step=lambda m: m.momentum_update(0.5),
        )
        torch.save(model.state_dict(), Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_shuffle_keys_across_processes_and_keep_identical_queues(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_pretrain_in_process, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    start = momentum_contrast(dataclasses.replace(TINY, queue_size=40)).state_dict()
    # 4 steps of a global batch of 8 (4 per process), 3 comparisons each, keys of both processes enqueued
    assert int(states[0]["queue_ptr"]) == int(states[1]["queue_ptr"]) == (4 * 3 * 8) % 40
    assert torch.equal(states[0]["queue"], states[1]["queue"])
    assert not torch.equal(states[0]["queue"], start["queue"])
    parameters = [name for name in start if not name.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    for name in parameters:  # both encoders: gradients averaged through DDP's forward, momentum update alike
        assert torch.equal(states[0][name], states[1][name]), name
    trained = [n for n in parameters if n.startswith("query.") and not torch.equal(states[0][n], start[n])]
    assert trained and any(not torch.equal(states[0][n], start[n]) for n in parameters if n.startswith("key."))


def test_split_batch_norm_is_a_plain_batch_norm_across_processes(monkeypatch):
    from medlab.papers.c2l import method

    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4)
    split, _ = _same_split_batch_norms()
    reference = nn.BatchNorm2d(3)
    reference.load_state_dict(split.state_dict())
    monkeypatch.setattr(method, "world_size", lambda: 2)
    assert torch.allclose(split(x), reference(x), atol=1e-6)
    assert torch.allclose(split.running_mean, reference.running_mean)


def test_a_downstream_run_reads_the_encoder_its_pretraining_record_points_to(tmp_path, monkeypatch):
    from medlab import experiment, results
    from medlab.runtime import stable_hash

    monkeypatch.setenv("MEDLAB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MEDLAB_RUNS_DIR", str(tmp_path / "runs"))
    config = c2l.settings(
        "smoke", image_size=16, width=4, n_unlabeled=32, n_labeled=24, n_val=16, n_test=24, pretrain_batch_size=16,
        queue_size=32, probe_epochs=1, pretrain_methods="c2l", ablation_methods="c2l_no_instance",
    )
    probe = next(j for j in c2l.grid(config) if j.variant == "c2l/probe/1")
    pretrain, record = experiment.run_grid(
        c2l, config, profile="smoke", device=torch.device("cpu"), jobs=[c2l.pretrain_job("c2l", 0), probe], progress=False
    )
    assert record["params"]["pretraining"] == stable_hash(pretrain["params"], 16)
    assert (results.run_folder(pretrain) / c2l.ENCODER_FILE).is_file()
    assert record["metrics"]["n_eval"] == 24.0 and 0 <= record["metrics"]["mean_auroc"] <= 1
    encoder = c2l.encoder_of(pretrain)
    saved = torch.load(results.run_folder(pretrain) / c2l.ENCODER_FILE, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in encoder.state_dict().items())
    data = c2l.load_data(config)
    fig = c2l.feature_map_figure([pretrain, record], data, device=torch.device("cpu"), max_images=20)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["from scratch", "C2L"]
    with pytest.raises(ValueError, match="no MoCo or C2L pretraining record of seed 3"):
        c2l.feature_map_figure([pretrain], data, device=torch.device("cpu"), seed=3)


def test_the_probes_positive_control_reads_the_backbone_of_the_scratch_fine_tuning(tmp_path, monkeypatch):
    from medlab import engine, experiment, results
    from medlab.experiment import job
    from medlab.runtime import stable_hash

    monkeypatch.setenv("MEDLAB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MEDLAB_RUNS_DIR", str(tmp_path / "runs"))
    config = c2l.settings(
        "smoke", image_size=16, width=4, n_unlabeled=32, n_labeled=24, n_val=16, n_test=24, probe_epochs=1,
        finetune_epochs=1, finetune_epoch_samples=24,
    )
    tuned = job("label_efficiency", 0, phase=1, stage="finetune", init="scratch", protocol="finetune", fraction=1.0)
    control = job("label_efficiency", 0, phase=2, stage="probe", init=c2l.SUPERVISED, protocol="probe", fraction=1.0)
    assert c2l.supervised_job(control) == tuned
    fine_tuned, probe = experiment.run_grid(c2l, config, profile="smoke", device=torch.device("cpu"), jobs=[tuned, control], progress=False)
    # the probe's identity holds the fine-tuning's, and it read that run's backbone with a fresh head
    assert probe["params"][c2l.SUPERVISED] == stable_hash(fine_tuned["params"], 16)
    best = results.run_folder(fine_tuned) / engine.BEST
    loaded = c2l.initial_encoder(config, c2l.SUPERVISED, best).state_dict()
    weights = engine.load_checkpoint(best)["model"]
    assert all(torch.equal(v, weights[f"encoder.{k}"]) for k, v in loaded.items() if not k.startswith("head."))
    assert 0 <= probe["metrics"]["mean_auroc"] <= 1 and probe["metrics"]["n_eval"] == 24.0
    with pytest.raises(ValueError, match="not a probe of the 'supervised' encoder"):
        c2l.supervised_job(tuned)
    with pytest.raises(FileNotFoundError, match="its fine-tuning from scratch first"):
        c2l.initial_encoder(config, c2l.SUPERVISED, tmp_path / "missing.pt")


def test_throughput_of_the_device_step_and_of_a_plain_loop():
    data = torch.utils.data.TensorDataset(torch.rand(8, 1, 16, 16))
    measured = c2l.measure_pretraining_throughput(TINY, data, torch.device("cpu"), steps=1, warmup=0)
    assert measured["device_images_per_s"] > 0 and measured["plain_images_per_s"] > 0
    assert measured["speedup"] == pytest.approx(measured["device_images_per_s"] / measured["plain_images_per_s"])


def test_shipped_development_records_are_the_studies_and_the_table_reads_them(tmp_path):
    import json

    from medlab.development import DEVELOPMENT_ROOT
    from medlab.papers.c2l import development

    for name, (method, changes) in development.STUDIES.items():
        config = development.study_settings(name)
        assert config.data_seed == development.DEVELOPMENT_DATA_SEED != c2l.settings("demo").data_seed
        records = [json.loads(p.read_text()) for p in sorted((DEVELOPMENT_ROOT / "c2l" / name).glob("*.json"))]
        jobs = development.study_jobs(name)
        # exactly the study's runs: one record per job, each with the study's settings on the development seed
        assert sorted((r["experiment"], r["variant"], r["seed"]) for r in records) == sorted((j.experiment, j.variant, j.seed) for j in jobs)
        # each changed setting is in the records of the stage it belongs to, with the study's value
        pretraining = {k: v for k, v in changes.items() if k != "finetune_epochs"}
        for record in records:
            assert record["params"]["data_seed"] == development.DEVELOPMENT_DATA_SEED
            if record["experiment"] == "pretrain":
                assert method in (development.GRID, record["params"]["method"])
                for key, value in pretraining.items():
                    assert record["params"][key] == pytest.approx(value), (name, key)
                assert len(record["history"]) == config.pretrain_epochs
            elif record["params"].get("protocol") == "finetune":
                assert record["params"]["finetune_epochs"] == config.finetune_epochs == len(record["history"]), name
    table = development.development_table(images_per_s=1536.0)
    mild = table.loc["mocomild100"]
    assert mild["epochs"] == 100 and mild["pretraining"] == "moco, mild views"
    assert mild["pretext best %"] >= mild["pretext last %"] and mild["minutes per pretraining here"] == pytest.approx(100 / 60, abs=0.05)
    # the description names the views, then every other setting changed from the demo's
    assert table.loc["mocoq256", "pretraining"] == "moco, the official views, queue 256"
    assert table.loc["views10crop", "pretraining"] == "moco, mild crops only, rate 0.015"
    assert table.loc["mild20w32", "pretraining"] == "moco, mild views, rate 0.015, width 32"
    assert table.loc["mild20t02", "pretraining"] == "moco, mild views, rate 0.015, temperature 0.2"
    assert "grid50" not in table.index  # the whole-grid study has its own report
    # the chapter's groups cover every one-pretraining study once, and pick their rows in their order
    groups = development.LONGER_STUDIES + development.VIEW_STUDIES + development.OPTIMISER_STUDIES
    assert sorted(groups) == sorted(development.PRETRAINING_STUDIES)
    assert list(development.development_table(studies=development.VIEW_STUDIES).index) == list(development.VIEW_STUDIES)
    with pytest.raises(ValueError, match="grid50"):
        development.development_table(studies=("grid50",))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        development.development_table(root=tmp_path)
    with pytest.raises(ValueError, match="unknown development study 'nope'"):
        development.study_settings("nope")


def test_the_whole_grid_study_reports_its_pretrainings_and_the_chapters_comparisons():
    from medlab import report
    from medlab.papers.c2l import development

    config = development.study_settings("grid50")
    assert tuple(config.seeds) == (0, 1, 2) and config.pretrain_lr == 0.015 and config.pretrain_epochs == 50
    assert {j.variant for j in development.study_jobs("grid50") if j.experiment == "pretrain"} == {"moco", "c2l"}
    table = development.grid_study_pretraining("grid50", images_per_s={"moco": 1536.0})
    assert list(table.index) == ["MoCo (no mixup)", "C2L"] and (table["seeds"] == 3).all()
    assert table.loc["MoCo (no mixup)", "minutes per pretraining here"] == pytest.approx(50 / 60, abs=0.05)
    assert pd.isna(table.loc["C2L", "minutes per pretraining here"])  # no speed given for C2L
    per_seed = [float(v) for v in table.loc["C2L", "pretext % per seed"].split(", ")]
    assert table.loc["C2L", "pretext % mean"] == pytest.approx(np.mean(per_seed), abs=0.06)
    verdicts = {v["name"]: v for v in report.evaluate_all(c2l.COMPARISONS, development.grid_study_frame("grid50"))}
    main = verdicts["C2L vs MoCo, fine-tuned, all labels"]
    assert main["n_seeds"] == 3 and main["n_eval"] == 1024
    # the records themselves decide: at 50 epochs the pretext gates still fail, so the comparison is void
    assert main["verdict"] == "void" and "pretext task learned" in main["reason"]
    with pytest.raises(ValueError, match="not a whole-grid development study"):
        development.grid_study_frame("moco30")


def test_the_probe_control_study_pairs_the_fine_tuned_backbones_probe_with_a_random_ones():
    from medlab.papers.c2l import development

    assert [j.phase for j in development.study_jobs("control") if j.init == c2l.SUPERVISED] == [2, 2, 2]
    table = development.probe_control_table()
    per_seed = table.drop(index="mean")
    assert list(per_seed.index) == [0, 1, 2]
    difference = per_seed["probe of the fine-tuned backbone"] - per_seed["probe of a random backbone"]
    assert np.allclose(difference, per_seed["probe difference, points"], atol=0.11)
    assert table.loc["mean", "95% CI"].startswith("[")
    with pytest.raises(FileNotFoundError, match="positive control"):
        development.probe_control_table("grid50")


def test_the_demo_pretrains_with_the_settings_of_the_development_study_it_was_chosen_from():
    from medlab.papers.c2l import development
    from medlab.papers.c2l.config import DOWNSTREAM, PRETRAIN

    demo, chosen = c2l.settings("demo"), development.study_settings(development.CHOSEN_STUDY)
    staged = [f.name for f in dataclasses.fields(demo) if set(f.metadata.get("stages") or ()) & {*PRETRAIN, *DOWNSTREAM}]
    assert {"pretrain_epochs", "pretrain_lr", "crop_scale", "jitter", "finetune_epochs", "probe_lr"} <= set(staged)
    assert {name: getattr(demo, name) for name in staged} == {name: getattr(chosen, name) for name in staged}
    assert demo.data_seed != chosen.data_seed == development.DEVELOPMENT_DATA_SEED
    # the paper profile keeps the official views
    paper = c2l.settings("paper")
    assert {k: getattr(paper, k) for k in development.OFFICIAL_VIEWS} == development.OFFICIAL_VIEWS


def test_the_flips_studies_summary_reads_the_records_and_the_main_comparison():
    from medlab import report
    from medlab.papers.c2l import development

    table = development.grid_studies_summary()
    assert list(table.index) == list(development.FLIPS_STUDIES)
    assert list(table["seeds"]) == [3, 3, 7, 7, 7] and list(table["epochs"]) == [20, 40, 30, 30, 30]
    assert list(table["fine-tuning epochs"]) == [12, 12, 12, 20, 24]
    assert (table["views"] == "flips only").all()
    # each row's verdict is the main comparison's on that study's records, whatever they hold
    for name, row in table.iterrows():
        verdict = next(v for v in report.evaluate_all(c2l.COMPARISONS, development.grid_study_frame(name)) if v["main"])
        assert row["verdict"] == verdict["verdict"]
        failed = [gate for gate, passed in verdict["gates"].items() if not passed]
        assert row["gates failed"] == (", ".join(failed) or "none")
        frame = development.grid_study_frame(name)
        pretrain = frame[frame["experiment"] == "pretrain"]
        moco = pretrain[pretrain["params.method"] == "moco"]["metrics.heldout_pretext_accuracy"].mean()
        assert row["pretext MoCo %"] == pytest.approx(100 * moco, abs=0.06)
