"""Chapter 4 (cross-denoising): the losses, the selection, the pseudo-labels, the evaluation and the grid
on tiny tensors; the sync-free rewrites against the previous implementations; the chapter contract."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from medlab import chapter, experiment, metrics, report
from medlab.engine import RunContext
from medlab.papers import cross_denoise as cd
from medlab.papers.cross_denoise import runs as cd_runs


def disc_mask(size: int = 32, disc: int = 9, cup: int = 4, centre=(16, 16)) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - centre[0], xx - centre[1])
    return np.where(r <= cup, 2, np.where(r <= disc, 1, 0)).astype(np.int64)


def confident_logits(masks: torch.Tensor, scale: float = 8.0) -> torch.Tensor:
    return F.one_hot(masks, 3).permute(0, 3, 1, 2).float() * scale


def test_segmentation_loss_is_small_for_the_right_answer_and_ignores_zero_weights():
    masks = torch.from_numpy(disc_mask())[None].repeat(2, 1, 1)
    right = cd.segmentation_loss(confident_logits(masks, 20.0), masks)
    wrong = cd.segmentation_loss(confident_logits(torch.zeros_like(masks), 20.0), masks)
    assert right.shape == (2,) and torch.all(right < 0.01) and torch.all(wrong > 1.0)
    # a pixel with weight 0 does not count, whatever its label
    weights = torch.ones(masks.shape)
    weights[:, :4, :4] = 0
    flipped = masks.clone()
    flipped[:, :4, :4] = 2
    logits = torch.randn(2, 3, 32, 32)
    assert torch.allclose(cd.segmentation_loss(logits, masks, weights), cd.segmentation_loss(logits, flipped, weights))


def test_segmentation_loss_by_hand():
    logits = torch.zeros(1, 3, 1, 2)  # uniform: CE = log 3 everywhere
    masks = torch.tensor([[[0, 2]]])
    # disc prob = cup prob + rim prob = 2/3 on both pixels, cup prob 1/3; disc target (0, 1), cup target (0, 1)
    dice_disc = (2 * (2 / 3) + 1) / ((4 / 3) + 1 + 1)
    dice_cup = (2 * (1 / 3) + 1) / ((2 / 3) + 1 + 1)
    expected = math.log(3) + 1 - (dice_disc + dice_cup) / 2
    assert cd.segmentation_loss(logits, masks).item() == pytest.approx(expected, rel=1e-5)


def test_keep_ratio_falls_linearly_to_one_minus_the_forget_rate():
    assert cd.keep_ratio(0, 0.5, 4) == 1.0
    assert cd.keep_ratio(2, 0.5, 4) == pytest.approx(0.75)
    assert cd.keep_ratio(4, 0.5, 4) == pytest.approx(0.5)
    assert cd.keep_ratio(40, 0.5, 4) == pytest.approx(0.5)
    assert cd.keep_ratio(0, 0.5, 0) == pytest.approx(0.5)


def test_small_loss_selection_keeps_the_smallest():
    losses = torch.tensor([0.9, 0.1, 0.5, 0.3])
    assert cd.small_loss_selection(losses, 0.5).tolist() == [1, 3]
    assert cd.small_loss_selection(losses, 0.6).tolist() == [1, 3, 2]  # ceil(2.4) = 3
    assert cd.small_loss_selection(losses, 0.0).tolist() == [1]  # never empty
    assert len(cd.small_loss_selection(losses, 1.0)) == 4


def test_key_location_weights_fade_at_the_boundaries():
    mask = disc_mask(48, disc=14, cup=6, centre=(24, 24))
    w = cd.key_location_weights(mask, band=0.25)
    assert w.shape == mask.shape and w.dtype == np.float32
    assert w.min() >= 0 and w.max() <= 1
    assert w[24, 24 + 14] < 0.2 and w[24, 24 + 6] < 0.2  # on the disc and the cup outlines
    assert w[0, 0] > 0.95 and w[24, 24 + 10] > 0.3  # far outside; in the rim between the outlines
    assert np.all(cd.key_location_weights(np.zeros((8, 8), int), 0.25) == 1)  # no region, no boundary
    floored = cd.key_location_weights(mask, band=0.25, floor=0.5)
    assert floored.min() >= 0.5 and np.allclose(floored, 0.5 + 0.5 * w)
    with pytest.raises(ValueError, match="shape"):
        cd.key_location_weights(np.zeros((2, 8, 8)), 0.25)


def test_disagreement_filter_drops_confidently_rejected_labels():
    peer = torch.log(torch.tensor([[0.95, 0.04, 0.01], [0.5, 0.3, 0.2]])).T.reshape(1, 3, 1, 2)
    labels = torch.tensor([[[2, 2]]])  # the peer gives label 2 a probability of 0.01 and 0.2
    assert cd.disagreement_filter(peer, labels, 0.9).tolist() == [[[0.0, 1.0]]]
    assert cd.disagreement_filter(peer, labels, 0.995).tolist() == [[[1.0, 1.0]]]


def test_class_level_pseudo_labels_keep_the_small_class():
    # 90 background pixels with confidence 0.9-0.99, 10 cup pixels with confidence 0.6-0.69
    p = torch.zeros(1, 3, 1, 100)
    p[0, 0, 0, :90] = torch.linspace(0.9, 0.99, 90)
    p[0, 1, 0, :90] = 1 - p[0, 0, 0, :90]
    p[0, 2, 0, 90:] = torch.linspace(0.6, 0.69, 10)
    p[0, 0, 0, 90:] = 1 - p[0, 2, 0, 90:]
    labels, keep = cd.class_level_pseudo_labels(p.log(), 0.5, class_level=True)
    assert labels[0, 0, 95] == 2
    assert keep[labels == 2].sum() == 5 and keep[labels == 0].sum() == 45
    _, keep_global = cd.class_level_pseudo_labels(p.log(), 0.5, class_level=False)
    assert keep_global[labels == 2].sum() == 0 and keep_global.sum() == 50


def test_agreed_pseudo_labels_keep_only_confident_agreement():
    peer = torch.log(torch.tensor([[0.95, 0.03, 0.02], [0.05, 0.05, 0.9], [0.1, 0.05, 0.85], [0.02, 0.02, 0.96]]))
    own = torch.log(torch.tensor([[0.92, 0.04, 0.04], [0.03, 0.03, 0.94], [0.05, 0.05, 0.9], [0.6, 0.2, 0.2]]))
    as_map = lambda p: p.T.reshape(1, 3, 1, 4)  # noqa: E731
    labels, keep = cd.agreed_pseudo_labels(as_map(peer), as_map(own), 0.9)
    assert labels.tolist() == [[[0, 2, 2, 2]]]
    # pixel 2: the peer is only 85% sure; pixel 3: the learner says background
    assert keep.tolist() == [[[True, True, False, False]]]


def test_selection_count_is_known_on_the_host():
    assert [cd.selection_count(16, r) for r in (1.0, 0.5, 0.26, 0.0)] == [16, 8, 5, 1]


def test_random_drop_hands_over_as_many_samples_as_peer_selection_but_not_the_smallest(monkeypatch):
    config = dataclasses.replace(cd.settings("smoke"), selection_epochs=1, epochs=2)
    batch = tiny_batch(config, n=8)
    monkeypatch.setattr(cd_runs, "flip_half", lambda *maps: maps)
    picks = []
    for seed in range(6):
        torch.manual_seed(seed)
        model = cd.make_peers(config, "random_drop", 8)
        model.steps_done = 2
        cd.training_step(model, batch, config, cd.METHODS["random_drop"], forget_rate=0.5, steps_per_epoch=2)
        assert model.picked[:, 1].sum(1).tolist() == [4, 4]
        picks.append(tuple(model.picked[0, 1].tolist()))
    assert len(set(picks)) > 1  # drawn at random, not by the loss


class MaskOracle(torch.nn.Module):
    """A "network" that reads the mask a test hid in the image's first channel: right wherever the mask
    is, so a pseudo-label it hands over is right unless the masks it is compared with are misaligned."""

    def forward(self, images):
        return F.one_hot(images[:, 0].round().long().clamp(0, 2), 3).permute(0, 3, 1, 2).float() * 10


def test_flip_half_flips_masks_with_their_images():
    """The pseudo-label accuracy compares predictions on flipped target images with masks flipped alike."""
    torch.manual_seed(0)
    images = torch.rand(16, 3, 8, 8)
    masks = (images[:, 0] > 0.5).long()
    flipped_images, flipped_masks = cd_runs.flip_half(images, masks)
    assert torch.equal(flipped_masks, (flipped_images[:, 0] > 0.5).long())
    assert not torch.equal(flipped_images, images)  # some were flipped


def test_pseudo_label_accuracy_compares_with_the_flipped_target_masks():
    """The target masks are flipped with their images (a bug compared the predictions on flipped images
    with unflipped masks): a peer that is always right scores 100% on every flip."""
    config = dataclasses.replace(cd.settings("smoke"), selection_epochs=1, cross_ramp_epochs=1, epochs=3)
    batch = tiny_batch(config, n=8)
    asymmetric = torch.from_numpy(np.stack([disc_mask(config.image_size, disc=5, cup=2, centre=(16, 8))] * 8))
    batch["target_mask"] = asymmetric
    batch["target_image"] = asymmetric[:, None].float().repeat(1, 3, 1, 1)
    batch["image"] = batch["noisy_mask"][:, None].float().repeat(1, 3, 1, 1)
    model = cd.Peers([MaskOracle(), MaskOracle()], config.epochs, 8)
    model.steps_done = 4
    torch.manual_seed(0)
    out = cd.training_step(model, batch, config, cd.METHODS["cross_denoise"], forget_rate=0.5, steps_per_epoch=2)
    assert out["pseudo_label_accuracy_a"].item() == 1.0 and out["pseudo_cup_accuracy_b"].item() == 1.0


def test_pseudo_label_quality_by_hand():
    config = cd.settings("smoke")
    masks = torch.from_numpy(np.stack([disc_mask(config.image_size)] * 2))
    images = masks[:, None].float().repeat(1, 3, 1, 1)
    model = cd.Peers([MaskOracle(), MaskOracle()], config.epochs, 2)
    q = cd.pseudo_label_quality(model, images, masks, config, cd.METHODS["cross_denoise"], torch.device("cpu"))
    assert q["pseudo/accuracy"] == 1.0 and q["pseudo/cup_precision"] == 1.0
    # ties in the confidence: every pixel of a class is at its class's median, so every pixel is kept
    assert q["pseudo/kept"] == 1.0 and q["pseudo/cup_coverage"] == 1.0
    wrong = masks.clone()
    wrong[masks == 2] = 1  # the truth has no cup: every kept cup pixel is wrong
    q = cd.pseudo_label_quality(model, images, wrong, config, cd.METHODS["cross_denoise"], torch.device("cpu"))
    assert q["pseudo/cup_precision"] == 0.0 and np.isnan(q["pseudo/cup_coverage"])


def test_cross_learning_loss_averages_within_then_over_classes():
    logits = torch.zeros(1, 3, 1, 4)
    logits[0, 0, 0, :3] = 2.0  # three background pixels predicted confidently, one cup pixel uniform
    labels = torch.tensor([[[0, 0, 0, 2]]])
    keep = torch.ones_like(labels, dtype=torch.bool)
    ce_background = -torch.log_softmax(torch.tensor([2.0, 0, 0]), 0)[0]
    expected = (ce_background + math.log(3)) / 2
    assert cd.cross_learning_loss(logits, labels, keep).item() == pytest.approx(expected.item(), rel=1e-5)
    pooled = (3 * ce_background + math.log(3)) / 4
    assert cd.cross_learning_loss(logits, labels, keep, class_level=False).item() == pytest.approx(pooled.item(), rel=1e-5)
    assert cd.cross_learning_loss(logits, labels, torch.zeros_like(keep)).item() == 0.0
    assert cd.cross_learning_loss(logits, labels, torch.zeros_like(keep), class_level=False).item() == 0.0


def test_cross_weight_waits_for_the_warm_up():
    assert [cd.cross_weight(e, 1.0, selection_epochs=3, ramp_epochs=2) for e in range(6)] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]
    assert cd.cross_weight(10, 0.5, 3, 0) == 0.5


def test_vertical_cup_to_disc_ratio_by_hand():
    mask = np.zeros((10, 10), int)
    mask[2:8, 3:6] = 1  # disc spans 6 rows
    mask[4:7, 4] = 2  # cup spans 3 rows
    assert metrics.vertical_cup_to_disc_ratio(mask) == pytest.approx(0.5)
    empty_cup = np.where(mask == 2, 1, mask)
    batch = np.stack([mask, empty_cup, np.zeros_like(mask)])
    out = metrics.vertical_cup_to_disc_ratio(torch.from_numpy(batch))
    assert out[0] == pytest.approx(0.5) and out[1] == 0 and np.isnan(out[2])


def test_segmentation_scores_of_a_perfect_and_an_empty_prediction():
    masks = torch.from_numpy(np.stack([disc_mask(), disc_mask(disc=10, cup=6)]))
    perfect = cd.segmentation_scores(confident_logits(masks).softmax(1), masks)
    assert perfect["dice/optic disc"] == pytest.approx(1.0) and perfect["dice/optic cup"] == pytest.approx(1.0)
    assert perfect["hd95/optic disc"] == 0 and perfect["vcdr_error"] == 0 and perfect["mean_dice"] == pytest.approx(1.0)
    empty = cd.segmentation_scores(confident_logits(torch.zeros_like(masks)).softmax(1), masks)
    assert empty["dice/optic disc"] == 0 and empty["vcdr_error"] == 1.0  # no disc found: the worst error


def test_selection_summary_by_hand():
    picked = np.array([[[1, 1, 0, 0]], [[1, 0, 1, 0]]])  # 2 peers, 1 epoch, 4 samples
    offered = np.array([[1, 1, 1, 1]])
    corrupted = np.array([False, False, True, True])
    s = cd.selection_summary(picked, offered, corrupted)
    assert s["offered_corrupted"] == [0.5] and s["picked_corrupted_a"] == [0.0] and s["picked_corrupted_b"] == [0.5]


def tiny_batch(config, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = config.image_size
    masks = torch.from_numpy(np.stack([disc_mask(size, disc=size // 4, cup=size // 8)] * n))
    images = torch.rand(n, 3, size, size, generator=g)
    weights = torch.from_numpy(np.stack([cd.key_location_weights(m, 0.25) for m in masks.numpy()]))
    return {
        "index": torch.arange(n), "image": images, "noisy_mask": masks, "key_weights": weights,
        "target_image": torch.rand(n, 3, size, size, generator=g), "target_mask": masks.clone(),
    }


@pytest.mark.parametrize("method", list(cd.METHODS))
def test_training_step_runs_every_method_and_logs_the_selection(method):
    config = dataclasses.replace(cd.settings("smoke"), selection_epochs=1, cross_ramp_epochs=1, epochs=3)
    spec = cd.METHODS[method]
    model = cd.make_peers(config, method, 8)
    model.steps_done = 4  # epoch 2 of steps_per_epoch 2: past the warm-up, cross learning on
    out = cd.training_step(model, tiny_batch(config), config, spec, forget_rate=0.5, steps_per_epoch=2)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    for net in model.nets:
        assert all(p.grad is not None for p in net.parameters())
    if spec.peers:
        assert model.offered[2].sum() == 8
        assert model.picked[:, 2].sum(1).tolist() == ([4, 4] if spec.selection else [8, 8])  # random_drop too
        assert ("cross_a" in out) == spec.cross_learning
        if spec.cross_learning:
            assert 0 <= out["pseudo_label_accuracy_a"] <= 1


def test_coteaching_learner_only_sees_the_samples_its_peer_picked(monkeypatch):
    config = dataclasses.replace(cd.settings("smoke"), selection_epochs=1, epochs=2)
    model = cd.make_peers(config, "coteaching", 8)
    model.steps_done = 2
    batch = tiny_batch(config)
    images = batch["image"].clone().requires_grad_(True)
    batch["image"] = images
    monkeypatch.setattr(cd_runs, "flip_half", lambda *maps: maps)  # no flips: input gradients map to the samples
    out = cd.training_step(model, batch, config, cd.METHODS["coteaching"], forget_rate=0.5, steps_per_epoch=2)
    out["loss"].backward()
    touched = images.grad.flatten(1).abs().sum(1) > 0
    picked = (model.picked[:, 1] > 0).any(0)
    assert touched.tolist() == picked.tolist()


def test_peers_average_the_networks_and_keep_the_selection_in_the_state():
    config = cd.settings("smoke")
    model = cd.make_peers(config, "cross_denoise", 5)
    x = torch.rand(2, 3, config.image_size, config.image_size)
    probabilities = model.eval()(x)
    assert probabilities.shape == (2, 3, config.image_size, config.image_size)
    assert torch.allclose(probabilities.sum(1), torch.ones(2, config.image_size, config.image_size), atol=1e-5)
    model.steps_done = 7
    model.record_selection(1, torch.tensor([4, 0]), [torch.tensor([1]), torch.tensor([0, 1])])
    state = model.state_dict()
    assert state["picked"].shape == (2, config.epochs, 5) and "offered" in state
    restored = cd.make_peers(config, "cross_denoise", 5)
    restored.load_state_dict(state)  # a resumed run continues the host's step count and the selection record
    assert restored.steps_done == 7
    assert restored.offered[1].tolist() == [1, 0, 0, 0, 1] and restored.picked[:, 1].tolist() == [[1, 0, 0, 0, 0], [1, 0, 0, 0, 1]]
    assert len(cd.make_peers(config, "single", 5).nets) == 1


def test_settings_validate_their_values():
    with pytest.raises(ValueError, match="unknown method"):
        cd.settings("smoke", methods=("single", "mystery"))
    with pytest.raises(ValueError, match="noise rates"):
        cd.settings("smoke", noise_rates=(0.0, 1.5))
    with pytest.raises(ValueError, match="divisible"):
        cd.settings("smoke", image_size=30)
    with pytest.raises(ValueError, match="confident_fraction"):
        cd.settings("smoke", confident_fraction=0.0)
    with pytest.raises(ValueError, match="forget_rate"):
        cd.settings("smoke", forget_rate=1.0)
    with pytest.raises(ValueError, match="main_kind 'blur'"):
        cd.settings("smoke", main_kind="blur")
    with pytest.raises(ValueError, match="axis_seeds"):
        cd.settings("smoke", seeds=(0, 1), axis_seeds=(5,))
    with pytest.raises(ValueError, match="agreement_confidence"):
        cd.settings("smoke", agreement_confidence=1.5)


def test_grid_covers_the_experiments_once():
    config = cd.settings("demo")
    jobs = cd.grid(config)
    assert all(isinstance(j, experiment.Job) and j.phase == 0 for j in jobs)
    keys = [(j.method, j.rate, j.kind, j.seed) for j in jobs]
    assert len(keys) == len(set(keys))
    main = [j for j in jobs if j.experiment == "main"]
    assert {(j.kind, j.rate) for j in main} == {(config.main_kind, config.main_rate)}
    assert {j.method for j in main} == set(config.methods) and {j.seed for j in main} == set(config.seeds)
    assert len(main) == len(config.methods) * len(config.seeds)
    clean = [j for j in jobs if j.experiment == "clean"]
    assert {j.rate for j in clean} == {0.0} and len(clean) == len(config.clean_methods) * len(config.seeds)
    axis = [j for j in jobs if j.experiment == "noise_rate"]
    assert {j.rate for j in axis} == set(config.noise_rates) and {j.seed for j in axis} == set(config.axis_seeds)
    assert not [j for j in jobs if j.experiment == "noise_kind"]  # the demo leaves the kinds to the paper profile
    # the longest runs first: two peers with cross learning, then two peers, then the single network
    order = [(not cd.METHODS[j.method].cross_learning, not cd.METHODS[j.method].peers) for j in jobs]
    assert order == sorted(order)


def test_a_cell_shared_by_two_experiments_runs_once_under_the_first():
    config = cd.settings("paper")
    jobs = cd.grid(config)
    kinds = [j for j in jobs if j.experiment == "noise_kind"]
    # the main kind at kind_rate is a cell of the noise-rate axis, which comes first
    assert config.kind_rate in config.noise_rates and {j.kind for j in kinds} == set(cd.NOISE_KINDS) - {config.main_kind}
    assert len(kinds) == (len(cd.NOISE_KINDS) - 1) * len(config.kind_methods) * len(config.seeds)
    assert {j.method for j in jobs if j.experiment == "main"} >= {"no_selection", "no_noise_tolerant", "global_confidence"}


def test_unknown_noise_kind_is_named():
    with pytest.raises(ValueError, match="'blur'"):
        cd.corrupted_masks(torch.zeros(2, 8, 8, dtype=torch.long), 0.5, "blur", 0)


def fake_frame(gain: float = 0.06) -> pd.DataFrame:
    """Records of every declared comparison, 8 seeds: peer selection ``gain`` above the single network
    (with a little seed noise), the full method 5 points below it."""
    rows = []
    rng = np.random.default_rng(0)
    levels = {"single": 0.72, "coteaching": 0.72 + gain, "random_drop": 0.72, "no_cross_learning": 0.78,
              "cross_denoise": 0.67, "agreement": 0.75}
    for seed in range(8):
        for experiment_name, rate, methods in (("main", 0.5, levels), ("clean", 0.0, ("single", "cross_denoise"))):
            for method in methods:
                dice = levels[method] + 0.01 * rng.standard_normal() + (0.08 if experiment_name == "clean" else 0.0)
                rows.append({
                    "experiment": experiment_name, "params.method": method, "params.rate": rate, "params.kind": "erosion",
                    "seed": seed, "metrics.mean_dice": dice, "metrics.source/mean_dice": dice + 0.05,
                    "metrics.n_eval": 256.0, "path": f"{experiment_name}-{method}-{seed}",
                    "metrics.picked_corrupted": 0.2 if method == "coteaching" and rate else np.nan,
                })
    for seed in range(4):  # the noise-rate axis: peer selection 3 points ahead at 25%, 10 at 50%
        for rate, gain_at_rate in ((0.25, 0.03), (0.5, 0.10)):
            for method, level in (("single", 0.75), ("coteaching", 0.75 + gain_at_rate)):
                rows.append({
                    "experiment": "noise_rate", "params.method": method, "params.rate": rate, "params.kind": "erosion",
                    "seed": seed, "metrics.mean_dice": level + 0.002 * rng.standard_normal(), "metrics.n_eval": 256.0,
                    "path": f"axis-{rate}-{method}-{seed}",
                })
    return pd.DataFrame(rows)


def test_comparisons_are_declared_with_the_dice_floor_and_one_main():
    assert [c.name for c in cd.COMPARISONS if c.main] == ["peer selection vs single network"]
    for spec in cd.COMPARISONS:
        assert (spec.floor, spec.ceiling) == (0.0, 1.0) and spec.metric.endswith(cd.PRIMARY)
        methods = {spec.method, spec.baseline} if spec.column == "params.method" else {spec.where["params.method"]}
        assert methods <= set(cd.settings("demo").methods) | set(cd.settings("demo").clean_methods)
    # the axis comparisons are declared at the rates the demo and paper profiles run
    axis = [c for c in cd.COMPARISONS if c.where.get("experiment") == "noise_rate"]
    assert {c.where["params.rate"] for c in axis} == set(cd.settings("demo").noise_rates) == set(cd.settings("paper").noise_rates)
    assert all({c.method, c.baseline} <= set(cd.settings("demo").rate_methods) for c in axis)


def test_verdicts_follow_the_intervals():
    verdicts = {v["name"]: v for v in report.evaluate_all(cd.COMPARISONS, fake_frame())}
    main = verdicts["peer selection vs single network"]
    assert main["verdict"] == "better" and main["n_seeds"] == 8 and main["gates"]["precise_enough"]
    assert verdicts["cross-denoising (full) vs single network"]["verdict"] == "worse"
    assert verdicts["random drop (two networks) vs single network"]["verdict"] == "no_difference"
    assert verdicts["agreement variant vs the same peers without cross learning"]["verdict"] == "worse"
    # each point of the noise-rate axis is paired over its own rate's runs only (4 axis seeds)
    at_25, at_50 = (verdicts[f"peer selection vs single network, {r} eroded (noise-rate axis)"] for r in ("25%", "50%"))
    assert at_25["n_seeds"] == at_50["n_seeds"] == 4 and not at_25["main"]
    assert at_25["diff_mean"] == pytest.approx(0.03, abs=0.01) and at_50["diff_mean"] == pytest.approx(0.10, abs=0.01)
    damage = verdicts["the corruption's damage (single network, corrupted vs clean masks)"]
    assert damage["verdict"] == "worse" and damage["diff_mean"] == pytest.approx(-0.08, abs=0.01)
    # a baseline below halfway from an empty mask to a perfect one voids the comparison
    low = fake_frame()
    low.loc[low["params.method"] == "single", "metrics.mean_dice"] = 0.3
    assert report.evaluate(cd.COMPARISONS[0], low)["verdict"] == "void"


def test_findings_are_written_from_the_verdicts():
    text = cd.findings(fake_frame())
    assert text.startswith("- (main) **peer selection vs single network**: peer selection (Co-teaching) minus single")
    assert re.search(r"mean dice \+[5-7]\.\d points \(95% interval \+\d\.\d to \+\d\.\d, 8 seeds, 256 test items\)", text)
    assert "20% (95% interval 20% to 20%) of the masks" in text


def test_registry_offers_both_domains_synthetic_and_refuses_n_with_real_data(tmp_path):
    from medlab import data as datasets

    source = datasets.load("refuge", "train", n=3, image_size=32, seed=1)
    target = datasets.load("drishti_gs", "test", n=3, image_size=32, seed=1)
    image, mask = source[0]
    assert image.shape == (3, 32, 32) and mask.shape == (32, 32) and set(mask.unique().tolist()) <= {0, 1, 2}
    assert source.info["domain"] == "refuge" and target.info["domain"] == "drishti"
    with pytest.raises(ValueError, match="cannot be set for the real REFUGE"):
        datasets.load("refuge", "train", data_dir=tmp_path, n=3)
    with pytest.raises(ValueError, match="needs n"):
        datasets.load("drishti_gs", "train")


def test_curves_figure_draws_every_method_from_the_records():
    records = [
        {"experiment": "noise_rate", "seed": s, "params": {"method": m, "rate": 0.5, "kind": "mixed"},
         "history": [{"val/target_dice_disc": 0.5 + 0.01 * e, "val/target_dice_cup": 0.4} for e in range(4)]}
        for m in ("single", "coteaching", "cross_denoise") for s in (0, 1)
    ]
    fig = cd.curves_figure(records, 0.5, "mixed")
    assert [len(ax.lines) for ax in fig.axes] == [3, 3]
    assert fig.axes[0].lines[0].get_ydata()[-1] == pytest.approx(53.0)


FIXTURE_SIZES = {"n_source_train": 5, "n_source_test": 3, "n_target_train": 10, "n_target_test": 3}


@pytest.fixture(name="fundus_fixtures")
def _fundus_fixtures(tmp_path):
    """REFUGE (source) and Drishti-GS (target) fixtures written in their official layouts."""
    from test_data_drishti_gs import write_drishti
    from test_data_refuge import write_refuge

    refuge = tmp_path / "REFUGE"
    write_refuge(refuge)
    return refuge, write_drishti(tmp_path)


def test_paper_settings_are_checked_against_the_real_splits_before_any_image_is_decoded(fundus_fixtures, monkeypatch):
    refuge, drishti = fundus_fixtures
    decoded = []
    from medlab.data.formats.refuge import REFUGE

    monkeypatch.setattr(REFUGE, "load_pair", lambda self, index: decoded.append(index))
    config = dataclasses.replace(cd.settings("paper"), image_size=32, widths=(4, 8, 16))
    with pytest.raises(ValueError, match=r"REFUGE train split under .*REFUGE holds 5 image\(s\), fewer than the 400 that "
                       r"n_source_train=400 asks for: set n_source_train to at most 5"):
        cd.check_data(config, refuge, drishti)
    assert decoded == []  # failed on the file count, before reading a pixel
    small = dataclasses.replace(config, **{**FIXTURE_SIZES, "n_target_train": 11})
    with pytest.raises(ValueError, match=r"Drishti-GS train split .* holds 10 image\(s\).*target_data_dir"):
        cd.check_data(small, refuge, drishti)


def test_paper_profile_trains_on_the_official_layouts(fundus_fixtures, tmp_path):
    """Through load_data and one short run of the full method; a split larger than the settings ask
    for gives a subset of that size."""
    refuge, drishti = fundus_fixtures
    config = dataclasses.replace(
        cd.settings("paper"), image_size=32, widths=(4, 8, 16), epochs=2, batch_size=2, selection_epochs=1,
        cross_ramp_epochs=1, num_workers=0, **{**FIXTURE_SIZES, "n_target_train": 8},
    )
    cd.check_data(config, refuge, drishti)
    data = cd.load_data(config, refuge, drishti)
    assert data.info["kind"] == "real" and data.info["source_train"]["kind"] == "real"
    assert len(data.source_train[0]) == 5 and data.source_train[0].shape[1:] == (3, 32, 32)
    assert len(data.target_train[0]) == 8 and data.info["target_train"]["images"] == 8  # 8 of the 10 Training images
    job = experiment.job("main", 0, method="cross_denoise", kind=cd.MIXED, rate=0.4)
    run = RunContext(run_dir=tmp_path / "run", device=torch.device("cpu"), seed=0, fingerprint="test", progress=False)
    out = cd.train(config, data, job, run)
    assert out.metrics["corrupted_fraction"] == pytest.approx(0.4)
    assert 0 <= out.metrics["dice/optic disc"] <= 1 and "source/vcdr_error" in out.metrics
    assert out.metrics["n_eval"] == len(data.target_test[0]) and out.metrics["source/n_eval"] == len(data.source_test[0])
    assert (tmp_path / "run" / cd.SELECTION_FILE).exists()
    assert out.fit.history[-1]["train/cross_weight"] == 1.0
    assert out.fit.history[0]["train/keep_ratio"] == 1.0 and out.fit.history[-1]["train/keep_ratio"] == pytest.approx(0.6)


# ---------------------------------------------------------------------------------------------
# The sync-free rewrites against the previous implementations (copied here as references)


def reference_pseudo_labels(peer_logits, fraction, class_level=True):
    """The previous Eq. (6) selection: boolean-mask indexing and torch.quantile per class."""
    with torch.no_grad():
        probabilities = torch.softmax(peer_logits.float(), 1)
        confidence, labels = probabilities.max(1)
        keep = torch.zeros_like(labels, dtype=torch.bool)
        groups = [labels == k for k in range(probabilities.shape[1])] if class_level else [torch.ones_like(keep)]
        for group in groups:
            values = confidence[group]
            if values.numel() == 0:
                continue
            threshold = torch.quantile(values, 1.0 - fraction) if fraction < 1 else values.min()
            keep |= group & (confidence >= threshold)
    return labels, keep


def reference_cross_learning_loss(logits, labels, keep, class_level=True):
    """The previous Eq. (6) loss: means over boolean-mask selections, ``.any()`` tests."""
    pixel_ce = F.cross_entropy(logits.float(), labels, reduction="none")
    if not class_level:
        return pixel_ce[keep].mean() if keep.any() else pixel_ce.sum() * 0.0
    per_class = [pixel_ce[keep & (labels == k)].mean() for k in range(logits.shape[1]) if (keep & (labels == k)).any()]
    return torch.stack(per_class).mean() if per_class else pixel_ce.sum() * 0.0


def random_logits(trial: int, generator: torch.Generator) -> torch.Tensor:
    n, size = 1 + trial % 4, 2 + (5 * trial) % 17
    logits = torch.randn(n, 3, size, size, generator=generator) * (0.5 + trial % 5)
    if trial % 3 == 0:
        logits[:, 2] -= 30  # no pixel of the cup: an empty class
    if trial % 7 == 0:
        logits = logits.round()  # ties in the confidences
    return logits


@pytest.mark.parametrize("class_level", [True, False])
def test_pseudo_labels_equal_the_previous_implementation(class_level):
    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        logits = random_logits(trial, g)
        for fraction in (0.1, 0.3, 0.5, 0.77, 1.0):
            labels, keep = cd.class_level_pseudo_labels(logits, fraction, class_level)
            old_labels, old_keep = reference_pseudo_labels(logits, fraction, class_level)
            assert torch.equal(labels, old_labels) and torch.equal(keep, old_keep), (trial, fraction)


@pytest.mark.parametrize("class_level", [True, False])
def test_cross_learning_loss_equals_the_previous_implementation(class_level):
    """Same values and gradients up to float round-off (the sums run in another order)."""
    g = torch.Generator().manual_seed(1)
    for trial in range(60):
        labels, keep = cd.class_level_pseudo_labels(random_logits(trial, g), 0.3 + 0.1 * (trial % 7), class_level)
        if trial % 11 == 0:
            keep = torch.zeros_like(keep)  # nothing kept
        logits = torch.randn(*labels.shape[:1], 3, *labels.shape[1:], generator=g).requires_grad_(True)
        new = cd.cross_learning_loss(logits, labels, keep, class_level)
        old = reference_cross_learning_loss(logits, labels, keep, class_level)
        (new_grad,) = torch.autograd.grad(new, logits)
        (old_grad,) = torch.autograd.grad(old, logits)
        assert new.item() == pytest.approx(old.item(), rel=1e-6, abs=1e-7)
        assert torch.allclose(new_grad, old_grad, rtol=1e-5, atol=1e-8)


def test_masked_mean():
    values = torch.tensor([1.0, 2.0, 6.0, float("inf")])
    assert cd.masked_mean(values, torch.tensor([True, False, True, False])).item() == 3.5  # inf left out
    assert cd.masked_mean(values, torch.zeros(4, dtype=torch.bool)).item() == 0.0


class HostReads:
    """Records the operations that make the host wait for the device: reading a value (``.item()``,
    ``int()``, ``bool()``) and data-dependent shapes (boolean-mask indexing, ``nonzero``)."""

    NAMES = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::_unique2"}

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        seen = self.seen = []
        names = self.NAMES

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func._schema.name
                if name in names:
                    seen.append(name)
                if name.startswith(("aten::index", "aten::_index_put")) and len(args) > 1 and isinstance(args[1], (list, tuple)):
                    if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]):
                        seen.append(f"{name} with a boolean mask")
                return func(*args, **(kwargs or {}))

        self.mode = Mode()

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def test_the_host_read_detector_catches_the_previous_implementation():
    labels, keep = reference_pseudo_labels(torch.randn(2, 3, 4, 4), 0.5)
    with HostReads() as reads:
        reference_pseudo_labels(torch.randn(2, 3, 4, 4), 0.5)
        reference_cross_learning_loss(torch.randn(2, 3, 4, 4), labels, keep)
    assert any("boolean mask" in name for name in reads.seen) and "aten::_local_scalar_dense" in reads.seen


@pytest.mark.parametrize("method", ["cross_denoise", "global_confidence", "coteaching"])
def test_training_step_never_waits_for_the_device(method):
    """Forward and backward of a step past the warm-up (every term on): no value read on the host, no
    data-dependent shape."""
    config = dataclasses.replace(cd.settings("smoke"), selection_epochs=1, cross_ramp_epochs=1, epochs=3)
    model = cd.make_peers(config, method, 8)
    model.steps_done = 4
    with HostReads() as reads:
        out = cd.training_step(model, tiny_batch(config), config, cd.METHODS[method], forget_rate=0.5, steps_per_epoch=2)
        out["loss"].backward()
    assert reads.seen == []


# ---------------------------------------------------------------------------------------------
# Runs, records and the figures that reopen a run's files


def test_chapter_contract():
    assert chapter.check(cd) == []
    assert cd.DATASETS == ("refuge", "drishti_gs")
    roles = {f.name: f.metadata.get("role", "training") for f in dataclasses.fields(cd.Settings)}
    assert {name for name, role in roles.items() if role == "grid"} == {
        "seeds", "main_kind", "main_rate", "methods", "clean_methods", "rate_methods", "noise_rates", "axis_seeds",
        "kind_methods", "kind_rate",
    }
    params = experiment.run_identity(cd.settings("smoke"), method="single", rate=0.5, kind=cd.MIXED)
    assert "workers" not in params and "noise_rates" not in params and params["forget_rate"] is None


@pytest.fixture(name="tiny_config")
def _tiny_config():
    return dataclasses.replace(cd.settings("smoke"), epochs=3, selection_epochs=1, cross_ramp_epochs=1)


def test_run_job_writes_records_that_the_figures_read(tiny_config, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("MEDLAB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MEDLAB_RUNS_DIR", str(tmp_path / "runs"))
    jobs = [experiment.job("noise_rate", 0, method=m, kind=cd.MIXED, rate=0.5) for m in ("single", "cross_denoise")]
    records = [cd.run_job(j, config=tiny_config, profile="smoke", device="cpu", progress=False) for j in jobs]
    full = records[1]
    assert full["metrics"]["n_eval"] == tiny_config.n_target_test and "picked_corrupted" in full["metrics"]
    assert full["params"]["method"] == "cross_denoise" and full["params"]["target_data_dir"] is None
    assert cd.describe(jobs[1], full).startswith("noise_rate: cross_denoise, 50% mixed, seed 0: target Dice disc")
    peers = cd.load_peers(full)
    assert len(peers.nets) == 2 and peers.steps_done == tiny_config.epochs * 2
    assert cd.selection_figure(full, "title") is not None
    picks = cd.picks_by_kind(full)
    assert "clean" in picks.index and picks.columns.tolist() == ["picked in the last epoch %"]
    data = cd.load_data(tiny_config)
    fig = cd.predictions_figure(records, data, kind=cd.MIXED, rate=0.5, seed=0, methods=("single", "cross_denoise"), samples=2)
    assert len(fig.axes) == 4 * 4
    frame = cd.results_frame(records)
    table = cd.pseudo_label_table(frame)
    assert table is not None and table.index.tolist() == [(cd.METHOD_LABELS["cross_denoise"], 50)]
    assert 0 <= full["metrics"]["pseudo/cup_precision"] <= 1 and full["metrics"]["pseudo/kept"] == pytest.approx(0.5, abs=0.05)
    history = cd.pseudo_history(records, 0.5, cd.MIXED, ("single", "cross_denoise"))
    assert list(history.columns) == [cd.METHOD_LABELS["cross_denoise"]] and len(history) == tiny_config.epochs
    assert np.isnan(history.iloc[0, 0]) and np.isfinite(history.iloc[-1, 0])  # cross learning starts after the warm-up
    fig = cd.noise_axis_figure(frame, cd.MIXED, ("single", "cross_denoise"))
    assert len(fig.axes) == 3
    with pytest.raises(ValueError, match="no record of coteaching"):
        cd.predictions_figure(records, data, kind=cd.MIXED, rate=0.5, seed=0, methods=("coteaching",))


def test_a_resumed_run_ends_as_an_uninterrupted_one(tiny_config, tmp_path):
    """The host's step count (hence the epoch, the selection size and lambda) survives a resume."""
    data = cd.load_data(tiny_config)
    job = experiment.job("noise_rate", 0, method="cross_denoise", kind=cd.MIXED, rate=0.5)

    def run(folder):
        return RunContext(run_dir=tmp_path / folder, device=torch.device("cpu"), seed=0, fingerprint="f", progress=False)

    whole = cd.train(tiny_config, data, job, run("whole"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDLAB_INTERRUPT_AFTER_EPOCH", "1")
        with pytest.raises(KeyboardInterrupt):
            cd.train(tiny_config, data, job, run("resumed"))
    resumed = cd.train(tiny_config, data, job, run("resumed"))
    assert resumed.fit.resumed_from_epoch == 1
    np.testing.assert_equal(resumed.metrics, whole.metrics)
    assert [h["train/keep_ratio"] for h in resumed.fit.history] == [h["train/keep_ratio"] for h in whole.fit.history]
    saved = [np.load(tmp_path / folder / cd.SELECTION_FILE) for folder in ("whole", "resumed")]
    assert np.array_equal(saved[0]["picked"], saved[1]["picked"]) and np.array_equal(saved[0]["offered"], saved[1]["offered"])


def test_check_data_names_a_bad_folder(tmp_path):
    with pytest.raises(Exception, match=str(tmp_path / "missing")):
        cd.check_data(cd.settings("smoke"), tmp_path / "missing")
