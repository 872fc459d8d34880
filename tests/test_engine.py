"""The training engine: a run interrupted and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from medlab import engine
from medlab.runtime import seed_everything

DEVICE = torch.device("cpu")


def _problem(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 5, generator=generator)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y), TensorDataset(x[:32], y[:32])


def _model():
    seed_everything(123)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))


def _loss(model, batch):
    x, y = batch
    x = x + 0.1 * torch.randn_like(x)  # uses the global RNG, as on-device augmentation does
    loss = F.cross_entropy(model(x), y)
    return {"loss": loss, "ce": loss}


def _fit(model, run_dir, epochs=5, device=DEVICE, **kwargs):
    train, val = _problem()
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)

    def evaluate(m):
        x, y = val.tensors
        return {"accuracy": (m(x.to(device)).argmax(1).cpu() == y).float().mean().item()}

    return engine.fit(
        model,
        train,
        run=engine.RunContext(device=device, run_dir=run_dir, seed=7, progress=False, fingerprint="f1"),
        loss_fn=_loss,
        optimizer=optimizer,
        epochs=epochs,
        batch_size=16,
        evaluate=evaluate,
        scheduler=scheduler,
        **kwargs,
    )


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def _without_timing(history):
    return [
        {k: v for k, v in r.items() if k not in ("epoch_s", "samples_per_s", "peak_memory_mb")}
        for r in history
    ]


class Interrupt(Exception):
    pass


def test_fit_trains_and_logs(tmp_path):
    model = _model()
    result = _fit(model, tmp_path / "run")
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5]
    assert result.history[-1]["train/loss"] < result.history[0]["train/loss"]
    assert {"train/ce", "val/accuracy", "lr", "samples_per_s", "peak_memory_mb"} <= set(result.history[0])
    assert result.samples_per_s > 0 and result.peak_memory_mb > 0
    assert (tmp_path / "run" / engine.CHECKPOINT).exists()


def test_resume_after_interruption_between_epochs_matches_uninterrupted(tmp_path):
    reference = _model()
    expected = _fit(reference, tmp_path / "a")

    def stop_after_two(epoch, record):
        if epoch == 2:
            raise Interrupt

    interrupted = _model()
    with pytest.raises(Interrupt):
        _fit(interrupted, tmp_path / "b", on_epoch_end=[stop_after_two])
    resumed_model = _model()  # a fresh process would rebuild the model from scratch
    resumed = _fit(resumed_model, tmp_path / "b")
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_trained_now == 3
    assert _same_weights(reference, resumed_model)
    assert _without_timing(resumed.history) == _without_timing(expected.history)


def test_resume_after_interruption_inside_an_epoch(tmp_path):
    reference = _model()
    _fit(reference, tmp_path / "a")

    calls = {"n": 0}

    def failing_loss(model, batch):
        calls["n"] += 1
        if calls["n"] == 14:  # in the middle of epoch 3 (6 steps per epoch)
            raise KeyboardInterrupt
        return _loss(model, batch)

    interrupted = _model()
    train, _ = _problem()
    optimizer = torch.optim.SGD(interrupted.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    with pytest.raises(KeyboardInterrupt):
        engine.fit(
            interrupted,
            train,
            run=engine.RunContext(device=DEVICE, run_dir=tmp_path / "b", seed=7, progress=False, fingerprint="f1"),
            loss_fn=failing_loss,
            optimizer=optimizer,
            epochs=5,
            batch_size=16,
            scheduler=scheduler,
            evaluate=lambda m: {"accuracy": 0.0},
        )
    resumed_model = _model()
    resumed = _fit(resumed_model, tmp_path / "b")
    assert resumed.resumed_from_epoch == 2
    assert _same_weights(reference, resumed_model)


def test_finished_run_is_not_trained_again(tmp_path):
    first = _model()
    _fit(first, tmp_path / "run")
    again = _model()
    result = _fit(again, tmp_path / "run")
    assert result.epochs_trained_now == 0 and len(result.history) == 5
    assert _same_weights(first, again)


def test_checkpoint_from_other_code_is_not_resumed(tmp_path):
    _fit(_model(), tmp_path / "run", epochs=2)
    model = _model()
    result = engine.fit(
            model,
            _problem()[0],
            run=engine.RunContext(device=DEVICE, run_dir=tmp_path / "run", progress=False, fingerprint="f2"),
            loss_fn=_loss,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=2,
            batch_size=16,
        )
    assert result.resumed_from_epoch == 0 and result.epochs_trained_now == 2


def test_monitor_restores_best_epoch(tmp_path):
    scores = iter([0.5, 0.9, 0.1])
    model = _model()
    train, _ = _problem()
    snapshots = {}

    def evaluate(m):
        return {"score": next(scores)}

    def remember(epoch, record):
        snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    result = engine.fit(
        model,
        train,
        run=engine.RunContext(device=DEVICE, run_dir=tmp_path / "run", progress=False),
        loss_fn=_loss,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=3,
        batch_size=16,
        evaluate=evaluate,
        monitor="score",
        on_epoch_end=[remember],
    )
    assert result.best_epoch == 2 and result.best_value == 0.9
    assert all(torch.equal(v, snapshots[2][k]) for k, v in model.state_dict().items())


def test_nan_loss_raises_with_the_run_folder(tmp_path):
    model = _model()

    def nan_loss(m, batch):
        return {"loss": m(batch[0]).sum() * float("nan")}

    with pytest.raises(FloatingPointError, match="epoch 1"):
        engine.fit(
            model,
            _problem()[0],
            run=engine.RunContext(device=DEVICE, run_dir=tmp_path / "run", progress=False),
            loss_fn=nan_loss,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=1,
            batch_size=16,
        )


def test_bad_arguments_are_named(tmp_path):
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        engine.fit(
            model,
            _problem()[0],
            run=engine.RunContext(device=DEVICE, run_dir=tmp_path),
            loss_fn=_loss,
            optimizer=optimizer,
            epochs=0,
            batch_size=8,
        )
    with pytest.raises(ValueError, match="fewer than one batch"):
        engine.fit(
            model,
            _problem()[0],
            run=engine.RunContext(device=DEVICE, run_dir=tmp_path),
            loss_fn=_loss,
            optimizer=optimizer,
            epochs=1,
            batch_size=500,
        )


def test_batch_order_depends_only_on_seed_and_epoch():
    a = engine.EpochShuffleSampler(20, seed=3)
    b = engine.EpochShuffleSampler(20, seed=3)
    a.set_epoch(4)
    b.set_epoch(4)
    torch.manual_seed(0)
    first = list(a)
    torch.manual_seed(99)
    assert list(b) == first
    b.set_epoch(5)
    assert list(b) != first and sorted(first) == list(range(20))


def test_predict_concatenates_dict_outputs():
    data = TensorDataset(torch.arange(10.0).view(10, 1))
    out = engine.predict(
        nn.Identity(), data, forward=lambda m, batch: {"x": m(batch[0]) * 2}, device=DEVICE, batch_size=3
    )
    assert torch.equal(out["x"].view(-1), torch.arange(10.0) * 2)


def test_to_device_keeps_structure():
    batch = {"a": torch.zeros(2, 3, 4, 4), "b": [torch.ones(1), 5]}
    moved = engine.to_device(batch, DEVICE, channels_last=True)
    assert moved["a"].is_contiguous(memory_format=torch.channels_last)
    assert moved["b"][1] == 5


def test_timed_steps_times_only_the_steps_after_the_warm_up():
    import time as clock

    from medlab.engine import timed_steps

    seen = []

    def step(batch):
        seen.append(batch)
        clock.sleep(0.01)

    rate = timed_steps([1, 2, 3], step, device=torch.device("cpu"), steps=4, warmup=2)
    assert seen == [1, 2, 3, 1, 2, 3]  # the loader is cycled; warm-up batches run but are not timed
    assert 40 < rate < 110  # about 100 steps/s with 10 ms steps
    with pytest.raises(ValueError, match="no batch"):
        timed_steps([], step, device=torch.device("cpu"), steps=1)
    with pytest.raises(ValueError, match="steps must be"):
        timed_steps([1], step, device=torch.device("cpu"), steps=0)


def test_checkpoint_from_other_code_is_noted_in_the_run_folder_not_warned(tmp_path, recwarn):
    _fit(_model(), tmp_path / "run", epochs=2)
    model = _model()
    result = engine.fit(
        model,
        _problem()[0],
        run=engine.RunContext(device=DEVICE, run_dir=tmp_path / "run", progress=False, fingerprint="other"),
        loss_fn=_loss,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=1,
        batch_size=16,
    )
    assert result.epochs_trained_now == 1 and "other code or settings" in result.notes[0]
    assert str(tmp_path) not in result.notes[0]  # no machine path in what a notebook might print
    assert "other code or settings" in (tmp_path / "run" / engine.NOTES).read_text()
    assert not [w for w in recwarn if "other code" in str(w.message)]


class _Exploit:
    """Unpickling this runs code: what a tampered checkpoint could carry."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    _fit(_model(), run_dir, epochs=1)
    state = torch.load(run_dir / engine.CHECKPOINT, weights_only=True)
    state["payload"] = _Exploit()
    torch.save(state, run_dir / engine.CHECKPOINT)
    with pytest.raises(RuntimeError, match="not loaded .*could run code"):
        _fit(_model(), run_dir, epochs=2)
    with pytest.raises(RuntimeError, match=str(run_dir / engine.CHECKPOINT).replace("/", ".")):
        engine.load_checkpoint(run_dir / engine.CHECKPOINT)


