"""Chapter 3 (Rubik's cube recovery): the permutation set, cutting and scrambling cubes (and undoing
it), the losses on hand-computed values, the networks, the 3D metrics and the grid."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from medlab import engine, metrics
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


def test_inverting_the_proxy_labels_recovers_the_volume():
    torch.manual_seed(1)
    volumes = torch.randn(4, 2, 16, 16, 16)
    permutations = rubik.permutation_set(24)
    proxy = rubik.make_proxy_batch(volumes, permutations, rubik.PRETRAINING["rubik"], TINY)
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
    move = rubik.make_proxy_batch(volumes, permutations, rubik.PRETRAINING["rearrangement"], TINY)
    assert not move["rotations"].any()
    turn = rubik.make_proxy_batch(volumes, permutations, rubik.PRETRAINING["rotation"], TINY)
    assert (turn["classes"] == 0).all() and turn["rotations"].any()


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
    config = dataclasses.replace(TINY, permutation_weight=2.0, rotation_weight=0.5)
    model.eval()
    both = rubik.proxy_losses(model, cubes, classes, rotations, rubik.PRETRAINING["rubik"], config)
    assert both["loss"].item() == pytest.approx(2.0 * both["permutation_loss"].item() + 0.5 * both["rotation_loss"].item(), rel=1e-5)
    only_turns = rubik.proxy_losses(model, cubes, classes, rotations, rubik.PRETRAINING["rotation"], config)
    assert "permutation_loss" not in only_turns and only_turns["loss"].item() == pytest.approx(0.5 * both["rotation_loss"].item(), rel=1e-5)
    only_moves = rubik.proxy_losses(model, cubes, classes, rotations, rubik.PRETRAINING["rearrangement"], config)
    assert "rotation_loss" not in only_moves


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
    with pytest.raises(FileNotFoundError, match="no pretrained encoder at .*missing.pt"):
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


def test_grid_pretrains_before_it_fine_tunes_and_pairs_initialisations():
    config = rubik.settings("demo")
    pretraining, downstream = rubik.grid(config)
    assert {(j.task, j.init) for j in pretraining} == {
        ("classification", "rubik"), ("segmentation", "rubik"), ("segmentation", "rearrangement"),
        ("segmentation", "rotation"),
    }
    assert len(pretraining) == 4 * len(config.seeds)
    efficiency = [j for j in downstream if j.experiment == "label_efficiency"]
    assert len(efficiency) == 2 * len(config.label_counts) * 2 * len(config.seeds)
    ablation = [j for j in downstream if j.experiment == "ablation"]
    assert {j.init for j in ablation} == {"rearrangement", "rotation"} and {j.labels for j in ablation} == {config.ablation_labels}


def test_findings_are_written_from_the_records():
    rows = []
    for seed in range(3):
        for labels in (16, 64):
            for init, f1 in (("scratch", 0.50), ("rubik", 0.55)):
                rows.append({"experiment": "label_efficiency", "seed": seed, "params.task": "classification",
                             "params.init": init, "params.labels": labels, "metrics.macro_f1": f1 + 0.01 * seed})
            for init, dice, hd in (("scratch", 0.60, 5.0), ("rubik", 0.58, 6.0)):
                rows.append({"experiment": "label_efficiency", "seed": seed, "params.task": "segmentation",
                             "params.init": init, "params.labels": labels, "metrics.mean_dice": dice,
                             "metrics.mean_hd95": hd})
        rows.append({"experiment": "ablation", "seed": seed, "params.task": "classification",
                     "params.init": "rotation", "params.labels": 16, "metrics.macro_f1": 0.52 - 0.01 * seed})
    text = rubik.findings(pd.DataFrame(rows))
    assert text.startswith("**Overall.** For classification, the pretrained network's mean macro F1 is above scratch at every label count")
    assert "for segmentation, the pretrained network's mean Dice (mean of WT, TC, ET) is above scratch at no label count" in text
    assert "classification, 16 labeled volumes**: Rubik's cube minus scratch, macro F1 +5.0 points ± 0.0 (ahead on 3/3 seeds)" in text
    assert "mean HD95 +1.0 voxels ± 0.0" in text
    assert "rotation only -5.0 points ± 2.0" in text
