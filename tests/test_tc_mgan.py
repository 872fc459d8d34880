"""Chapter 7 (TC-MGAN): the networks' shapes, the losses against hand computations, the gradient penalty,
the frozen critic in the generator's step, the scores, and the smoke grid end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medlab import chapter, experiment, notebooks, results
from medlab.papers import tc_mgan as tc
from medlab.papers.tc_mgan.runs import Synthesis, pick

torch.manual_seed(0)


def test_the_chapter_satisfies_the_contract():
    assert chapter.check(tc) == []


def test_condition_broadcasts_the_one_hot_code():
    t2 = torch.randn(2, 1, 8, 8)
    x = tc.condition(t2, torch.tensor([2, 0]))
    assert x.shape == (2, 4, 8, 8) and torch.equal(x[:, 0], t2[:, 0])
    assert (x[0, 3] == 1).all() and (x[0, 1:3] == 0).all() and (x[1, 1] == 1).all()


def test_networks_shapes():
    g = tc.UNetGenerator(4, 1, downs=5, width=4)
    out = g(torch.randn(2, 4, 32, 32))
    assert out.shape == (2, 1, 32, 32) and out.abs().max() <= 1
    with pytest.raises(ValueError, match="divisible"):
        g(torch.randn(1, 4, 24, 24))
    src, cls = tc.Critic(32, 4)(out, torch.randn(2, 1, 32, 32))
    assert src.shape == (2, 1, 4, 4) and cls.shape == (2, 3)
    assert tc.Segmentor(widths=(4, 8))(torch.randn(2, 4, 32, 32)).shape == (2, 1, 32, 32)
    assert tc.PatchDiscriminator(2, 4)(out, torch.randn(2, 1, 32, 32)).dim() == 4


def test_dice_loss_and_classification_loss_by_hand():
    p = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    t = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert torch.isclose(tc.dice_loss(p, t), torch.tensor(1 - 3 / 4))  # (2*1 + 1) / (2 + 1 + 1)
    logits = torch.tensor([[2.0, -1.0, 0.0]])
    expected = -(torch.log(torch.sigmoid(torch.tensor(2.0))) + torch.log(1 - torch.sigmoid(torch.tensor(-1.0))) + torch.log(torch.tensor(0.5)))
    assert torch.isclose(tc.classification_loss(logits, torch.tensor([0])), expected)


class Linear(torch.nn.Module):
    """A critic whose patch sum is linear in x: its gradient norm is known."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x, t2):
        return (x * self.w).sum((1, 2, 3))[:, None, None, None], torch.zeros(len(x), 3)


def test_gradient_penalty_of_a_linear_critic():
    w = torch.full((1, 1, 2, 2), 0.5)  # ||grad|| = sqrt(4 * 0.25) = 1: no penalty
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    assert tc.gradient_penalty(Linear(w), real, fake, real).abs() < 1e-6
    gp = tc.gradient_penalty(Linear(2 * w), real, fake, real)  # ||grad|| = 2
    assert torch.isclose(gp, torch.tensor(1.0))
    gp.backward()  # differentiable in the critic's weights (create_graph)


def test_critic_and_generator_losses_sum_patches_and_pixels():
    critic = Linear(torch.ones(1, 1, 2, 2))
    real, fake, t2 = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    d = tc.critic_loss(critic, real, fake, t2, torch.tensor([0, 1]), cls_weight=0.0, gp_weight=0.0)
    assert torch.isclose(d["d_adv"], torch.tensor(-4.0))
    src = torch.ones(2, 1, 4, 4)
    g = tc.generator_loss(src, torch.zeros(2, 3), real, fake, torch.tensor([0, 1]), None, torch.zeros(2, 1, 2, 2),
                          cls_weight=0.0, rec_weight=0.5, seg_weight=10.0)
    assert torch.isclose(g["g_adv"], torch.tensor(-16.0)) and torch.isclose(g["g_rec"], torch.tensor(4.0))
    assert torch.isclose(g["loss"], torch.tensor(-16.0 + 2.0)) and g["g_seg"] == 0


def test_segmentor_loss_mixes_synthetic_and_real():
    y = torch.ones(1, 1, 2, 2)
    assert torch.isclose(tc.segmentor_loss(torch.zeros_like(y), y, y), 0.7 * tc.dice_loss(torch.zeros_like(y), y))


def test_the_generator_step_leaves_the_critic_and_segmentor_gradients_to_their_own_losses():
    config = tc.settings("smoke")
    model = Synthesis(tc.METHODS["tc_mgan"], config)
    critic_opt = torch.optim.Adam(model.critics.parameters(), lr=1e-3)
    before = [p.clone() for p in model.critics.parameters()]
    images, masks = torch.rand(4, 4, 16, 16) * 2 - 1, (torch.rand(4, 16, 16) > 0.8).long()
    out = tc.gan_step(model, (images, masks), tc.METHODS["tc_mgan"], config, critic_opt, 1e-3)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.critics.parameters()))  # D stepped
    model.critics.zero_grad()
    out["loss"].backward()
    assert all(p.grad is None for p in model.critics.parameters())  # G's loss does not reach D
    seg_grads = [p.grad for p in model.segmentor.parameters()]
    assert all(g is not None for g in seg_grads)
    assert {"g_seg", "s_loss", "d_gp", "d_cls"} <= set(out)
    mgan = Synthesis(tc.METHODS["mgan"], config)
    assert mgan.segmentor is None