def test_checkpoints_hold_only_plain_values(tmp_path):
    _fit(_model(), tmp_path / "run", epochs=1)
    state = torch.load(tmp_path / "run" / engine.CHECKPOINT, weights_only=True)  # raises otherwise
    assert state["epoch"] == 1 and state["world_size"] == 1 and len(state["rng"]) == 1


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_amp_dtype_follows_the_compute_capability(monkeypatch):
    from medlab import runtime

    assert runtime.amp_dtype(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    for capability, expected in (((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16), ((6, 0), torch.float16)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None, c=capability: c)
        assert runtime.amp_dtype(torch.device("cuda")) == expected
        assert engine.autocast_for(torch.device("cuda")).fast_dtype == expected


def test_to_device_keeps_named_tuples_and_tuples():
    from collections import namedtuple

    Pair = namedtuple("Pair", "image label")
    moved = engine.to_device((Pair(torch.zeros(1), torch.ones(1)), (1, 2)), DEVICE)
    assert isinstance(moved[0], Pair) and moved[0].label.item() == 1 and moved[1] == (1, 2)


@pytest.mark.parametrize("weighted", [False, True])
def test_sharded_sampler_splits_each_global_batch_between_processes(weighted):
    weights = torch.rand(23, generator=torch.Generator().manual_seed(0)) if weighted else None
    whole = engine.EpochShuffleSampler(23, seed=5, weights=weights)
    shards = [engine.EpochShuffleSampler(23, seed=5, weights=weights, rank=r, world_size=2) for r in range(2)]
    for sampler in (whole, *shards):
        sampler.set_epoch(3)
    order, parts = list(whole), [list(s) for s in shards]
    assert len(parts[0]) == len(parts[1]) == len(shards[0]) == 11
    global_batch = 4
    for b in range(len(parts[0]) // (global_batch // 2)):
        local = [p[b * 2 : (b + 1) * 2] for p in parts]
        assert sorted(local[0] + local[1]) == sorted(order[b * global_batch : (b + 1) * global_batch])
    with pytest.raises(ValueError, match="rank 2"):
        engine.EpochShuffleSampler(4, 0, rank=2, world_size=2)


def test_predict_reuses_one_loader_per_evaluation_set():
    data = TensorDataset(torch.arange(6.0).view(6, 1))
    first = engine._eval_loader(data, 4, DEVICE, 0, None)
    assert engine._eval_loader(data, 4, DEVICE, 0, None) is first
    assert engine._eval_loader(data, 2, DEVICE, 0, None) is not first


def test_make_loader_keeps_workers_alive_between_epochs():
    loader = engine.make_loader(TensorDataset(torch.zeros(8, 1)), batch_size=4, device=DEVICE, num_workers=1)
    assert loader.persistent_workers and loader.prefetch_factor == 4 and not loader.pin_memory
    assert not engine.make_loader(TensorDataset(torch.zeros(8, 1)), batch_size=4, device=DEVICE).persistent_workers


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_cuda_matches_uninterrupted(tmp_path):
    """The checkpoint loads onto the GPU; the generators' states must go back to the CPU to be restored."""
    cuda = torch.device("cuda")

    def stop_after_two(epoch, record):
        if epoch == 2:
            raise Interrupt

    reference = _model()
    _fit(reference, tmp_path / "a", epochs=4, device=cuda)
    with pytest.raises(Interrupt):
        _fit(_model(), tmp_path / "b", epochs=4, device=cuda, on_epoch_end=[stop_after_two])
    resumed_model = _model()
    resumed = _fit(resumed_model, tmp_path / "b", epochs=4, device=cuda)
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_trained_now == 2
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(reference.state_dict().values(), resumed_model.state_dict().values()))
