"""One training loop for every chapter.

``fit`` trains a model for a number of epochs and, after every epoch, writes a checkpoint into the run
folder. Called again with the same run folder it resumes after the last finished epoch and ends with
the same weights and metrics as an uninterrupted run: the batch order of epoch ``e`` depends only on
``(seed, e)``, and the random-number generators are saved with the weights.

A chapter supplies what is specific to its method through ``loss_fn(model, batch) -> dict``, whose
``"loss"`` entry is minimised and whose other entries are logged. On CUDA the forward pass runs under
autocast (bf16 where supported, else fp16 with gradient scaling); losses are accumulated on the device,
so the loop does not wait for the GPU at every step.
"""

from __future__ import annotations

import math
import os
import random
import resource
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


@dataclass
class FitResult:
    """What a call to :func:`fit` did and measured."""

    history: list[dict[str, float]]
    run_dir: Path
    resumed_from_epoch: int = 0
    epochs_trained_now: int = 0
    train_s: float = 0.0
    best_epoch: int | None = None
    best_value: float | None = None
    peak_memory_mb: float | None = None
    samples_per_s: float | None = None
    notes: list[str] = field(default_factory=list)


class EpochShuffleSampler(Sampler[int]):
    """A random order that depends only on ``(seed, epoch)``: resuming replays the same batches.

    Without ``weights`` it is a permutation; with per-sample ``weights`` it draws ``size`` indices
    with replacement in proportion to them (e.g. class-balanced sampling).
    """

    def __init__(self, size: int, seed: int, weights: torch.Tensor | None = None):
        if weights is not None and len(weights) != size:
            raise ValueError(f"{len(weights)} sample weights for {size} samples")
        if weights is not None and (
            not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0
        ):
            raise ValueError("sample weights must be finite, non-negative and not all zero")
        self.size, self.seed, self.epoch = size, seed, 0
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        if self.weights is not None:
            return iter(
                torch.multinomial(self.weights, self.size, replacement=True, generator=generator).tolist()
            )
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % 2**63


_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}  # images, volumes


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move every tensor in a (nested) batch to ``device``; float images (4-D) and volumes (5-D)
    optionally channels-last."""
    if isinstance(batch, torch.Tensor):
        moved = batch.to(device, non_blocking=True)
        if channels_last and moved.dim() in _CHANNELS_LAST and moved.is_floating_point():
            moved = moved.contiguous(memory_format=_CHANNELS_LAST[moved.dim()])
        return moved
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [to_device(v, device, channels_last) for v in batch]
        return type(batch)(moved) if isinstance(batch, tuple) and not hasattr(batch, "_fields") else moved
    return batch


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Store the 2D (4-D) and 3D (5-D) convolution weights of ``model`` channels-last, in place."""
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            if tensor.dim() in _CHANNELS_LAST:
                tensor.data = tensor.data.contiguous(memory_format=_CHANNELS_LAST[tensor.dim()])
    return model


def autocast_for(device: torch.device, enabled: bool = True):
    """The mixed-precision context used for training and evaluation (a no-op off CUDA)."""
    use = enabled and device.type == "cuda"
    dtype = torch.bfloat16 if use and torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda" if use else "cpu", dtype=dtype, enabled=use)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory: allocated GPU memory on CUDA, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak_kb / 1024 if sys.platform != "darwin" else peak_kb / 2**20


