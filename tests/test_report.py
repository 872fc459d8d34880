"""The evidence standard on hand-made records: gates (floor, saturation, extra gates, precision),
intervals and the words that follow them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medlab import report
from medlab.chapter import ComparisonSpec, GateSpec


def _frame(baseline, method, metric="accuracy", extra=()):
    rows = []
    for seed, (b, m) in enumerate(zip(baseline, method)):
        rows.append({"experiment": "main", "seed": seed, "params.method": "base", f"metrics.{metric}": b, "metrics.n_eval": 400})
        rows.append({"experiment": "main", "seed": seed, "params.method": "new", f"metrics.{metric}": m, "metrics.n_eval": 400})
    rows += list(extra)
    return pd.DataFrame(rows)


def _spec(**changes):
    base = dict(name="new vs base", metric="accuracy", column="params.method", method="new", baseline="base",
                floor=0.5, ceiling=1.0, main=True, where={"experiment": "main"})
    return ComparisonSpec(**{**base, **changes})


def test_t_interval_by_hand():
    lo, hi = report.t_interval(np.array([1.0, 2.0, 3.0]))
    half = 4.302652729911275 * 1.0 / np.sqrt(3)  # t(0.975, 2) * s / sqrt(n)
    assert (lo, hi) == pytest.approx((2 - half, 2 + half))
    assert np.isnan(report.t_interval(np.array([1.0]))[0])


def test_a_clear_gain_is_better():
    v = report.evaluate(_spec(), _frame([0.80, 0.81, 0.79, 0.80, 0.80], [0.83, 0.84, 0.82, 0.84, 0.83]))
    assert v["verdict"] == "better" and v["ci95"][0] > 0 and v["n_seeds"] == 5 and v["n_eval"] == 400
    assert v["diff_mean"] == pytest.approx(0.032) and all(v["gates"].values())
    assert v["baseline_mean"] == pytest.approx(0.80) and v["method_mean"] == pytest.approx(0.832)


def test_a_clear_loss_is_worse_and_lower_is_better_flips_the_words():
    frame = _frame([0.80] * 4, [0.77, 0.78, 0.76, 0.77])
    assert report.evaluate(_spec(), frame)["verdict"] == "worse"
    errors = _spec(floor=1.0, ceiling=0.0, higher_is_better=False)  # an error rate: lower is better
    frame = _frame([0.40, 0.41, 0.39, 0.40], [0.37, 0.38, 0.36, 0.37])
    assert report.evaluate(errors, frame)["verdict"] == "better"


def test_an_interval_across_zero_is_no_difference_at_its_width():
    v = report.evaluate(_spec(), _frame([0.80, 0.81, 0.79, 0.80], [0.81, 0.80, 0.80, 0.80]))
    assert v["verdict"] == "no_difference" and v["ci95"][0] < 0 < v["ci95"][1]
    assert v["reason"].startswith("no difference detectable at ±") and v["reason"].endswith("points")


def test_direction_follows_the_interval_and_the_metric_sense():
    assert report.direction((0.01, 0.05)) == "better" and report.direction((-0.05, -0.01)) == "worse"
    assert report.direction((0.01, 0.05), higher_is_better=False) == "worse"
    assert report.direction((-0.05, -0.01), higher_is_better=False) == "better"
    assert report.direction((-0.01, 0.05)) == "no_difference" and report.direction((0.0, 0.05)) == "no_difference"
    assert report.direction((float("nan"), float("nan"))) == "no_difference"


def test_a_baseline_at_the_floor_makes_the_comparison_void():
    v = report.evaluate(_spec(), _frame([0.55, 0.56, 0.54], [0.60, 0.61, 0.59]))  # 10% of the way
    assert v["verdict"] == "void" and v["gates"]["baseline_learned"] is False
    assert "10% of the way from floor to ceiling" in v["reason"]


def test_a_saturated_baseline_makes_the_comparison_void():
    v = report.evaluate(_spec(), _frame([0.99, 0.99, 0.99], [0.995, 0.99, 0.995]))
    assert v["verdict"] == "void" and v["gates"]["baseline_not_saturated"] is False and "saturated" in v["reason"]


def test_a_main_comparison_must_reach_the_precision_target_others_need_not():
    noisy = _frame([0.80, 0.70, 0.90], [0.90, 0.75, 0.85])
    v = report.evaluate(_spec(), noisy)
    assert v["verdict"] == "void" and v["gates"]["precise_enough"] is False and "wider than the ±3.0 points" in v["reason"]
    side = report.evaluate(_spec(main=False), noisy)
    assert side["verdict"] == "no_difference" and "precise_enough" not in side["gates"]


def test_one_seed_gives_no_interval():
    v = report.evaluate(_spec(main=False), _frame([0.8], [0.9]))
    assert v["verdict"] == "void" and "no interval" in v["reason"]


def test_missing_records_are_void_with_the_reason():
    v = report.evaluate(_spec(method="other"), _frame([0.8, 0.8], [0.9, 0.9]))
    assert v["verdict"] == "void" and "no records of other" in v["reason"]


def test_extra_gates_read_other_records():
    extra = [
        {"experiment": "pretext", "seed": 0, "params.method": "new", "metrics.heldout_accuracy": 0.9},
        {"experiment": "probe", "seed": 0, "params.method": "random", "metrics.probe": 0.6},
        {"experiment": "probe", "seed": 0, "params.method": "new", "metrics.probe": 0.55},
    ]
    frame = _frame([0.80, 0.81, 0.79], [0.83, 0.84, 0.82], extra=extra)
    learned = GateSpec("pretext learned", "heldout_accuracy", {"experiment": "pretext"}, at_least=0.5)
    beats = GateSpec("features beat random", "probe", {"experiment": "probe", "params.method": "new"},
                     above={"experiment": "probe", "params.method": "random"})
    v = report.evaluate(_spec(gates=(learned, beats)), frame)
    assert v["gates"]["pretext learned"] is True and v["gates"]["features beat random"] is False
    assert v["verdict"] == "void" and "features beat random fails: mean probe 0.550" in v["reason"]
    assert "the reference's mean is 0.600" in v["reason"] and "pretext learned" not in v["reason"]


def test_comparisons_file_has_the_documented_fields(tmp_path):
    verdicts = report.evaluate_all([_spec(), _spec(name="side", main=False)], _frame([0.8, 0.81, 0.79], [0.83, 0.84, 0.82]))
    path = report.write_comparisons("toy", "demo", verdicts, root=tmp_path)
    assert path == tmp_path / "demo" / "toy" / "comparisons.json"
    stored = json.loads(path.read_text())
    fields = {"name", "main", "metric", "higher_is_better", "floor", "ceiling", "baseline", "method", "baseline_mean",
              "method_mean", "diff_mean", "ci95", "n_seeds", "n_eval", "gates", "verdict", "reason"}
    assert fields <= set(stored[0]) and stored[0]["verdict"] in report.VERDICTS
    assert report.load_comparisons("toy", "demo", root=tmp_path) == stored
    text = report.verdicts_markdown(stored, {"new": "New", "base": "Base"})
    assert text.startswith("- (main) **new vs base**: New minus Base, accuracy +3.0 points (95% interval")
    assert "New is better." in text
    table = report.verdicts_table(stored)
    assert table.loc["new vs base (main)", "verdict"] == "better"


def test_records_loading_skips_the_comparisons_file(tmp_path):
    from medlab import results

    results.write_record(chapter="toy", profile="demo", experiment="e", variant="v", seed=0, metrics={"a": 1.0},
                         params={}, dataset={}, environment={}, root=tmp_path)
    report.write_comparisons("toy", "demo", [], root=tmp_path)
    assert len(results.load(chapter="toy", profile="demo", root=tmp_path)) == 1


def test_the_differences_figure_draws_each_comparison():
    fig = report.differences_figure([_spec(), _spec(name="side", main=False)], _frame([0.8, 0.81, 0.79], [0.83, 0.84, 0.82]))
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["new vs base (main)", "side"]
