"""Chapter 5 (Crossover-Net): the patches, the network, the loss by hand, the sampling, dense prediction
and the clean-up on tiny tensors; the scores; the runs' data, centres and grid; the declared
comparisons; the chapter contract."""

from __future__ import annotations

import copy
import inspect
import math

import numpy as np
import pandas as pd
import pytest
import torch

from medlab import chapter, report
from medlab.experiment import run_identity
from medlab.papers import crossover as cx

SMALL = cx.TRUNKS["small"]


def blob_mask(size: int = 24, radius: float = 5.0, centre=(12, 12)) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.hypot(yy - centre[0], xx - centre[1]) <= radius


def all_patches(images: torch.Tensor, spec, arms):
    n, _, h, w = images.shape
    padded = cx.pad_for_patches(images, spec.length)
    index, rows, cols = (g.flatten() for g in torch.meshgrid(torch.arange(n), torch.arange(h), torch.arange(w), indexing="ij"))
    return {a: cx.extract_patches(padded, index, rows, cols, spec.length, spec.width, a, spec.length) for a in arms}


# --- Eq. (1): the crossover-patch ---------------------------------------------------------------------


def test_patches_are_the_pixels_around_the_centre_and_the_horizontal_arm_is_transposed():
    image = torch.arange(20 * 30, dtype=torch.float32).reshape(1, 1, 20, 30)
    padded = cx.pad_for_patches(image, 10)
    at = [torch.tensor([v]) for v in (0, 9, 14)]
    vertical = cx.extract_patches(padded, *at, 10, 4, "vertical", 10)[0, 0]
    horizontal = cx.extract_patches(padded, *at, 10, 4, "horizontal", 10)[0, 0]
    assert torch.equal(vertical, image[0, 0, 4:14, 12:16])  # rows r - L//2 .. r + L - 1 - L//2
    assert torch.equal(horizontal, image[0, 0, 7:11, 9:19].T)  # W rows by L columns, transposed
    # they share the W x W square around the centre
    assert torch.equal(vertical[3:7], horizontal[3:7].T)


def test_patches_beyond_the_border_are_zero_and_bad_requests_are_refused():
    image = torch.ones(1, 1, 6, 6)
    padded = cx.pad_for_patches(image, 10)
    patch = cx.extract_patches(padded, torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), 10, 2, "vertical", 10)[0, 0]
    assert patch[:5].sum() == 0 and patch[5:].sum() == 5 * 1  # only column 0 of rows 0..4 inside (width 2: columns -1, 0)
    with pytest.raises(ValueError, match="unknown arm"):
        cx.extract_patches(padded, torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), 10, 2, "diagonal", 10)
    with pytest.raises(ValueError, match="padded for at least"):
        cx.extract_patches(padded, torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), 12, 2, "vertical", 10)


def test_the_horizontal_arm_is_the_vertical_arm_of_the_transposed_image():
    image = torch.rand(2, 1, 11, 13)
    at = (torch.tensor([1, 0]), torch.tensor([3, 10]), torch.tensor([12, 0]))
    h = cx.extract_patches(cx.pad_for_patches(image, 40), *at, 40, 8, "horizontal", 40)
    v = cx.extract_patches(cx.pad_for_patches(image.transpose(-1, -2), 40), at[0], at[2], at[1], 40, 8, "vertical", 40)
    assert torch.equal(h, v)


# --- Eq. (2): the network -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, positions", [("paper", 19), ("small", 14)])
def test_trunk_shapes_follow_the_official_layers(name, positions):
    spec = cx.TRUNKS[name]
    trunk = cx.ArmTrunk(spec)
    embedding, line = trunk(torch.rand(3, 1, spec.length, spec.width))
    assert trunk.positions == positions and embedding.shape == (3, spec.embedding) and line.shape == (3, spec.layers[-1][1], positions)
    if name == "paper":
        assert spec.embedding == 500 and [c.out_channels for c in trunk.convs] == [16, 36, 64, 64]


