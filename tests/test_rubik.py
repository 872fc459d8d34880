"""Chapter 3 (Rubik's cube recovery): the permutation set, cutting and scrambling cubes (and undoing
it), the losses on hand-computed values, the networks, the 3D metrics, the grid and the identity of
its two stages, a pretraining and a fine-tuning run end to end, and the chapter contract."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from medlab import engine, metrics, results
from medlab.nets.volumes import UNet3d, VolumeClassifier, VolumeEncoder
from medlab.papers import rubik

TINY = dataclasses.replace(rubik.PROFILES["smoke"], volume_size=16, cube_size=4, widths=(2, 4), hidden=8, num_permutations=6)


def test_permutation_set_size_distinctness_and_hamming_distance():
    for k in (2, 8, 24, 100):
        p = rubik.permutation_set(k)
        assert p.shape == (k, 8)
        assert torch.equal(p[0], torch.arange(8))  # the identity first
        assert all(sorted(row.tolist()) == list(range(8)) for row in p)
        assert len({tuple(row.tolist()) for row in p}) == k
    # 8 orderings where every cube moves exist (a Latin square); the greedy choice finds them
    assert rubik.min_hamming_distance(rubik.permutation_set(8)) == 8
    assert rubik.min_hamming_distance(rubik.permutation_set(24)) >= 7
    assert rubik.min_hamming_distance(rubik.permutation_set(100)) >= 6
    # greedy maximin: no unchosen ordering is farther from the chosen set than the next one chosen
    chosen = rubik.permutation_set(5)
    assert rubik.min_hamming_distance(chosen[:4]) >= rubik.min_hamming_distance(chosen)
    with pytest.raises(ValueError, match="k must be in"):
        rubik.permutation_set(0)


def test_min_hamming_distance_by_hand():
    p = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7], [1, 0, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1, 0]])
    assert rubik.min_hamming_distance(p) == 2


def test_layout_keeps_cubes_inside_with_a_gap():
    torch.manual_seed(0)
    starts = rubik.random_layout(200, 16, 5, torch.device("cpu"))
    assert starts.shape == (200, 3, 2)
    gaps = starts[..., 1] - starts[..., 0] - 5
    assert gaps.min() >= 0 and gaps.max() <= 6 and len(set(gaps.flatten().tolist())) == 7
    assert starts[..., 0].min() >= 0 and (starts[..., 1] + 5).max() <= 16
    with pytest.raises(ValueError, match="do not fit"):
        rubik.random_layout(1, 9, 5, torch.device("cpu"))


def test_cut_cubes_takes_each_cube_from_its_corner():
    volumes = torch.arange(2 * 3 * 10**3, dtype=torch.float32).reshape(2, 3, 10, 10, 10)
    starts = torch.tensor([[[0, 6], [1, 5], [2, 6]], [[1, 5], [0, 6], [0, 6]]])
    cubes = rubik.cut_cubes(volumes, starts, 4)
    assert cubes.shape == (2, 8, 3, 4, 4, 4)
    for b in range(2):
        for i in range(8):
            d, h, w = (starts[b, a, bit] for a, bit in enumerate((i // 4, (i // 2) % 2, i % 2)))
            assert torch.equal(cubes[b, i], volumes[b, :, d : d + 4, h : h + 4, w : w + 4])


def test_scramble_moves_and_turns_cubes_as_labelled():
    cubes = torch.randn(1, 8, 1, 3, 3, 3)
    order = torch.tensor([[7, 6, 5, 4, 3, 2, 1, 0]])
    rotations = torch.zeros(1, 8, 2, dtype=torch.bool)
    rotations[0, 0, 0] = True  # slot 0 about the horizontal axis: reverse the last two axes
    rotations[0, 1, 1] = True  # slot 1 about the vertical axis: reverse the first and last axes
    rotations[0, 2] = True  # slot 2 both: reverse the first two axes
    out = rubik.scramble(cubes, order, rotations)
    assert torch.equal(out[0, 0], cubes[0, 7].flip(-2, -1))
    assert torch.equal(out[0, 1], cubes[0, 6].flip(-3, -1))
    assert torch.equal(out[0, 2], cubes[0, 5].flip(-3, -2))
    assert torch.equal(out[0, 3], cubes[0, 4])


def test_slot_after_turn_by_hand_and_against_turning_the_whole_volume():
    # slot 0 is corner (0, 0, 0): horizontal reverses H and W, vertical D and W, both D and H
    assert [rubik.slot_after_turn(0, a) for a in ("horizontal", "vertical", "both")] == [3, 5, 6]
    volume = torch.randn(1, 1, 6, 6, 6)
    starts = torch.tensor([[[0, 3], [0, 3], [0, 3]]])  # no gap: the cubes tile the volume
    for axis, dims in (("horizontal", (-2, -1)), ("vertical", (-3, -1)), ("both", (-3, -2))):
        bits = torch.tensor([axis in (a, "both") for a in rubik.ROTATION_AXES]).expand(1, 8, 2)
        turned_cubes = rubik.scramble(rubik.cut_cubes(volume, starts, 3), torch.arange(8)[None], bits)
        cubes_of_turned_volume = rubik.cut_cubes(volume.flip(dims), starts, 3)
        for slot in range(8):
            assert torch.equal(cubes_of_turned_volume[0, rubik.slot_after_turn(slot, axis)], turned_cubes[0, slot])
    with pytest.raises(ValueError, match="slot"):
        rubik.slot_after_turn(8, "both")
    with pytest.raises(ValueError, match="axis"):
        rubik.slot_after_turn(0, "diagonal")


def test_turned_cube_lookalikes_on_symmetric_heads_and_on_noise():
    grid = torch.arange(8, dtype=torch.float32) - 3.5
    symmetric = (grid.abs()[:, None, None] * 1 + grid.abs()[None, :, None] * 2 + grid.abs()[None, None, :] * 3)
    volumes = torch.stack([symmetric, 2 * symmetric + 1])[:, None]  # two heads, mirror-symmetric on every axis
    starts = torch.tensor([[0, 5], [0, 5], [0, 5]]).expand(2, 3, 2)  # the same gap on both sides
    table = rubik.turned_cube_lookalikes(volumes, 3, starts=starts)
    assert list(table.index) == ["no turn", "horizontal", "vertical", "both"]
    assert table.iloc[0, 0] == pytest.approx(1.0, abs=1e-5)  # one slot in two heads: the same pattern
    assert np.allclose(table.iloc[1:, 1], 1.0, atol=1e-5)  # every turned cube is the cube from across
    noise = rubik.turned_cube_lookalikes(torch.randn(16, 1, 16, 16, 16), 6, seed=1)
    assert noise.abs().max().max() < 0.1  # independent voxels: nothing looks like anything
    with pytest.raises(ValueError, match="two volumes"):
        rubik.turned_cube_lookalikes(volumes[:1], 3)


def test_inverting_the_proxy_labels_recovers_the_volume():
    torch.manual_seed(1)
    volumes = torch.randn(4, 2, 16, 16, 16)
    permutations = rubik.permutation_set(24)
    proxy = rubik.make_proxy_batch(volumes, permutations, TINY.cube_size)
    assert proxy["rotations"].any() and (proxy["classes"] > 0).any()
    restored = rubik.unscramble(proxy["cubes"], permutations[proxy["classes"]], proxy["rotations"])
    assert torch.equal(restored, rubik.cut_cubes(volumes, proxy["starts"], TINY.cube_size))
    rebuilt = rubik.assemble(restored, proxy["starts"], 16, fill=float("nan"))
    inside = ~torch.isnan(rebuilt)
    assert inside.sum() == 4 * 2 * 8 * TINY.cube_size**3
    assert torch.equal(rebuilt[inside], volumes[inside])
    # and with wrong labels it does not
    wrong = rubik.unscramble(proxy["cubes"], permutations[(proxy["classes"] + 1) % 24], proxy["rotations"])
    assert not torch.equal(wrong, restored)


def test_ablation_variants_leave_the_other_transformation_out():
    volumes = torch.randn(6, 1, 16, 16, 16)
    permutations = rubik.permutation_set(6)
    move = rubik.puzzle(volumes, permutations, rubik.PRETRAINING["rearrangement"], TINY)
    assert not move["rotations"].any() and (move["classes"] > 0).any()
    turn = rubik.puzzle(volumes, permutations, rubik.PRETRAINING["rotation"], TINY)
    assert (turn["classes"] == 0).all() and turn["rotations"].any()
    alone = rubik.make_proxy_batch(volumes, permutations, TINY.cube_size, permute=False)
    assert (alone["classes"] == 0).all()


def test_losses_on_hand_computed_values():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    classes = torch.tensor([0, 2])
    expected = (-math.log(math.exp(2) / (math.exp(2) + 2)) - math.log(1 / (2 + math.e))) / 2
    assert rubik.rearrangement_loss(logits, classes).item() == pytest.approx(expected, rel=1e-6)
    rotation_logits = torch.zeros(1, 8, 2)
    rotation_logits[0, 0, 0] = math.log(3)  # sigmoid = 3/4
    rotations = torch.zeros(1, 8, 2, dtype=torch.bool)
    rotations[0, 0, 0] = True
    # 15 labels at p = 1/2 -> log 2 each; one at p = 3/4 for a true label -> -log(3/4)
    expected = (15 * math.log(2) - math.log(0.75)) / 16
    assert rubik.rotation_loss(rotation_logits, rotations).item() == pytest.approx(expected, rel=1e-6)


def test_proxy_losses_weight_and_skip_terms():
    torch.manual_seed(0)
    model = rubik.SiameseOctad(VolumeEncoder(1, TINY.widths), rubik.permutation_set(6), hidden=8)
    cubes = torch.randn(3, 8, 1, 4, 4, 4)
    classes = torch.tensor([0, 3, 5])
    rotations = torch.rand(3, 8, 2) < 0.5
    model.eval()
    weights = {"permutation_weight": 2.0, "rotation_weight": 0.5}
    both = rubik.proxy_losses(model, cubes, classes, rotations, **weights)
    assert both["loss"].item() == pytest.approx(2.0 * both["permutation_loss"].item() + 0.5 * both["rotation_loss"].item(), rel=1e-5)
    only_turns = rubik.proxy_losses(model, cubes, classes, rotations, **weights, permute=False)
    assert "permutation_loss" not in only_turns and only_turns["loss"].item() == pytest.approx(0.5 * both["rotation_loss"].item(), rel=1e-5)
    only_moves = rubik.proxy_losses(model, cubes, classes, rotations, **weights, rotate=False)
    assert "rotation_loss" not in only_moves
    # the chapter's wiring passes its settings' weights and the variant's terms
    config = dataclasses.replace(TINY, permutation_weight=2.0, rotation_weight=0.5)
    proxy = {"cubes": cubes, "classes": classes, "rotations": rotations}
    wired = rubik.puzzle_losses(model, proxy, rubik.PRETRAINING["rotation"], config)
    assert wired["loss"].item() == pytest.approx(only_turns["loss"].item(), rel=1e-6)


def test_siamese_octad_shares_one_branch_and_sees_the_order():
    torch.manual_seed(0)
    model = rubik.SiameseOctad(VolumeEncoder(2, (2, 4)), rubik.permutation_set(6), hidden=8).eval()
    cubes = torch.randn(2, 8, 2, 4, 4, 4)
    permutation_logits, rotation_logits = model(cubes)
    assert permutation_logits.shape == (2, 6) and rotation_logits.shape == (2, 8, 2)
    assert sum(1 for m in model.modules() if isinstance(m, VolumeEncoder)) == 1
    swapped = cubes[:, [1, 0, 2, 3, 4, 5, 6, 7]]
    assert not torch.allclose(model(swapped)[0], permutation_logits)  # concatenation keeps the slots apart


def test_volume_networks_shapes_and_encoder_checks():
    encoder = VolumeEncoder(4, (2, 4, 8))
    x = torch.randn(2, 4, 16, 16, 16)
    skips = encoder(x)
    assert [tuple(s.shape[1:]) for s in skips] == [(2, 16, 16, 16), (4, 8, 8, 8), (8, 4, 4, 4)]
    assert VolumeClassifier(encoder, 3)(x).shape == (2, 3)
    unet = UNet3d(encoder, 4)
    out = unet(x)
    assert out.shape == (2, 4, 16, 16, 16)
    out.mean().backward()
    assert encoder.stages[0][0].weight.grad is not None
    with pytest.raises(ValueError, match="divisible by 4"):
        encoder(torch.randn(1, 4, 10, 16, 16))
    with pytest.raises(ValueError, match=r"\(N, 4, D, H, W\)"):
        encoder(torch.randn(1, 3, 16, 16, 16))


def test_pretrained_encoder_initialises_both_downstream_networks(tmp_path):
    encoder = VolumeEncoder(1, TINY.widths)
    torch.nn.init.constant_(encoder.stages[0][0].weight, 0.25)
    path = tmp_path / rubik.ENCODER_FILE
    torch.save(encoder.state_dict(), path)
    loaded = rubik.initial_encoder(TINY, 1, path)
    assert torch.equal(loaded.stages[0][0].weight, encoder.stages[0][0].weight)
    assert torch.equal(UNet3d(loaded, 4).encoder.stages[0][0].weight, encoder.stages[0][0].weight)
    with pytest.raises(FileNotFoundError, match="no trained encoder at .*missing.pt"):
        rubik.initial_encoder(TINY, 1, tmp_path / "missing.pt")


def test_engine_moves_volumes_and_3d_weights_channels_last():
    encoder = VolumeEncoder(1, (2, 4))
    engine.to_channels_last(encoder)
    assert encoder.stages[0][0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    batch = engine.to_device([torch.randn(2, 1, 4, 4, 4), torch.zeros(2, 4, 4, 4, dtype=torch.long)], torch.device("cpu"), True)
    assert batch[0].is_contiguous(memory_format=torch.channels_last_3d) and batch[1].is_contiguous()


def test_region_dice_hd95_by_hand_and_empty_conventions():
    pred = np.zeros((3, 12, 12, 12), int)
    true = np.zeros_like(pred)
    pred[0, 2:6, 2:6, 2:6] = 1  # 64 voxels
    true[0, 3:7, 2:6, 2:6] = 1  # shifted by one: 48 shared
    pred[0, 3:5, 3:5, 3:5] = 3
    true[1, 1:3, 1:3, 1:3] = 2  # missed entirely
    scores = metrics.region_dice_hd95(pred, true, {"whole": (1, 2, 3), "enhancing": (3,)})
    assert scores["dice/whole"][0] == pytest.approx(2 * 48 / 128)
    assert scores["hd95/whole"][0] == pytest.approx(1.0)
    diagonal = math.sqrt(3 * 12**2)
    assert scores["dice/whole"][1] == 0 and scores["hd95/whole"][1] == pytest.approx(diagonal)
    assert scores["dice/whole"][2] == 1 and scores["hd95/whole"][2] == 0  # both empty
    assert scores["dice/enhancing"][0] == 0 and scores["hd95/enhancing"][0] == pytest.approx(diagonal)
    assert "hd95/whole" not in metrics.region_dice_hd95(pred, true, {"whole": (1,)}, hd95=False)
    with pytest.raises(ValueError, match="share a shape"):
        metrics.region_dice_hd95(pred, true[:, :4], {"whole": (1,)})


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="divisible by 4"):
        rubik.settings("smoke", cube_size=6)
    with pytest.raises(ValueError, match="exceeds volume_size"):
        rubik.settings("smoke", cube_size=16)
    with pytest.raises(ValueError, match="unknown task"):
        rubik.settings("smoke", tasks=("detection",))
    with pytest.raises(ValueError, match=r"label counts \[99\]"):
        rubik.settings("smoke", label_counts=(8, 99))
    with pytest.raises(ValueError, match=r"epochs must be >= 1, got \{'finetune_epochs': 0\}"):
        rubik.settings("smoke", finetune_epochs=0)
    with pytest.raises(ValueError, match=r"probe_seeds \[3\] are not among seeds \(0,\)"):
        rubik.settings("smoke", probe_seeds=(0, 3))


def test_grid_pretrains_before_it_fine_tunes_and_pairs_initialisations():
    config = rubik.settings("smoke")  # both tasks and the ablation, as the paper profile
    jobs = rubik.grid(config)
    pretraining = [j for j in jobs if j.phase == 0]
    downstream = [j for j in jobs if j.phase == 1]
    assert jobs == pretraining + downstream and len(jobs) == len(set(jobs))
    assert {j.stage for j in pretraining} == {"pretrain"} and {j.stage for j in downstream} == {"finetune", "probe"}
    assert jobs[0].task == "segmentation"  # the longest runs first
    assert {(j.task, j.method) for j in pretraining} == {
        ("classification", "rubik"), ("segmentation", "rubik"), ("segmentation", "rearrangement"),
        ("segmentation", "rotation"),
    }
    assert len(pretraining) == 4 * len(config.seeds)
    efficiency = [j for j in downstream if j.experiment == "label_efficiency"]
    assert len(efficiency) == 2 * len(config.label_counts) * 2 * len(config.seeds)
    ablation = [j for j in downstream if j.experiment == "ablation"]
    assert {j.init for j in ablation} == {"rearrangement", "rotation"} and {j.labels for j in ablation} == {config.ablation_labels}
    probes = [j for j in downstream if j.experiment == "probe"]
    assert {(j.task, j.init, j.labels, j.stage) for j in probes} == {
        ("segmentation", init, config.probe_labels, "probe") for init in ("scratch", "rubik")
    }
    # the demo: segmentation only, five seeds, the compared label count, fine-tuning and probes paired
    demo = rubik.settings("demo")
    jobs = rubik.grid(demo)
    assert {j.task for j in jobs} == {"segmentation"} and len(demo.seeds) == 5 and demo.n_test >= 200
    assert {(j.experiment, j.init) for j in jobs if j.phase} == {
        ("label_efficiency", "scratch"), ("label_efficiency", "rubik"), ("probe", "scratch"), ("probe", "rubik"),
    }
    assert {j.labels for j in jobs if j.phase} == {rubik.COMPARED_LABELS}
    assert rubik.COMPARED_LABELS in rubik.settings("paper").label_counts


def test_linear_probe_trains_only_its_head_and_keeps_the_encoder_frozen():
    from medlab.nets.volumes import VolumeEncoder

    encoder = VolumeEncoder(4, (2, 4, 8))
    probe = rubik.LinearProbe3d(encoder, 4).train()
    assert not encoder.training and [n for n, q in probe.named_parameters() if q.requires_grad] == ["head.weight", "head.bias"]
    assert probe.standardise.training and not probe.standardise.affine  # per-channel standardisation, no parameters
    out = probe(torch.randn(2, 4, 16, 16, 16))
    assert out.shape == (2, 4, 16, 16, 16) and probe.head.in_channels == 2 + 4 + 8
    out.sum().backward()
    assert all(q.grad is None for q in encoder.parameters()) and probe.head.weight.grad is not None


def _records(fine_tuned: dict, probed: dict, arrangement: float, rotation: float, seeds: int = 5):
    rows = []
    for seed in range(seeds):
        wobble = 0.004 * (seed - seeds // 2)
        for init, dice in fine_tuned.items():
            rows.append({"experiment": "label_efficiency", "seed": seed, "params.task": "segmentation",
                         "params.init": init, "params.labels": rubik.COMPARED_LABELS,
                         "metrics.dice/whole tumour": dice + wobble * (init == "rubik")})
        for init, dice in probed.items():
            rows.append({"experiment": "probe", "seed": seed, "params.task": "segmentation", "params.init": init,
                         "params.labels": rubik.COMPARED_LABELS, "metrics.dice/whole tumour": dice})
        rows.append({"experiment": "pretrain", "seed": seed, "params.task": "segmentation", "params.method": "rubik",
                     "metrics.val_permutation_accuracy": arrangement, "metrics.val_rotation_accuracy": rotation})
    return pd.DataFrame(rows)


def test_comparison_is_void_until_the_puzzle_is_solved_and_the_probe_beats_random():
    from medlab import report

    main = "Rubik's cube vs from scratch, fine-tuned on 40 volumes"
    # rotations at chance, probe below the random encoder's: void, with both reasons
    weak = {v["name"]: v for v in report.evaluate_all(rubik.COMPARISONS, _records(
        {"scratch": 0.70, "rubik": 0.72}, {"scratch": 0.51, "rubik": 0.21}, arrangement=0.75, rotation=0.5))}
    assert weak[main]["verdict"] == "void" and weak[main]["gates"]["puzzle arrangement learned on held-out volumes (accuracy >= 50%)"]
    assert "puzzle rotation learned on held-out volumes (accuracy >= 75%) fails: mean val_rotation_accuracy 0.500" in weak[main]["reason"]
    assert "linear probe of the Rubik encoder above a random encoder's fails: mean" in weak[main]["reason"]
    assert "arrangement" not in weak[main]["reason"]
    # every gate open: a direction, from the paired whole-tumour Dice
    strong = {v["name"]: v for v in report.evaluate_all(rubik.COMPARISONS, _records(
        {"scratch": 0.70, "rubik": 0.74}, {"scratch": 0.51, "rubik": 0.60}, arrangement=0.9, rotation=0.9))}
    assert strong[main]["verdict"] == "better" and strong[main]["diff_mean"] == pytest.approx(0.04)
    # a baseline that learned nothing (empty masks) voids it whatever the pretraining did
    floor = {v["name"]: v for v in report.evaluate_all(rubik.COMPARISONS, _records(
        {"scratch": 0.05, "rubik": 0.30}, {"scratch": 0.51, "rubik": 0.60}, arrangement=0.9, rotation=0.9))}
    assert floor[main]["verdict"] == "void" and not floor[main]["gates"]["baseline_learned"]
    # probes stuck near an empty mask: "above random" would pass on noise, so the probe gate fails
    stuck = {v["name"]: v for v in report.evaluate_all(rubik.COMPARISONS, _records(
        {"scratch": 0.70, "rubik": 0.74}, {"scratch": 0.02, "rubik": 0.03}, arrangement=0.9, rotation=0.9))}
    learns = "linear probe of a random encoder learns (whole-tumour Dice >= 10%)"
    assert stuck[main]["verdict"] == "void" and not stuck[main]["gates"][learns]
    assert stuck[main]["gates"]["linear probe of the Rubik encoder above a random encoder's"]
    assert f"{learns} fails: mean dice/whole tumour 0.020" in stuck[main]["reason"]


def test_findings_are_written_from_the_records():
    frame = _records({"scratch": 0.70, "rubik": 0.72}, {"scratch": 0.51, "rubik": 0.21}, arrangement=0.75, rotation=0.5)
    extra = []
    for seed in range(3):
        for init, f1 in (("scratch", 0.50), ("rubik", 0.55)):
            extra.append({"experiment": "label_efficiency", "seed": seed, "params.task": "classification",
                          "params.init": init, "params.labels": 16, "metrics.macro_f1": f1 + 0.01 * seed})
    text = rubik.findings(pd.concat([frame, pd.DataFrame(extra)], ignore_index=True))
    assert text.startswith("- (main) **Rubik's cube vs from scratch, fine-tuned on 40 volumes**: void")
    assert "- segmentation, Rubik's cube (both): arrangement accuracy 75.0 ± 0.0%, rotation accuracy 50.0 ± 0.0%." in text
    assert "- classification, 16 labeled volumes: Rubik's cube minus scratch, macro_f1 +5.0 points ± 0.0." in text


def _job(jobs, **choices):
    return next(j for j in jobs if all(getattr(j, k, None) == v for k, v in choices.items()))


def test_each_stage_is_identified_by_its_own_settings_and_fine_tuning_by_its_pretraining():
    config = rubik.settings("smoke")
    jobs = rubik.grid(config)
    pre = _job(jobs, experiment="pretrain", task="segmentation", method="rubik")
    tuned = _job(jobs, experiment="label_efficiency", task="segmentation", init="rubik")
    scratch = _job(jobs, experiment="label_efficiency", task="segmentation", init="scratch")
    p, f = rubik.identity(config, pre), rubik.identity(config, tuned)
    assert p["method"] == "rubik" and p["cube_size"] == config.cube_size and p["volume_size"] == config.volume_size
    assert not {"finetune_lr", "n_labeled", "labels", "init", "seeds", "tasks", "workers", "num_workers"} & set(p)
    assert f["labels"] == tuned.labels and "pretraining" in f
    assert not {"cube_size", "pretrain_lr", "hidden", "method", "seeds", "label_counts"} & set(f)
    assert "pretraining" not in rubik.identity(config, scratch)
    # fine-tuning and execution settings leave the pretraining alone
    other = rubik.settings("smoke", finetune_lr=1e-2, num_workers=2, workers=3)
    assert rubik.identity(other, pre) == p and rubik.identity(other, tuned) != f
    # a pretraining setting reaches the fine-tuning through the pretraining's fingerprint only
    longer = rubik.settings("smoke", pretrain_epochs=2)
    assert rubik.identity(longer, pre) != p
    changed = rubik.identity(longer, tuned)
    assert changed["pretraining"] != f["pretraining"]
    assert {k: v for k, v in changed.items() if k != "pretraining"} == {k: v for k, v in f.items() if k != "pretraining"}
    assert rubik.identity(longer, scratch) == rubik.identity(config, scratch)
    # a data folder identifies segmentation runs only (classification has no real data)
    assert rubik.identity(config, pre, "/data/brats")["data_dir"] == "/data/brats"
    assert rubik.identity(config, _job(jobs, experiment="pretrain", task="classification"), "/data/brats")["data_dir"] is None


def test_fine_tuning_finds_its_encoder_in_the_pretraining_run_folder():
    from medlab.experiment import run_dir_for

    config = rubik.settings("smoke")
    jobs = rubik.grid(config)
    tuned = _job(jobs, experiment="ablation", init="rotation")
    source = rubik.pretraining_job(tuned)
    assert (source.experiment, source.task, source.method, source.seed, source.stage) == (
        "pretrain", tuned.task, "rotation", tuned.seed, "pretrain"
    )
    assert source in jobs
    expected = run_dir_for("smoke", "rubik", source, rubik.identity(config, source)) / rubik.ENCODER_FILE
    assert rubik.encoder_file(config, tuned, "smoke") == expected
    with pytest.raises(ValueError, match="not from a pretrained encoder"):
        rubik.pretraining_job(_job(jobs, init="scratch"))


def _tiny_segmentation(tmp_path, monkeypatch, **changes):
    """Smoke settings shrunk to seconds (16-voxel volumes, one segmentation task), runs and records
    written under ``tmp_path``."""
    monkeypatch.setenv("MEDLAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MEDLAB_RESULTS_DIR", str(tmp_path / "results"))
    return rubik.settings(
        "smoke", volume_size=16, cube_size=4, widths=(2, 4), hidden=8, num_permutations=6, n_unlabeled=8,
        n_labeled=8, n_val=4, n_test=4, proxy_val_volumes=4, pretrain_batch_size=4, label_counts=(4,),
        ablation_labels=4, probe_labels=4, finetune_epoch_samples=4, tasks=("segmentation",), ablation_tasks=(),
        **changes,
    )


def test_pretraining_then_fine_tuning_end_to_end(tmp_path, monkeypatch):
    from medlab import experiment

    config = _tiny_segmentation(tmp_path, monkeypatch)
    jobs = rubik.grid(config)
    assert [j.experiment for j in jobs] == ["pretrain", "label_efficiency", "label_efficiency", "probe", "probe"]
    records = experiment.run_grid(rubik, config, profile="smoke", device="cpu", progress=False)
    pre, scratch, tuned, random_probe, rubik_probe = records
    assert rubik_probe["params"]["pretraining"] == tuned["params"]["pretraining"]
    assert {"dice/whole tumour", "val_whole_tumour_dice"} <= set(random_probe["metrics"])
    assert pre["metrics"]["n_eval"] == 4 and 0 <= pre["metrics"]["val_rotation_accuracy"] <= 1
    folder = results.run_folder(pre)
    assert (folder / rubik.ENCODER_FILE).is_file() and (folder / pre["artifacts"]["proxy_model"]).is_file()
    assert folder == rubik.encoder_file(config, jobs[2], "smoke").parent
    # the fine-tuning run's identity holds the fingerprint its pretraining trained under
    assert tuned["params"]["pretraining"] == engine.load_checkpoint(folder / engine.CHECKPOINT)["fingerprint"]
    assert tuned["metrics"]["n_eval"] == 4 and tuned["metrics"]["labeled_volumes"] == 4
    assert {"dice/whole tumour", "mean_dice", "mean_hd95"} <= set(scratch["metrics"])
    assert "network's prediction" in rubik.puzzle_figure(rubik.load_data(config, "segmentation").val[0][0], config, pre).axes[-2].get_title()
    # a fine-tuning run whose pretraining never ran says so
    missing = experiment.job("ablation", 0, phase=1, stage="finetune", task="segmentation", init="rotation", labels=4)
    with pytest.raises(FileNotFoundError, match="no trained encoder at .*pretrain__segmentation-rotation.*its pretraining"):
        experiment.run_grid(rubik, config, profile="smoke", device="cpu", jobs=[missing], progress=False)
    text = rubik.describe(jobs[0], pre)
    assert text.startswith("pretrain segmentation/rubik seed 0: held-out permutation accuracy")
    assert rubik.describe(jobs[2], tuned).startswith("label_efficiency: segmentation rubik on 4 labeled volumes, seed 0: mean Dice")


def test_check_data_fails_before_training_on_a_bad_brats_folder(tmp_path):
    config = rubik.settings("smoke")
    assert rubik.check_data(config, None) is None
    with pytest.raises(FileNotFoundError, match="missing"):
        rubik.check_data(config, tmp_path / "missing")
    rubik.check_data(rubik.settings("smoke", tasks=("classification",), ablation_tasks=()), tmp_path / "missing")


def test_throughput_measures_both_pipelines():
    from torch.utils.data import TensorDataset

    volumes = torch.randn(8, 1, 16, 16, 16)
    data = rubik.TaskData("classification", TensorDataset(volumes), *(TensorDataset(volumes),) * 3, ("a",), 1, {"unlabeled": {}})
    config = dataclasses.replace(TINY, pretrain_batch_size=4)
    measured = rubik.measure_pretraining_throughput(config, data, torch.device("cpu"), steps=1, warmup=0)
    assert measured["device_voxels_per_s"] > 0 and measured["plain_voxels_per_s"] > 0
    assert measured["speedup"] == pytest.approx(measured["device_voxels_per_s"] / measured["plain_voxels_per_s"])


def test_the_chapter_satisfies_the_contract():
    from medlab import chapter

    assert chapter.check(rubik) == []
    assert rubik.DATASETS == ("head_ct", "brats") and rubik.SLUG == "rubik"
    assert [spec.main for spec in rubik.COMPARISONS] == [True, False]
    assert {spec.filter["params.task"] for spec in rubik.TABLES} == {"classification", "segmentation"}


def test_fine_tuning_curves_leave_out_the_linear_probes():
    def record(experiment, init, values):
        return {"experiment": experiment, "params": {"task": "segmentation", "init": init, "labels": 40},
                "history": [{"val/whole_tumour_dice": v} for v in values]}

    records = [
        record("pretrain", "rubik", [0.9, 0.9]),
        record("label_efficiency", "scratch", [0.5, 0.8]),
        record("probe", "scratch", [0.0, 0.1]),
        record("label_efficiency", "rubik", [0.4, 0.6]),
        record("probe", "rubik", [0.0, 0.0]),
    ]
    fig = rubik.finetune_curves_figure(records, "segmentation", 40)
    lines = {line.get_label(): list(line.get_ydata()) for line in fig.axes[0].lines}
    assert lines == {rubik.INIT_LABELS["scratch"]: [0.5, 0.8], rubik.INIT_LABELS["rubik"]: [0.4, 0.6]}


def _development_frame(differences: dict[int, dict[str, float]], probes: dict[str, float], network: str = "16-32-64"):
    """Hand-made development records: scratch at 0.80 + 0.01 * seed; each pretrained init at scratch +
    its difference for that seed; probes of seeds 0-1."""
    rows = []
    for seed, diffs in differences.items():
        scratch = 0.80 + 0.01 * seed
        for init, dice in {"scratch": scratch, **{i: scratch + d for i, d in diffs.items()}}.items():
            rows.append({"study": "s", "experiment": "label_efficiency", "seed": seed, "network": network,
                         "params.labels": 40, "params.finetune_epochs": 12, "params.init": init,
                         "metrics.dice/whole tumour": dice})
        for method in diffs:
            rows.append({"study": "s", "experiment": "pretrain", "seed": seed, "network": network, "params.method": method,
                         "params.num_permutations": 24, "params.pretrain_epochs": 12,
                         "metrics.val_permutation_accuracy": 1.0, "metrics.val_rotation_accuracy": np.nan})
    for seed in (0, 1):
        for init, dice in probes.items():
            rows.append({"study": "s", "experiment": "probe", "seed": seed, "network": network, "params.labels": 40,
                         "params.finetune_epochs": 12, "params.init": init, "metrics.dice/whole tumour": dice})
    return pd.DataFrame(rows)


def test_development_cells_pair_by_seed_and_words_follow_the_interval():
    # rearrangement: -0.02 on every seed but one (-0.03): worse; rotation: +-0.05 around 0: no difference
    diffs = {s: {"rearrangement": -0.02 - 0.01 * (s == 2), "rotation": 0.05 * (-1) ** s} for s in range(4)}
    frame = _development_frame(diffs, {"scratch": 0.70, "rearrangement": 0.60, "rotation": 0.75})
    cells = rubik.development_cells(frame)
    assert [c["init"] for c in cells] == ["scratch", "rearrangement", "rotation"]
    scratch, rearranged, rotated = cells
    assert scratch["mean"] == pytest.approx(0.815) and scratch["diff"] is None and scratch["no_tumour"] == 0
    assert rearranged["diff"].n == 4 and rearranged["diff"].mean == pytest.approx(-0.0225)
    assert rearranged["diff"].ci95[1] < 0 and rearranged["puzzle"] == "arrangement 100"
    assert rotated["diff"].mean == pytest.approx(0.0) and rotated["diff"].ci95[0] < 0 < rotated["diff"].ci95[1]
    text = rubik.development_findings(frame)
    assert "rearrangement only: worse than scratch, -2.3 points [-3.0, -1.5]" in text
    assert "its probe below the random encoder's (60.0 vs 70.0)" in text
    assert "rotation only: no difference detectable at ±" in text and "its probe above the random encoder's (75.0 vs 70.0)" in text
    table = rubik.development_table(frame)
    assert table.loc[("16-32-64", 40, 12, "rearrangement only"), "minus scratch, points [95% CI]"] == "-2.3 [-3.0, -1.5]"
    assert table.loc[("16-32-64", 40, 12, "from scratch"), "probe Dice %"] == "70.0"


def test_development_cells_count_runs_that_found_no_tumour():
    frame = _development_frame({0: {"rearrangement": -0.79}, 1: {"rearrangement": 0.0}}, {})
    frame.loc[(frame["params.init"] == "scratch") & (frame["seed"] == 1), "metrics.dice/whole tumour"] = 0.05
    scratch, rearranged = rubik.development_cells(frame)
    assert scratch["no_tumour"] == 1 and rearranged["no_tumour"] == 1 and scratch["runs"] == 2


def test_shipped_development_records_are_the_studies_jobs(tmp_path):
    import collections
    import json

    from medlab.papers.rubik import development

    for name in development.STUDIES:
        config = development.study_settings(name)
        assert config.data_seed == development.DEVELOPMENT_DATA_SEED != rubik.settings("demo").data_seed
        want = collections.Counter(
            (j.experiment, j.method if j.stage == "pretrain" else j.init, j.seed) for j in development.study_jobs(name)
        )
        got = collections.Counter()
        for path in (development.DEVELOPMENT_ROOT / name).glob("*.json"):
            record = json.loads(path.read_text())
            got[(record["experiment"], record["params"].get("method") or record["params"].get("init"), record["seed"])] += 1
            widths = tuple(record["params"].get("widths", config.widths))
            assert record["params"]["data_seed"] == config.data_seed and widths == tuple(config.widths), path
        assert got == want, name
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        rubik.development_frame(tmp_path)
    with pytest.raises(ValueError, match="unknown development study 'nope'"):
        development.study_settings("nope")


def test_the_probes_positive_control_reads_the_encoder_of_the_scratch_fine_tuning(tmp_path, monkeypatch):
    from medlab import experiment
    from medlab.experiment import job

    monkeypatch.setenv("MEDLAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MEDLAB_RESULTS_DIR", str(tmp_path / "results"))
    config = rubik.settings(
        "smoke", volume_size=16, cube_size=4, widths=(2, 4), n_labeled=8, n_val=4, n_test=4, label_counts=(4,),
        ablation_labels=4, probe_labels=4, finetune_epoch_samples=4, tasks=("segmentation",), ablation_tasks=(),
    )
    tuned = job("label_efficiency", 0, phase=1, stage="finetune", task="segmentation", init="scratch", labels=4)
    control = job("probe", 0, phase=2, stage="probe", task="segmentation", init=rubik.SUPERVISED, labels=4)
    assert rubik.supervised_job(control) == tuned and rubik.upstream_job(tuned) is None
    scratch_record, probe_record = experiment.run_grid(rubik, config, profile="smoke", device="cpu", jobs=[tuned, control], progress=False)
    folder = results.run_folder(scratch_record)
    assert rubik.encoder_file(config, control, "smoke") == folder / engine.BEST
    # the probe's identity holds the fingerprint of the fine-tuning it reads, and it read that encoder
    assert probe_record["params"][rubik.SUPERVISED] == engine.load_checkpoint(folder / engine.CHECKPOINT)["fingerprint"]
    loaded = rubik.initial_encoder(config, 4, folder / engine.BEST).state_dict()
    best = engine.load_checkpoint(folder / engine.BEST)["model"]
    assert loaded.keys() == {k.removeprefix("encoder.") for k in best if k.startswith("encoder.")}
    assert all(torch.equal(loaded[k], best[f"encoder.{k}"]) for k in loaded)
    assert {"dice/whole tumour", "val_whole_tumour_dice"} <= set(probe_record["metrics"])
    # only a probe may start from it
    with pytest.raises(ValueError, match="not a probe of the 'supervised' encoder"):
        rubik.identity(config, job("label_efficiency", 0, phase=2, stage="finetune", task="segmentation", init="supervised", labels=4))


def test_initial_encoder_refuses_a_network_without_an_encoder(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"model": {"head.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="without an encoder"):
        rubik.initial_encoder(rubik.settings("smoke"), 4, path)
    with pytest.raises(FileNotFoundError, match="no trained encoder at"):
        rubik.initial_encoder(rubik.settings("smoke"), 4, tmp_path / "missing.pt")


def test_probe_control_table_pairs_the_fine_tuned_encoders_probe_with_the_random_ones():
    rows = []
    for seed in (0, 1, 2):
        for init, dice in (("scratch", 0.70 + 0.01 * seed), ("supervised", 0.85 + 0.02 * seed)):
            rows.append({"study": "control", "experiment": "probe", "seed": seed, "network": "16-32-64", "params.labels": 40,
                         "params.finetune_epochs": 12, "params.init": init, "metrics.dice/whole tumour": dice})
    table = rubik.probe_control_table(pd.DataFrame(rows))
    row = table.loc["control"]
    assert row["random encoder's probe %"] == "71.0" and row["fine-tuned encoder's probe %"] == "87.0" and row["seeds"] == 3
    assert row["difference, points [95% CI]"].startswith("+16.0 [")
    with pytest.raises(FileNotFoundError, match="positive control"):
        rubik.probe_control_table(pd.DataFrame(rows[:1]))


def test_development_cells_leave_out_the_control_studys_repeated_runs():
    frame = rubik.development_frame()
    cells = rubik.development_cells(frame)
    wide = frame[(frame["study"] == "wide") & (frame["experiment"] == "label_efficiency") & (frame["params.init"] == "scratch")]
    scratch = next(c for c in cells if c["init"] == "scratch" and c["network"] == "16-32-64" and c["labels"] == 40 and c["epochs"] == 12)
    assert scratch["mean"] == pytest.approx(wide["metrics.dice/whole tumour"].mean())
    assert set(frame["study"]) >= {"control", "wide"}


def test_intensity_ramp_makes_every_turn_of_a_cube_readable():
    from medlab.papers.rubik.method import _FLIPS

    volumes = torch.ones(2, 1, 8, 8, 8)
    assert torch.equal(rubik.intensity_ramp(volumes, 0.0), volumes)
    ramped = rubik.intensity_ramp(volumes, 0.5)
    # 1 + 0.5 (h + w) / 2 with h, w in [-1, 1]: 0.5 at the low corner, 1.5 at the high one, constant along D
    assert ramped[0, 0, 0, 0, 0] == pytest.approx(0.5) and ramped[0, 0, 0, -1, -1] == pytest.approx(1.5)
    assert torch.equal(ramped[:, :, 0], ramped[:, :, -1])
    cube = ramped[0, 0, :4, :4, :4]
    turned = {
        "none": cube, "horizontal": cube.flip([d + 3 for d in _FLIPS["horizontal"]]),
        "vertical": cube.flip([d + 3 for d in _FLIPS["vertical"]]),
    }
    turned["both"] = turned["horizontal"].flip([d + 3 for d in _FLIPS["vertical"]])
    views = list(turned.values())
    assert all(not torch.allclose(a, b) for i, a in enumerate(views) for b in views[i + 1:])
    with pytest.raises(ValueError, match="intensity_ramp must be in"):
        rubik.settings("smoke", intensity_ramp=1.0)
    assert rubik.settings("paper").intensity_ramp == rubik.settings("demo").intensity_ramp == 0.0


def test_puzzle_studies_are_full_puzzle_pretrainings_and_their_table_reads_them():
    import json

    from medlab.papers.rubik import development

    for name, changes in development.PUZZLE_STUDIES.items():
        jobs = development.study_jobs(name)
        assert {(j.experiment, j.method) for j in jobs} == {("pretrain", "rubik")} and [j.seed for j in jobs] == [0, 1, 2]
        records = [json.loads(p.read_text()) for p in sorted((development.DEVELOPMENT_ROOT / name).glob("*.json"))]
        assert sorted(r["seed"] for r in records) == [0, 1, 2], name
        for record in records:
            assert record["params"]["data_seed"] == development.DEVELOPMENT_DATA_SEED
            for key, value in {"intensity_ramp": 0.0, "permutation_weight": 1.0, **changes}.items():
                assert record["params"][key] == pytest.approx(value), (name, key)
    table = rubik.development.puzzle_weights_table()
    assert list(table.index) == list(development.PUZZLE_STUDIES)
    assert table.loc["ramp_alpha01", "intensity ramp"] == "±0.9" and table.loc["ramp_alpha01", "rearrangement weight α"] == "0.1"
    per_seed = [float(v) for v in table.loc["joint", "rotation % per seed"].split(", ")]
    assert len(per_seed) == 3 and table.loc["joint", "rotation % mean"] == pytest.approx(np.mean(per_seed), abs=0.6)


def test_normalise_cubes_maps_each_cube_and_channel_to_its_own_range():
    cubes = torch.randn(2, 8, 3, 4, 4, 4) * 5 + 2
    cubes[1, 3, 2] = 7.0  # a constant cube channel
    out = rubik.normalise_cubes(cubes)
    flat = out.flatten(3)
    varying = torch.ones(2, 8, 3, dtype=torch.bool)
    varying[1, 3, 2] = False
    assert torch.allclose(flat.amin(3)[varying], torch.tensor(-1.0)) and torch.allclose(flat.amax(3)[varying], torch.tensor(1.0))
    assert torch.equal(out[1, 3, 2], torch.full((4, 4, 4), -1.0))
    # an affine change of one cube's intensities leaves its normalised content unchanged
    shifted = cubes.clone()
    shifted[0, 0] = shifted[0, 0] * 3 + 1
    assert torch.allclose(rubik.normalise_cubes(shifted)[0, 0], out[0, 0], atol=1e-5)
    volumes = torch.randn(2, 1, 16, 16, 16)
    batch = rubik.make_proxy_batch(volumes, rubik.permutation_set(6), 6, torch.Generator().manual_seed(0), normalise=True)
    assert batch["cubes"].amin() == -1 and batch["cubes"].amax() == 1
    assert rubik.settings("paper").normalise_cubes and not rubik.settings("demo").normalise_cubes


def test_frozen_encoder_pretraining_trains_the_heads_only(tmp_path, monkeypatch):
    from medlab import experiment

    config = _tiny_segmentation(tmp_path, monkeypatch, freeze_encoder=True)
    pretraining = experiment.job("pretrain", 0, stage="pretrain", task="segmentation", method="rubik")
    (record,) = experiment.run_grid(rubik, config, profile="smoke", device="cpu", jobs=[pretraining], progress=False)
    folder = results.run_folder(record)
    torch.manual_seed(0)  # the pretraining's seed: the encoder it started from
    start = rubik.initial_encoder(config, 4).state_dict()
    saved = torch.load(folder / rubik.ENCODER_FILE)
    weights = [k for k in saved if k.endswith("weight") or k.endswith("bias")]
    assert weights and all(torch.equal(saved[k], start[k]) for k in weights)
    proxy = torch.load(folder / rubik.PROXY_MODEL_FILE)
    fresh = rubik.SiameseOctad(rubik.initial_encoder(config, 4), rubik.permutation_set(6), 8).state_dict()
    assert not torch.equal(proxy["permutation_head.0.weight"], fresh["permutation_head.0.weight"])


def test_encoder_control_studies_and_their_tables_read_the_shipped_records():
    import json

    from medlab.papers.rubik import development

    for name, method in development.FROZEN_STUDIES.items():
        jobs = development.study_jobs(name)
        assert {(j.experiment, j.method) for j in jobs} == {("pretrain", method)} and [j.seed for j in jobs] == [0, 1, 2]
        records = [json.loads(p.read_text()) for p in sorted((development.DEVELOPMENT_ROOT / name).glob("*.json"))]
        assert sorted(r["seed"] for r in records) == [0, 1, 2] and all(r["params"]["freeze_encoder"] for r in records)
    table = rubik.frozen_encoder_table()
    assert table.shape[0] == 4 and set(table.index.get_level_values("proxy task")) == {"Rubik's cube (both)", "rearrangement only"}
    for task in ("Rubik's cube (both)", "rearrangement only"):
        rows = table.loc[task]
        per_seed = [float(v) for v in rows.iloc[1]["arrangement % per seed"].split(", ")]
        assert len(per_seed) == 3 and float(rows.iloc[1]["arrangement % mean"]) == pytest.approx(np.mean(per_seed), abs=0.6)
        assert rows.iloc[0]["trained minus frozen, points [95% CI]"] and not rows.iloc[1]["trained minus frozen, points [95% CI]"]
    cube = rubik.cube_normalisation_table()
    assert cube.shape[0] == 5 and (cube["seeds"] == 3).all()
    budget = rubik.paper_budget()
    stages = budget.drop(index="total")
    assert budget.loc["total", "GPU hours"] == pytest.approx(stages["GPU hours"].sum(), abs=0.11)
    paper = rubik.settings("paper")
    pretrainings = stages.loc["pretraining", "runs"]
    assert stages.loc["pretraining", "volumes seen"] == pretrainings * rubik.BRATS_2018_TRAIN_CASES * paper.pretrain_epochs
    # every fine-tuning run of the paper profile makes 60 epochs of 199 or 200 volumes
    downstream = stages.loc["fine-tuning and probes", "runs"]
    assert downstream * 60 * 199 <= stages.loc["fine-tuning and probes", "volumes seen"] <= downstream * 60 * 200


def test_paper_label_counts_fit_the_brats_2018_training_split():
    from pathlib import Path

    from medlab.data.formats.brats import Case, split_cases

    cases = [Case(f"Brats18_{g}_{i:03d}", Path("."), g) for g, n in (("HGG", 210), ("LGG", 75)) for i in range(n)]
    train = split_cases(cases, 0.15, 0.15, seed=0)["train"]  # the reader's default fractions
    assert len(train) == rubik.BRATS_2018_TRAIN_CASES == max(rubik.settings("paper").label_counts)