def test_pix2pix_losses_by_hand():
    disc = tc.PatchDiscriminator(2, 4, layers=2)
    real, fake, t2 = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    g = tc.pix2pix_g_loss(disc, real, fake, t2, l1_weight=100.0)
    assert torch.isclose(g["loss"], g["g_adv"] + 100 * (real - fake).abs().mean())
    assert tc.pix2pix_d_loss(disc, real, fake, t2) > 0


def test_pick_takes_each_samples_target_channel():
    images = torch.arange(4.0)[None, :, None, None].expand(3, 4, 2, 2)
    # targets flair, t1ce, t1 are channels 3, 1, 0 of (t1, t1ce, t2, flair)
    assert pick(images, torch.tensor([0, 1, 2]))[:, 0, 0, 0].tolist() == [3.0, 1.0, 0.0]


def test_scores_by_hand():
    real = torch.zeros(1, 1, 16, 16)
    fake = real + 0.2
    brain = torch.ones(1, 16, 16, dtype=torch.bool)
    tumour = torch.zeros(1, 16, 16, dtype=torch.bool)
    s = tc.synthesis_scores(fake, real, brain, tumour)
    assert abs(s["psnr_brain"] - 10 * torch.log10(torch.tensor(4 / 0.04)).item()) < 1e-3
    assert abs(s["mae_brain"] - 0.2) < 1e-6 and s["psnr_tumour"] != s["psnr_tumour"]  # no tumour: NaN
    pred = torch.zeros(2, 4, 4)
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    target[0, 0, 0] = 1
    assert tc.tumour_dice(pred, target) == 0.0  # pooled: nothing found
    assert tc.slice_dice(pred, target) == pytest.approx((1 / 2 + 1) / 2)  # the code's: (0 + 1) / (0 + 1 + 1) and an empty slice's 1
    pred[0, 0, 0], pred[1, 1, 1] = 1.0, 1.0
    assert tc.tumour_dice(pred, target) == pytest.approx(2 / 3)


def test_the_smoke_grid_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLAB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MEDLAB_RUNS_DIR", str(tmp_path / "runs"))
    config = tc.settings("smoke", side_methods=("no_gp",))
    records = experiment.run_grid(tc, config, profile="smoke", device=torch.device("cpu"))
    frame = results.to_frame(records)
    assert sorted(frame["experiment"].value_counts().items()) == [("ablation", 1), ("comparison", 3), ("downstream", 2), ("segmentors", 2)]
    runs = frame[frame["experiment"].isin(["comparison", "ablation"])]
    assert runs["metrics.dice"].notna().all() and runs["metrics.psnr_tumour"].notna().all()
    # the comparisons' metrics, relative to the references measured in the same run
    for target in tc.TARGETS:
        share = runs[f"metrics.{target}/dice"] / runs[f"metrics.{target}/real_dice"]
        assert np.allclose(runs[f"metrics.{target}/dice_share"], share, equal_nan=True)
        gain = runs[f"metrics.{target}/psnr_brain"] - runs[f"metrics.{target}/t2_psnr_brain"]
        assert np.allclose(runs[f"metrics.{target}/psnr_brain_gain"], gain)
    assert "No pair" not in tc.findings(frame) and len(tc.metrics_table(frame)) == 4
    assert tc.examples_figure(records, 0) is not None and tc.curves_figure(records, 0) is not None
    downstream = frame[frame["experiment"] == "downstream"].set_index("params.inputs")
    assert downstream.loc["t2", "metrics.channels"] == 1 and downstream.loc["tc_mgan", "metrics.channels"] == 4
    assert "params.generator" in downstream and downstream["params.generator"].notna().sum() == 1


def test_main_comparison_reads_the_judge_s_dice_as_a_share_of_its_dice_on_real_images():
    import pandas as pd

    from medlab import report

    rows = []
    for seed in range(5):
        for method, share in (("mgan", 0.60 + 0.01 * seed), ("tc_mgan", 0.70 + 0.01 * seed), ("pix2pix", 0.5)):
            rows.append({"experiment": "comparison", "seed": seed, "params.method": method, "metrics.dice_share": share,
                         "metrics.psnr_tumour_gain": 1.0, "metrics.psnr_brain_gain": 4.0})
    verdicts = {v["name"]: v for v in report.evaluate_all(tc.COMPARISONS, pd.DataFrame(rows))}
    main = next(v for v in verdicts.values() if v["main"])
    assert main["metric"] == "dice_share" and main["verdict"] == "better" and main["diff_mean"] == pytest.approx(0.10)
    # PSNR gains of 1 dB over T2-as-target are 5% of the way to the 20 dB ceiling: void, with the reason
    psnr = verdicts["MGAN vs pix2pix (PSNR inside the tumour, dB above T2 as the target)"]
    assert psnr["verdict"] == "void" and "5% of the way" in psnr["reason"]