def test_a_trunk_that_does_not_reduce_its_patch_is_refused():
    with pytest.raises(ValueError, match="does not reduce"):
        cx.ArmTrunk(cx.TrunkSpec(40, 8, (("conv", 4, 3, 3),), ((8, 3, 1),)))


def test_one_trunk_serves_both_arms_and_gradients_reach_it_from_each():
    torch.manual_seed(0)
    net = cx.CrossoverNet(SMALL)
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in cx.ArmTrunk(SMALL).parameters()) + 2 * (2 * SMALL.embedding) + 2
    patches = {a: torch.rand(4, 1, 40, 8) for a in ("vertical", "horizontal")}
    logits, lines = net(patches)
    assert logits.shape == (4, 2) and set(lines) == {"vertical", "horizontal"}
    for arm in ("vertical", "horizontal"):
        net.zero_grad()
        lines[arm].sum().backward(retain_graph=True)
        assert net.trunk.convs[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        cx.CrossoverNet(SMALL, ("square",))


@pytest.mark.parametrize("trunk, arms", [("small", ("vertical", "horizontal")), ("small", ("horizontal",)), ("small_square", ("square",))])
def test_dense_prediction_equals_patch_by_patch_prediction(trunk, arms):
    torch.manual_seed(1)
    spec = cx.TRUNKS[trunk]
    net = cx.CrossoverNet(spec, arms).double()
    images = torch.rand(2, 1, 6, 5, dtype=torch.double)
    dense = net.dense_logits(images)
    logits, _ = net(all_patches(images, spec, arms))
    assert dense.shape == (2, 2, 6, 5)
    assert torch.allclose(dense, logits.reshape(2, 6, 5, 2).permute(0, 3, 1, 2), atol=1e-10)
    assert torch.allclose(cx.patchwise_logits(net, images, chunk=17), dense, atol=1e-10)


def test_transposing_the_image_swaps_the_arms():
    torch.manual_seed(2)
    net = cx.CrossoverNet(SMALL).double()
    swapped = copy.deepcopy(net)
    with torch.no_grad():
        e = SMALL.embedding
        swapped.head.weight.copy_(torch.cat([net.head.weight[:, e:], net.head.weight[:, :e]], 1))
    images = torch.rand(1, 1, 8, 10, dtype=torch.double)
    assert torch.allclose(swapped.dense_logits(images.transpose(-1, -2)), net.dense_logits(images).transpose(-1, -2), atol=1e-10)


# --- Eq. (3): the loss ----------------------------------------------------------------------------------


def test_overlap_and_ends_reproduce_the_official_positions():
    assert cx.overlap_and_ends(19, 5) == ([7, 8, 9, 10], [0, 1, 2, 16, 17, 18])
    assert cx.overlap_and_ends(14, 5) == ([6, 7], [0, 1, 12, 13])
    with pytest.raises(ValueError, match="too short"):
        cx.overlap_and_ends(3, 5)


def _lines():
    """Two samples, one channel, 14 positions; the vertical arm is zero, the horizontal arm is a_j on
    sample 0 only, so d_j = |a_j|: overlap (6, 7) -> 1, 3; ends (0, 1, 12, 13) -> 2, 4, 6, 10."""
    vertical = torch.zeros(2, 1, 14)
    horizontal = torch.zeros(2, 1, 14)
    for j, a in {6: 1.0, 7: 3.0, 0: 2.0, 1: 4.0, 12: 6.0, 13: 10.0}.items():
        horizontal[0, 0, j] = a
    return vertical, horizontal


def test_crossover_loss_by_hand():
    vertical, horizontal = _lines()
    logits, labels = torch.zeros(2, 2), torch.tensor([0, 1])
    out = cx.crossover_loss(logits, labels, vertical, horizontal, ratio=5)
    # overlap distances 1, 3 -> min-max 0, 1 -> mean 0.5; ends 2, 4, 6, 10 -> 0, .25, .5, 1 -> mean 0.4375
    assert out["ce"].item() == pytest.approx(math.log(2))
    assert out["consistency"].item() == pytest.approx(0.5, abs=1e-6)
    assert out["diversity"].item() == pytest.approx(0.4375, abs=1e-6)
    assert out["loss"].item() == pytest.approx(math.log(2) + 0.5 - 0.4375, abs=1e-6)
    weighted = cx.crossover_loss(logits, labels, vertical, horizontal, ratio=5, consistency_weight=2.0, diversity_weight=0.5)
    assert weighted["loss"].item() == pytest.approx(math.log(2) + 1.0 - 0.21875, abs=1e-6)
    plain = cx.crossover_loss(logits, labels, vertical, horizontal, ratio=5, normalise="none")
    assert plain["consistency"].item() == pytest.approx(2 / math.sqrt(2), abs=1e-5)  # mean(1, 3) / sqrt(B)
    assert plain["diversity"].item() == pytest.approx(5.5 / math.sqrt(2), abs=1e-5)


def test_crossover_loss_is_cross_entropy_alone_without_a_second_arm_or_weights():
    vertical, horizontal = _lines()
    logits, labels = torch.randn(2, 2), torch.tensor([1, 0])
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert cx.crossover_loss(logits, labels)["loss"] == ce
    watched = cx.crossover_loss(logits, labels, vertical, horizontal, consistency_weight=0, diversity_weight=0)
    assert watched["loss"] == ce and watched["consistency"].item() == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="normalise"):
        cx.crossover_loss(logits, labels, vertical, horizontal, normalise="zscore")


