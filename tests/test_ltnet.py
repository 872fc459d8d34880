"""Chapter 6 (LT-Net): the method's parts on tiny tensors, the synthetic one-shot brains, the OASIS reader
on fixtures it writes (with bad inputs), scoring and the grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medlab import data as datasets
from medlab.data.formats import oasis
from medlab.data.synth import oneshot_brains as ob
from medlab.papers import ltnet as lt
from medlab.papers.ltnet import method as m

# ---------------------------------------------------------------------------------------------
# The method


def _shifted(volume: torch.Tensor, axis: int, by: int) -> torch.Tensor:
    return torch.roll(volume, -by, dims=2 + axis)


def test_warp_by_a_constant_field_shifts_the_volume():
    torch.manual_seed(0)
    volume = torch.rand(1, 2, 8, 9, 10)
    for axis in range(3):
        field = torch.zeros(1, 3, 8, 9, 10)
        field[:, axis] = 1.0
        warped = m.warp(volume, field)
        inner = [slice(None), slice(None), slice(0, 7), slice(0, 8), slice(0, 9)]
        assert torch.allclose(warped[tuple(inner)], _shifted(volume, axis, 1)[tuple(inner)], atol=1e-5)
    assert torch.allclose(m.warp(volume, torch.zeros(1, 3, 8, 9, 10)), volume, atol=1e-6)


def test_compose_of_opposite_constant_fields_is_zero_and_matches_two_warps():
    torch.manual_seed(0)
    a = torch.zeros(1, 3, 8, 8, 8)
    a[:, 0] = 1.0
    assert torch.allclose(m.compose(a, -a), torch.zeros_like(a), atol=1e-6)
    smooth = torch.nn.functional.interpolate(torch.randn(1, 3, 3, 3, 3), size=(12, 12, 12), mode="trilinear", align_corners=True)
    first, second = 0.8 * smooth, -0.5 * smooth.flip(2)
    volume = torch.nn.functional.interpolate(torch.rand(1, 1, 4, 4, 4), size=(12, 12, 12), mode="trilinear", align_corners=True)
    two_warps = m.warp(m.warp(volume, second), first)
    once = m.warp(volume, m.compose(first, second))
    inner = (..., slice(2, -2), slice(2, -2), slice(2, -2))
    assert (two_warps - once)[inner].abs().mean() < 0.01


def test_jacobian_of_known_fields():
    shape = (6, 7, 8)
    grid = torch.stack(torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in shape), indexing="ij"))
    assert torch.allclose(m.jacobian_determinant(torch.zeros(1, 3, *shape)), torch.ones(1, *shape))
    scale = (0.5 * grid)[None]  # p -> 1.5 p: determinant 1.5^3
    assert torch.allclose(m.jacobian_determinant(scale), torch.full((1, *shape), 1.5**3), atol=1e-5)
    flip = (-2.0 * grid[:1])  # x -> -x on one axis: determinant -1, every voxel folds
    folded = torch.cat([flip, torch.zeros(2, *shape)])[None]
    assert torch.allclose(m.jacobian_determinant(folded), -torch.ones(1, *shape), atol=1e-5)
    assert m.folding_share(folded).item() == 1.0 and m.folding_share(scale).item() == 0.0
    mask = torch.zeros(1, *shape)
    mask[0, :2] = 1
    assert m.folding_share(folded, mask).item() == 1.0


def test_field_statistics_by_hand():
    shape = (4, 5, 6)
    forward = torch.zeros(2, 3, *shape)
    forward[:, 0] = 3.0
    forward[:, 1] = 4.0  # every vector 5 voxels long; a shift does not fold
    stats = lt.field_statistics(forward, -forward, torch.zeros_like(forward))
    assert stats["mean |forward| (voxels)"] == pytest.approx(5.0) and stats["mean |backward| (voxels)"] == pytest.approx(5.0)
    assert stats["mean cycle residual (voxels)"] == 0.0 and stats["folding (%)"] == 0.0
    assert stats["Jacobian, 1st percentile"] == pytest.approx(1.0)
    grid = torch.arange(shape[0], dtype=torch.float32)[:, None, None].expand(shape)
    flip = torch.stack([-2.0 * grid, torch.zeros(shape), torch.zeros(shape)])[None]  # determinant -1
    assert lt.field_statistics(flip, flip, flip)["folding (%)"] == 100.0


def test_soft_dice_loss_by_hand():
    y = m.onehot(torch.tensor([[[[0, 1], [2, 2]]]]), 3)
    assert m.soft_dice_loss(y, y).item() == pytest.approx(0.0, abs=1e-5)
    empty = torch.zeros_like(y)
    empty[:, 0] = 1
    assert m.soft_dice_loss(empty, y).item() == pytest.approx(1.0, abs=1e-4)
    half = y.clone()
    half[0, 2, 0, 1, 1] = 0  # structure 2: 2 voxels true, 1 predicted -> Dice 2/3; structure 1 -> 1
    assert m.soft_dice_loss(half, y).item() == pytest.approx(1 - (1 + 2 / 3) / 2, abs=1e-4)


def test_the_network_starts_near_the_identity_and_the_cycle_has_every_term():
    torch.manual_seed(0)
    net = m.RegistrationNet((4, 8, 8, 8, 8, 4), (4,))
    atlas, labels = torch.rand(1, 1, 16, 16, 16), torch.randint(0, 3, (1, 16, 16, 16))
    maps = m.onehot(labels, 3)
    targets = torch.rand(2, 1, 16, 16, 16)
    out = m.transfer(net, atlas, maps, targets)
    assert out.forward.shape == (2, 3, 16, 16, 16) and out.forward.abs().max() < 1e-2
    assert torch.allclose(out.warped_label.argmax(1), labels.expand(2, -1, -1, -1))
    assert out.cycled_label.shape == (2, 3, 16, 16, 16) and out.residual.shape == (2, 3, 16, 16, 16)
    losses = m.ltnet_loss(out, atlas, maps, targets, m.Weights())
    assert set(losses) == {"loss", "similarity", "smoothness", "image_cycle", "label_cycle", "field_cycle"}
    losses["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    oneway = m.transfer(net, atlas, maps, targets, cycle=False)
    assert oneway.backward is None and set(m.ltnet_loss(oneway, atlas, maps, targets, m.Weights(0.5, 1, 0, 0, 0))) == {"loss", "similarity", "smoothness"}
    assert not m.Weights(1, 1, 0, 0, 0).cycle and m.Weights(1, 1, 0, 0, 0.1).cycle


def test_the_cycle_terms_vanish_when_the_fields_undo_each_other():
    class Shift(torch.nn.Module):  # forward +1 voxel, backward -1 voxel along axis 0
        calls = 0

        def forward(self, moving, fixed):
            field = torch.zeros(moving.shape[0], 3, *moving.shape[2:])
            field[:, 0] = 1.0 if self.calls % 2 == 0 else -1.0
            self.calls += 1
            return field

    volume = torch.zeros(1, 1, 10, 10, 10)
    volume[..., 3:7, 3:7, 3:7] = 1.0
    maps = torch.cat([1 - volume, volume], 1)
    out = m.transfer(Shift(), volume, maps, volume * 0.4)
    inner = (slice(None), slice(None), slice(2, 8), slice(2, 8), slice(2, 8))
    assert torch.allclose(out.cycled_image[inner], volume[inner], atol=1e-6)
    assert torch.allclose(out.residual[inner], torch.zeros_like(out.residual[inner]), atol=1e-6)
    assert m.soft_dice_loss(out.cycled_label, maps).item() < 1e-4


def test_similarity_is_minus_one_for_an_affine_intensity_change():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 12, 12, 12)
    assert m.similarity_loss(2 * x + 0.1, x).item() == pytest.approx(-1.0, abs=5e-3)
    assert m.smoothness_loss(torch.ones(1, 3, 8, 8, 8)).item() == pytest.approx(0.0, abs=1e-8)


# ---------------------------------------------------------------------------------------------
# The synthetic one-shot brains


def test_the_atlas_has_every_structure_and_targets_depart_from_it():
    image, labels = ob.atlas((16, 24, 16))
    assert image.shape == (1, 16, 24, 16) and labels.shape == (16, 24, 16)
    assert 0 <= image.min() and image.max() <= 1
    assert set(labels.unique().tolist()) == set(range(len(ob.STRUCTURES) + 1))
    sizes = [int((labels == k).sum()) for k in range(1, 7)]
    assert sizes[0] > sizes[3] and sizes[1] > sizes[5]  # cortex > ventricles, white matter > brainstem
    data = datasets.load("oneshot_brains", "test", n=3, seed=1, shape=(16, 24, 16))
    again = datasets.load("oneshot_brains", "test", n=3, seed=1, shape=(16, 24, 16))
    other = datasets.load("oneshot_brains", "val", n=3, seed=1, shape=(16, 24, 16))
    x, y = data[0]
    assert x.shape == (1, 16, 24, 16) and y.dtype == torch.int64 and torch.equal(data.images, again.images)
    assert not torch.equal(data.images, other.images) and torch.equal(data.atlas[1], labels)
    overlap = (y == labels).float().mean().item()
    assert 0.5 < overlap < 0.99  # deformed, not unrecognisable
    assert data.info["kind"] == "synthetic" and data.structures == ob.STRUCTURES


def test_the_generator_refuses_bad_settings():
    with pytest.raises(ValueError, match="need n"):
        ob.oneshot_brains_lookalike("test")
    with pytest.raises(ValueError, match="unknown variation"):
        ob.oneshot_brains_lookalike("test", n=1, wobble=1.0)
    with pytest.raises(ValueError, match="three sides"):
        ob.atlas((4, 4))


def test_no_deformation_gives_the_atlas_labels():
    data = ob.oneshot_brains_lookalike("test", n=1, shape=(16, 24, 16), deformation=0.0, rotation=0.0, scale=0.0, atrophy=0.0)
    assert (data.labels[0] == data.atlas[1]).float().mean() > 0.99


# ---------------------------------------------------------------------------------------------
# The OASIS reader


def test_oasis_reader_splits_and_resamples(tmp_path):
    names = oasis.write_fixture(tmp_path, subjects=8, shape=(12, 14, 16))
    test = datasets.load("oneshot_brains", "test", data_dir=tmp_path, shape=(8, 8, 8), labels="seg4")
    val = oasis.OASIS(tmp_path, "val", shape=(8, 8, 8))
    unlabeled = oasis.OASIS(tmp_path, "unlabeled", shape=(8, 8, 8), labels="seg35", atlas="0002")
    assert test.info["atlas"] == names[0] and unlabeled.info["atlas"] == names[1]
    assert len(test) == 1 and len(val) == 1 and len(oasis.OASIS(tmp_path, "unlabeled", shape=(8, 8, 8))) == 5
    assert test.info["subjects"] == [names[-1]] and names[1] not in unlabeled.info["subjects"] + test.info["subjects"]
    x, y = test[0]
    assert x.shape == (1, 8, 8, 8) and 0 <= x.min() and x.max() <= 1 and y.max() <= 4
    assert len(unlabeled.structures) == 35 and unlabeled.labels.max() <= 35 and unlabeled.atlas[1].shape == (8, 8, 8)


def test_oasis_reader_names_what_is_wrong(tmp_path):
    oasis.write_fixture(tmp_path, subjects=5, shape=(8, 8, 8))
    with pytest.raises(ValueError, match="'0042' is not among the 5 subjects"):
        oasis.OASIS(tmp_path, "test", shape=(8, 8, 8), atlas="0042")
    folder = tmp_path / "OASIS_OAS1_0003_MR1"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 9), np.int16), np.eye(4)), folder / "aligned_seg4.nii.gz")
    with pytest.raises(ValueError, match=r"OASIS_OAS1_0003_MR1/aligned_seg4.nii.gz has shape \(8, 8, 9\)"):
        oasis.OASIS(tmp_path, "unlabeled", shape=(8, 8, 8))
    (folder / "aligned_seg4.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="OASIS_OAS1_0003_MR1/aligned_seg4.nii.gz is missing"):
        oasis.OASIS(tmp_path, "test", shape=(8, 8, 8))
    with pytest.raises(FileNotFoundError, match="no subject folder"):
        oasis.OASIS(tmp_path / "OASIS_OAS1_0001_MR1", "test")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        oasis.OASIS(tmp_path / "nowhere", "test")
    bad = tmp_path / "bad"
    oasis.write_fixture(bad, subjects=4, shape=(8, 8, 8))
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), 9, np.int16), np.eye(4)), bad / "OASIS_OAS1_0004_MR1" / "aligned_seg4.nii.gz")
    with pytest.raises(ValueError, match="label value"):
        oasis.OASIS(bad, "test", shape=(8, 8, 8))
    with pytest.raises(ValueError, match="at least 3"):
        small = tmp_path / "small"
        oasis.write_fixture(small, subjects=3, shape=(8, 8, 8))
        oasis.OASIS(small, "test", shape=(8, 8, 8))


# ---------------------------------------------------------------------------------------------
# Settings, scores, augmentation and the grid


def test_settings_refuse_what_cannot_run():
    with pytest.raises(ValueError, match="divisible"):
        lt.settings("demo", shape=(30, 40, 32))
    with pytest.raises(ValueError, match="unknown method"):
        lt.settings("demo", methods=("ltnet", "voxelmorph"))
    with pytest.raises(ValueError, match="labels"):
        lt.settings("demo", labels="seg99")


def test_scores_by_hand():
    truth = torch.zeros(2, 6, 6, 6, dtype=torch.long)
    truth[:, 1:3, 1:3, 1:3] = 1
    truth[:, 3:5, 3:5, 3:5] = 2
    pred = truth.clone()
    pred[1, 3:5, 3:5, 3:5] = 0  # the second volume misses structure 2
    s = lt.scores(pred, truth, ("a", "b"), fields=torch.zeros(2, 3, 6, 6, 6))
    assert s["dice_a"] == pytest.approx(1.0) and s["dice_b"] == pytest.approx(0.5)
    assert s["dice"] == pytest.approx(0.75) and s["folding"] == 0.0 and s["n_eval"] == 2.0


def test_augmentation_keeps_shapes_and_labels():
    g = torch.Generator().manual_seed(0)
    image, labels = ob.atlas((16, 24, 16))
    x, y = lt.augment(image[None].expand(2, -1, -1, -1, -1), labels[None].expand(2, -1, -1, -1), 7, g)
    assert x.shape == (2, 1, 16, 24, 16) and y.shape == (2, 16, 24, 16) and 0 <= x.min() and x.max() <= 1
    assert 0.4 < (y == labels).float().mean() < 1.0


def test_grid_runs_the_main_methods_at_every_seed_and_the_rest_at_side_seeds():
    config = lt.settings("demo")
    jobs = lt.grid(config)
    count = lambda method: sum(j.method == method for j in jobs)  # noqa: E731
    assert count("ltnet") == count("oneway") == len(config.seeds) == 5
    assert count("atlas_seg") == count("identity") == 3 and count("no_label_cycle") == 0  # the ablation: paper profile
    paper = lt.grid(lt.settings("paper"))
    assert sum(j.method == "no_label_cycle" for j in paper) == 3 and sum(j.method == "ltnet" for j in paper) == 5
    assert jobs[0].method == "ltnet" and lt.weights_of("oneway", config).cycle is False
    assert lt.weights_of("no_field_cycle", config).field_cycle == 0 and lt.weights_of("no_field_cycle", config).image_cycle == 1
    main = [c for c in lt.COMPARISONS if c.main]
    assert len(main) == 1 and (main[0].method, main[0].baseline) == ("ltnet", "oneway") and main[0].gates