def timed_steps(
    loader: Iterable[Any], step: Callable[[Any], None], *, device: torch.device, steps: int, warmup: int = 2
) -> float:
    """Batches per second of ``step(batch)`` over ``steps`` batches of ``loader``, after ``warmup``
    untimed ones (the loader is cycled as often as needed). CUDA is synchronised only where the timing
    starts and ends, so a step that never waits for the device is timed as it runs in training."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    done, tic = 0, 0.0
    while done < steps + warmup:
        empty = True
        for batch in loader:
            empty = False
            if done == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                tic = time.perf_counter()
            step(batch)
            done += 1
            if done == steps + warmup:
                break
        if empty:
            raise ValueError("the loader yields no batch")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - tic)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _progress_enabled(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    return os.environ.get("MEDLAB_PROGRESS", "1") not in ("0", "false", "False")


def fit(
    model: torch.nn.Module,
    train_data: Dataset,
    *,
    loss_fn: Callable[[torch.nn.Module, Any], Mapping[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int,
    run_dir: str | Path,
    device: torch.device,
    seed: int = 0,
    evaluate: Callable[[torch.nn.Module], Mapping[str, float]] | None = None,
    monitor: str | None = None,
    monitor_mode: str = "max",
    restore_best: bool = True,
    scheduler: Any = None,
    scheduler_interval: str = "epoch",
    amp: bool = True,
    channels_last: bool = False,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    drop_last: bool = True,
    grad_clip: float | None = None,
    sample_weights: torch.Tensor | None = None,
    fingerprint: str | None = None,
    progress: bool | None = None,
    desc: str = "train",
    on_epoch_end: Iterable[Callable[[int, dict[str, float]], None]] = (),
    after_step: Callable[[torch.nn.Module], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``train_data`` for ``epochs`` epochs, checkpointing into ``run_dir``.

    ``evaluate(model)`` (optional) runs after every epoch in eval mode without gradients; its values
    are logged as ``val/<name>``. With ``monitor`` (a key of ``evaluate``'s result) the best epoch's
    weights are kept in ``best.pt`` and, with ``restore_best``, loaded back at the end.

    ``sample_weights`` (one per training sample) makes each epoch draw ``len(train_data)`` samples
    with replacement in proportion to them, e.g. :func:`class_balanced_weights`.

    ``fingerprint`` identifies the code and settings of the run: a checkpoint with another fingerprint
    is not resumed (training starts afresh, and says so).

    ``after_step(model)`` runs after every optimiser step, without gradients: e.g. the momentum
    update of a key encoder. Whatever it changes must live in the model's parameters or buffers, so
    the checkpoint carries it.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if len(train_data) < batch_size and drop_last:
        raise ValueError(
            f"the training set has {len(train_data)} samples, fewer than one batch of {batch_size}"
        )
    if monitor_mode not in ("max", "min"):
        raise ValueError(f"monitor_mode must be 'max' or 'min', got {monitor_mode!r}")
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    if channels_last:
        to_channels_last(model)

    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    result = FitResult(history=[], run_dir=run_dir)
    start_epoch = 1
    train_s = 0.0
    best_value: float | None = None
    best_epoch: int | None = None

    checkpoint_path = run_dir / CHECKPOINT
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        if state.get("fingerprint") != fingerprint:
            result.notes.append(
                f"{checkpoint_path} was made by other code or settings; training from scratch"
            )
            warnings.warn(result.notes[-1], stacklevel=2)
        elif state["epoch"] > epochs:
            raise ValueError(
                f"{checkpoint_path} holds {state['epoch']} epochs, more than the {epochs} requested"
            )
        else:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            _set_rng_state(state["rng"], device)
            result.history = state["history"]
            train_s = state["train_s"]
            best_value, best_epoch = state.get("best_value"), state.get("best_epoch")
            start_epoch = state["epoch"] + 1
            result.resumed_from_epoch = state["epoch"]

    sampler = EpochShuffleSampler(len(train_data), seed, sample_weights)
    loader_generator = torch.Generator()
    loader = DataLoader(
        train_data,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=drop_last,
        pin_memory=device.type == "cuda",
        generator=loader_generator,
    )
    steps_per_epoch = len(loader)
    show = _progress_enabled(progress)
    bar = None
    if show and start_epoch <= epochs:
        from tqdm.auto import tqdm

        bar = tqdm(total=(epochs - start_epoch + 1) * steps_per_epoch, desc=desc, leave=False)

    last_saved = start_epoch - 1
    try:
        for epoch in range(start_epoch, epochs + 1):
            sampler.set_epoch(epoch)
            loader_generator.manual_seed(_epoch_seed(seed, epoch) + 1)
            model.train()
            sums: dict[str, torch.Tensor] = {}
            seen = 0
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            tic = time.perf_counter()
            for batch in loader:
                batch = to_device(batch, device, channels_last)
                with autocast_for(device, use_amp):
                    losses = loss_fn(model, batch)
                loss = losses["loss"]
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                scaler.step(optimizer)
                scaler.update()
                if after_step is not None:
                    with torch.no_grad():
                        after_step(model)
                if scheduler is not None and scheduler_interval == "step":
                    scheduler.step()
                for name, value in losses.items():
                    value = value.detach().float()
                    sums[name] = sums[name] + value if name in sums else value
                seen += _batch_size(batch)
                if bar is not None:
                    bar.update(1)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            epoch_s = time.perf_counter() - tic
            train_s += epoch_s
            if scheduler is not None and scheduler_interval == "epoch":
                scheduler.step()

            record: dict[str, float] = {"epoch": epoch}
            for name, total in sums.items():
                record[f"train/{name}"] = total.item() / steps_per_epoch
            if not math.isfinite(record.get("train/loss", 0.0)):
                raise FloatingPointError(
                    f"the training loss is {record['train/loss']} in epoch {epoch} ({run_dir})"
                )
            record["lr"] = optimizer.param_groups[0]["lr"]
            record["epoch_s"] = epoch_s
            record["samples_per_s"] = seen / epoch_s if epoch_s > 0 else float("nan")

            if evaluate is not None:
                model.eval()
                with torch.no_grad(), autocast_for(device, use_amp):
                    scores = evaluate(model)
                model.train()
                for name, value in scores.items():
                    record[f"val/{name}"] = float(value)
            record["peak_memory_mb"] = peak_memory_mb(device)

            if monitor is not None:
                key = monitor if monitor in record else f"val/{monitor}"
                if key not in record:
                    raise KeyError(f"monitor {monitor!r} is not among the logged values: {sorted(record)}")
                value = record[key]
                better = best_value is None or (
                    value > best_value if monitor_mode == "max" else value < best_value
                )
                if better:
                    best_value, best_epoch = value, epoch
                    _atomic_save(
                        {"model": model.state_dict(), "epoch": epoch, "fingerprint": fingerprint},
                        run_dir / BEST,
                    )

            result.history.append(record)
            _atomic_save(
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "scaler": scaler.state_dict(),
                    "rng": _rng_state(device),
                    "history": result.history,
                    "train_s": train_s,
                    "best_value": best_value,
                    "best_epoch": best_epoch,
                    "fingerprint": fingerprint,
                },
                checkpoint_path,
            )
            last_saved = epoch
            result.epochs_trained_now += 1
            for callback in on_epoch_end:
                callback(epoch, record)
    except KeyboardInterrupt:
        print(
            f"Interrupted. Run again with the same run folder to resume after epoch {last_saved}: {run_dir}"
        )
        raise
    finally:
        if bar is not None:
            bar.close()

    if monitor is not None and restore_best and (run_dir / BEST).exists():
        model.load_state_dict(torch.load(run_dir / BEST, map_location=device, weights_only=False)["model"])
    result.train_s = train_s
    result.best_epoch, result.best_value = best_epoch, best_value
    speeds = [
        r["samples_per_s"] for r in result.history if math.isfinite(r.get("samples_per_s", float("nan")))
    ]
    result.samples_per_s = float(np.median(speeds)) if speeds else None
    peaks = [r["peak_memory_mb"] for r in result.history if "peak_memory_mb" in r]
    result.peak_memory_mb = max(peaks) if peaks else None
    return result


def class_balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-sample weights ``1 / count(class)``: every class is drawn equally often in expectation."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    counts = torch.bincount(labels)
    return (1.0 / counts.double())[labels]


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, Mapping):
        return _batch_size(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        return _batch_size(batch[0])
    raise TypeError(f"cannot tell the batch size of a {type(batch).__name__}")


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    data: Dataset,
    *,
    forward: Callable[[torch.nn.Module, Any], Any],
    device: torch.device,
    batch_size: int = 256,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    channels_last: bool = False,
    amp: bool = True,
) -> Any:
    """Run ``forward(model, batch)`` over ``data`` in eval mode and concatenate the outputs on the CPU.

    ``forward`` returns a tensor or a dict of tensors; the same structure comes back, concatenated.
    """
    was_training = model.training
    model.eval()
    loader = DataLoader(
        data,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
    )
    outputs: list[Any] = []
    with autocast_for(device, amp):
        for batch in loader:
            out = forward(model, to_device(batch, device, channels_last))
            outputs.append(out)
    model.train(was_training)
    if not outputs:
        raise ValueError("predict() got an empty dataset")
    if isinstance(outputs[0], Mapping):
        return {k: torch.cat([o[k].float().cpu() for o in outputs]) for k in outputs[0]}
    return torch.cat([o.float().cpu() for o in outputs])