def test_each_sample_is_compared_with_its_own_other_arm():
    torch.manual_seed(3)
    v, h = torch.rand(6, 4, 14), torch.rand(6, 4, 14)
    order = torch.randperm(6)
    assert torch.allclose(cx.arm_distance(v, h), cx.arm_distance(v[order], h[order]))
    assert cx.arm_distance(v, v).max() < 1e-3  # identical arms: no distance, whatever the batch order
    # the official reshape would compare sample b's channels with other samples' (it changes the distance)
    mixed = h.reshape(-1, 6).t().reshape(6, 4, 14)
    assert not torch.allclose(cx.arm_distance(v, h), cx.arm_distance(v, mixed))


def test_min_max_maps_to_the_unit_interval_and_the_regulariser_has_gradients():
    d = cx.min_max(torch.tensor([[2.0, 4.0], [3.0, 6.0]]))
    assert d.min() == 0 and d.max().item() == pytest.approx(1.0) and d[0, 1].item() == pytest.approx(0.5)
    torch.manual_seed(4)
    v, h = torch.rand(4, 3, 14, requires_grad=True), torch.rand(4, 3, 14, requires_grad=True)
    out = cx.crossover_loss(torch.randn(4, 2, requires_grad=True), torch.tensor([0, 1, 0, 1]), v, h)
    out["loss"].backward()
    overlap, ends = cx.overlap_and_ends(14, 5)
    assert v.grad[..., overlap].abs().sum() > 0 and v.grad[..., ends].abs().sum() > 0
    middle = [j for j in range(14) if j not in overlap + ends]
    assert v.grad[..., middle].abs().sum() == 0  # positions outside both regions are not regularised


# --- Eq. (4): sampling; Eq. (5): clean-up -----------------------------------------------------------------


def test_sampling_is_denser_near_the_boundary_and_labels_follow_the_mask():
    mask = blob_mask(48, 10, (24, 24))
    rows, cols, labels = cx.sample_centres(mask, np.random.default_rng(0), grid_step=6, boundary_fraction=0.4, ring_offsets=(2.0, 4.0, 9.0), ring_rates=(0.3, 0.2, 0.1))
    assert np.array_equal(labels, mask[rows, cols].astype(np.int64))
    from scipy import ndimage

    distance = np.where(mask, ndimage.distance_transform_edt(mask), ndimage.distance_transform_edt(~mask))
    taken = np.zeros(mask.shape, bool)
    taken[rows, cols] = True
    near, far = distance <= 2, distance > 9
    assert taken[near].mean() > 2 * taken[far].mean()
    again = cx.sample_centres(mask, np.random.default_rng(0), grid_step=6, boundary_fraction=0.4, ring_offsets=(2.0, 4.0, 9.0), ring_rates=(0.3, 0.2, 0.1))
    assert np.array_equal(again[0], rows) and np.array_equal(again[1], cols)
    with pytest.raises(ValueError, match="rates"):
        cx.sample_centres(mask, np.random.default_rng(0), grid_step=6, boundary_fraction=0.4, ring_offsets=(2.0,), ring_rates=())


def test_balancing_keeps_every_rare_sample_and_as_many_of_the_other_class():
    labels = np.array([1, 0, 0, 0, 1, 0, 0])
    keep = cx.balance_classes(labels, np.random.default_rng(0))
    assert (labels[keep] == 1).sum() == (labels[keep] == 0).sum() == 2 and {0, 4} <= set(keep)


def test_clean_up_closes_fills_and_keeps_the_largest_component():
    mask = blob_mask(32, 8, (14, 14))
    mask[14, 14] = False  # a hole
    mask[28:30, 28:30] = True  # a speck
    cleaned = cx.clean_up(mask, radius=1)
    assert cleaned[14, 14] and not cleaned[28:30, 28:30].any()
    ring = blob_mask(32, 10, (16, 16)) & ~blob_mask(32, 6, (16, 16))
    assert not cx.clean_up(ring, radius=1, fill_holes=False)[16, 16] and cx.clean_up(ring, radius=1)[16, 16]
    split = blob_mask(32, 6, (16, 16))
    split[:, 16] = False  # a one-pixel gap, bridged by the closing
    assert cx.clean_up(split, radius=1)[16, 16]
    assert not cx.clean_up(np.zeros((8, 8), bool), radius=1).any()


# --- scores -----------------------------------------------------------------------------------------------


def test_scores_by_hand():
    truth = np.zeros((2, 10, 10), bool)
    truth[:, 2:6, 2:6] = True  # 16 pixels, centroid (3.5, 3.5)
    pred = np.zeros_like(truth)
    pred[0, 2:6, 2:4] = True  # half of the target, centroid (3.5, 2.5)
    assert cx.true_positive_fraction(pred, truth)[0] == pytest.approx(0.5)
    distances = cx.centroid_distance(pred, truth)
    assert distances[0] == pytest.approx(1.0) and distances[1] == pytest.approx(math.hypot(10, 10))
    perfect = cx.segmentation_scores(truth, truth, raw=truth)
    assert perfect["dice"] == 1 and perfect["hd95"] == 0 and perfect["tpf"] == 1 and perfect["centroid"] == 0 and perfect["n_eval"] == 2
    scores = cx.segmentation_scores(pred, truth)
    assert scores["dice"] == pytest.approx((2 * 8 / 24 + 0) / 2)


# --- the runs ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke():
    config = cx.settings("smoke")
    return config, cx.load_data(config)


def test_synthetic_data_and_balanced_training_centres(smoke):
    config, data = smoke
    assert data.train[0].shape == (config.n_train, 1, 32, 32) and data.test[1].shape == (config.n_test, 32, 32)
    assert data.info["kind"] == "synthetic" and (data.train[1].flatten(1).sum(1) > 0).all()
    centres = cx.training_centres(data.train[1], config, seed=0)
    assert len(centres) <= config.max_centres and centres[:, 3].sum() * 2 == len(centres)
    assert torch.equal(centres, cx.training_centres(data.train[1], config, seed=0))
    assert not torch.equal(centres, cx.training_centres(data.train[1], config, seed=1))
    index, rows, cols, labels = centres.unbind(1)
    assert torch.equal(data.train[1][index, rows, cols], labels)


def test_the_training_step_gathers_on_the_device_and_never_reads_back(smoke):
    config, data = smoke
    torch.manual_seed(0)
    model = cx.make_model("crossover", config.trunk, config.unet_widths)
    padded = cx.pad_for_patches(data.train[0], model.spec.length)
    out = cx.patch_step(model, cx.training_centres(data.train[1], config, 0)[:16], padded, cx.METHODS["crossover"], config)
    assert {"loss", "ce", "consistency", "diversity"} <= set(out) and out["loss"].requires_grad
    source = inspect.getsource(cx.patch_step)
    assert not any(call in source for call in (".item(", ".cpu(", ".numpy(", ".tolist("))


def test_check_data_says_when_the_arms_cannot_span_the_targets(smoke):
    config, _ = smoke
    cx.check_data(config)
    with pytest.raises(ValueError, match="more than the 40-pixel arms"):
        cx.check_data(cx.settings("smoke", image_size=256, unet_widths=(4, 8)))


def test_grid_runs_the_side_methods_at_the_side_seeds_among_the_seeds():
    config = cx.settings("demo")
    jobs = cx.grid(config)
    assert len(jobs) == 9 * 6 and jobs[0].method == "unet"
    assert {j.stage for j in jobs if j.method == "unet"} == {"unet"} and {j.experiment for j in jobs if j.method == "square"} == {"baselines"}
    assert len(cx.grid(cx.settings("demo", seeds="0,1"))) == 9 * 2
    assert len(cx.grid(cx.settings("demo", side_seeds="0"))) == 3 * 6 + 6
    patch = run_identity(config, stage="patch", method="crossover")
    unet = run_identity(config, stage="unet", method="unet")
    assert "lr" in patch and "unet_lr" not in patch and "unet_lr" in unet and "trunk" not in unet


def test_settings_are_validated():
    for overrides, message in (({"task": "liver"}, "unknown task"), ({"trunk": "huge"}, "unknown trunk"), ({"ring_rates": (0.1,)}, "ring_rates"), ({"methods": ("magic",)}, "unknown method")):
        with pytest.raises(ValueError, match=message):
            cx.settings("demo", **overrides)


def test_one_run_of_each_kind_trains_and_scores(smoke, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLAB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MEDLAB_RUNS_DIR", str(tmp_path / "runs"))
    config, _ = smoke
    for item in [j for j in cx.grid(config) if j.method in ("crossover", "unet")]:
        record = cx.run_job(item, config=config, profile="smoke", device="cpu", progress=False)
        assert {"dice", "hd95", "tpf", "centroid", "dice_raw", "n_eval"} <= set(record["metrics"])
        assert "val/dice" in record["history"][-1]
        model = cx.load_model(record)
        assert isinstance(model, cx.CrossoverNet) == (item.method == "crossover")


# --- the report and the contract ----------------------------------------------------------------------------


def _frame(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"seed": s, "params.method": m, "metrics.dice": v, "metrics.n_eval": 192.0} for m, vs in values.items() for s, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_declared_comparisons_are_decided_by_the_evidence_standard():
    main = [spec for spec in cx.COMPARISONS if spec.main]
    assert {(s.method, s.baseline) for s in main} == {("crossover", "ce_only"), ("crossover", "unet")}
    frame = _frame({"crossover": [0.70, 0.71, 0.72, 0.70, 0.71], "ce_only": [0.68, 0.69, 0.70, 0.68, 0.69], "unet": [0.80, 0.81, 0.79, 0.80, 0.82]})
    verdicts = {v["baseline"]: v for v in report.evaluate_all(main, frame)}
    assert verdicts["ce_only"]["verdict"] == "better" and verdicts["unet"]["verdict"] == "worse"
    weak = _frame({"crossover": [0.3, 0.31], "ce_only": [0.3, 0.3]})
    assert report.evaluate(main[0], weak)["verdict"] == "void"


def test_the_chapter_satisfies_the_contract():
    assert chapter.check(cx) == []
