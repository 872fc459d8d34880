"""One training loop for every chapter.

:func:`fit` trains a model for a number of epochs and, after every epoch, writes a checkpoint into the
run folder. Called again with the same run folder it resumes after the last finished epoch and ends
with the same weights and metrics as an uninterrupted run: the batch order of epoch ``e`` depends only
on ``(seed, e)``, and the random-number generators are saved with the weights.

A chapter supplies what is specific to its method through ``loss_fn(model, batch) -> dict``, whose
``"loss"`` entry is minimised and whose other entries are logged. On CUDA the forward pass runs under
autocast (:func:`medlab.runtime.amp_dtype`: bf16 from compute capability 8.0, else fp16 with a
gradient scaler); losses are accumulated on the device and read once per epoch, so the loop never
waits for the GPU inside an epoch.

Under ``torchrun`` (several processes) the model is wrapped in DistributedDataParallel, every process
takes its share of each batch (the per-process batch is ``batch_size / world_size``: the global batch
and the learning rate stay those of one process), evaluation outputs are gathered so metrics cover the
whole evaluation set, and only rank 0 writes checkpoints.

The parts of :func:`fit`, in the order a reader follows them: :func:`resume` (load a checkpoint),
:func:`train_epoch` (one pass over the data), :func:`evaluate_epoch`, :func:`save_checkpoint`.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import random
import resource
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medlab.runtime import amp_dtype, distributed_world

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
NOTES = "notes.log"
INTERRUPT_AFTER_EPOCH = "MEDLAB_INTERRUPT_AFTER_EPOCH"  # tests of resume: stop after saving this epoch

log = logging.getLogger("medlab.engine")


@dataclass(frozen=True)
class RunContext:
    """Where and how one run trains: its folder, device, seed and the fingerprint of its code and
    settings (a checkpoint with another fingerprint is not resumed). Made by
    :func:`medlab.experiment.run_once`; tests make their own."""

    run_dir: Path
    device: torch.device
    seed: int = 0
    fingerprint: str | None = None
    progress: bool | None = None
    num_workers: int = 0
    desc: str = "train"

    @property
    def channels_last(self) -> bool:
        """Channels-last images and volumes: faster convolutions on CUDA, no gain on a CPU."""
        return self.device.type == "cuda"

    def path(self, name: str) -> Path:
        """A file of the run folder (created on first use)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return self.run_dir / name


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
    world_size: int = 1
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Batches: order, device transfer, loaders


class EpochShuffleSampler(Sampler[int]):
    """A random order that depends only on ``(seed, epoch)``: resuming replays the same batches.

    Without ``weights`` it is a permutation; with per-sample ``weights`` it draws ``size`` indices
    with replacement in proportion to them (e.g. class-balanced sampling). With ``world_size > 1``
    every process draws the same global order and keeps every ``world_size``-th index from its
    ``rank``, so that batch ``b`` of all processes together is batch ``b`` of one process.
    """

    def __init__(
        self,
        size: int,
        seed: int,
        weights: torch.Tensor | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        if weights is not None and len(weights) != size:
            raise ValueError(f"{len(weights)} sample weights for {size} samples")
        if weights is not None and (
            not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0
        ):
            raise ValueError("sample weights must be finite, non-negative and not all zero")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.size, self.seed, self.epoch = size, seed, 0
        self.rank, self.world_size = rank, world_size
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=generator)
        else:
            order = torch.randperm(self.size, generator=generator)
        usable = self.size - self.size % self.world_size
        return iter(order[:usable][self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.size // self.world_size


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % 2**63


_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}  # images, volumes


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move every tensor of a (nested) batch to ``device``, keeping its structure (dicts, lists,
    tuples, named tuples); float images (4-D) and volumes (5-D) optionally channels-last."""
    if isinstance(batch, torch.Tensor):
        moved = batch.to(device, non_blocking=True)
        if channels_last and moved.dim() in _CHANNELS_LAST and moved.is_floating_point():
            moved = moved.contiguous(memory_format=_CHANNELS_LAST[moved.dim()])
        return moved
    if isinstance(batch, Mapping):
        return type(batch)({k: to_device(v, device, channels_last) for k, v in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a named tuple
        return type(batch)(*(to_device(v, device, channels_last) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, channels_last) for v in batch)
    return batch


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Store the 2D (4-D) and 3D (5-D) convolution weights of ``model`` channels-last, in place."""
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            if tensor.dim() in _CHANNELS_LAST:
                tensor.data = tensor.data.contiguous(memory_format=_CHANNELS_LAST[tensor.dim()])
    return model


def make_loader(
    data: Dataset,
    *,
    batch_size: int,
    device: torch.device,
    sampler: Sampler | None = None,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader that keeps an accelerator busy: persistent workers (started once, not every
    epoch), a few batches prefetched per worker, and pinned memory on CUDA."""
    workers = {"persistent_workers": True, "prefetch_factor": 4} if num_workers > 0 else {}
    return DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=drop_last,
        pin_memory=device.type == "cuda",
        generator=generator,
        **workers,
    )


def autocast_for(device: torch.device, enabled: bool = True):
    """The mixed-precision context of training and evaluation (a no-op off CUDA); its dtype is
    :func:`medlab.runtime.amp_dtype`."""
    dtype = amp_dtype(device) if enabled else None
    if dtype is None:
        return torch.autocast(device_type="cpu", enabled=False)
    return torch.autocast(device_type="cuda", dtype=dtype)


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


# ---------------------------------------------------------------------------------------------
# Checkpoints: plain tensors and types only, loaded with weights_only=True


def _rng_state(device: torch.device) -> dict[str, Any]:
    """Every generator's state as tensors and plain types (nothing a safe loader refuses)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore :func:`_rng_state`'s generators. The checkpoint was loaded onto the run's device, and
    every generator takes its state from CPU tensors, so each tensor moves back to the CPU first."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].cpu().numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``: tensors and plain types only. A file that holds
    anything else (which unpickling could turn into running code) is refused with an error naming it."""
    path = Path(path)
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RuntimeError(
            f"{path} holds more than tensors and plain values, so it is not loaded (unpickling it "
            f"could run code: {first}). If you made it yourself with an older medlab, delete the run "
            "folder to train afresh."
        ) from None


def _note(result: FitResult, run_dir: Path, text: str) -> None:
    """A message about this machine's run folders: into the run's notes and the log, not the book."""
    result.notes.append(text)
    log.info(text)
    with open(run_dir / NOTES, "a") as handle:
        handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")


def _progress_enabled(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    return os.environ.get("MEDLAB_PROGRESS", "1") not in ("0", "false", "False")


# ---------------------------------------------------------------------------------------------
# Several processes (torchrun): the model wrapper and the gathering of evaluation outputs


class _Distributed(torch.nn.parallel.DistributedDataParallel):
    """DistributedDataParallel whose unknown attributes are those of the wrapped model, so a
    chapter's ``loss_fn`` reads ``model.head`` as it does in one process."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def _gather(value: Any) -> list[Any]:
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def _barrier() -> None:
    import torch.distributed as dist

    if distributed_world()[1] > 1:
        dist.barrier()


# ---------------------------------------------------------------------------------------------
# The training loop, in parts


@dataclass
class _State:
    """What the loop carries from epoch to epoch (and a checkpoint restores)."""

    start_epoch: int = 1
    train_s: float = 0.0
    best_value: float | None = None
    best_epoch: int | None = None


def resume(
    run: RunContext,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    epochs: int,
    result: FitResult,
) -> _State:
    """Restore the last checkpoint of ``run`` when it was made by the same code and settings."""
    state = _State()
    path = run.run_dir / CHECKPOINT
    if not path.exists():
        return state
    saved = load_checkpoint(path, run.device)
    if saved.get("fingerprint") != run.fingerprint:
        _note(result, run.run_dir, f"{CHECKPOINT} was made by other code or settings; training from scratch")
        return state
    if saved["epoch"] > epochs:
        raise ValueError(f"{path} holds {saved['epoch']} epochs, more than the {epochs} requested")
    rank, world_size = distributed_world()
    if saved.get("world_size", 1) != world_size:
        raise ValueError(
            f"{path} was trained in {saved.get('world_size', 1)} process(es); resume it with as many "
            f"(this run has {world_size}), or delete the run folder to train afresh"
        )
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None and saved.get("scheduler") is not None:
        scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    _set_rng_state(saved["rng"][rank], run.device)
    result.history = saved["history"]
    result.resumed_from_epoch = saved["epoch"]
    state.train_s = saved["train_s"]
    state.best_value, state.best_epoch = saved.get("best_value"), saved.get("best_epoch")
    state.start_epoch = saved["epoch"] + 1
    return state


def train_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    *,
    loss_fn: Callable[[torch.nn.Module, Any], Mapping[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    run: RunContext,
    amp: bool = True,
    grad_clip: float | None = None,
    scheduler: Any = None,
    scheduler_interval: str = "epoch",
    after_step: Callable[[torch.nn.Module], None] | None = None,
    bar: Any = None,
) -> tuple[dict[str, torch.Tensor], int]:
    """One pass over ``loader``: the summed losses (device tensors, read by the caller once) and the
    number of samples seen. ``model`` may be the DistributedDataParallel wrapper; ``after_step`` gets
    the model itself."""
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    model.train()
    sums: dict[str, torch.Tensor] = {}
    seen = 0
    for batch in loader:
        batch = to_device(batch, run.device, run.channels_last)
        with autocast_for(run.device, amp):
            losses = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if after_step is not None:
            with torch.no_grad():
                after_step(inner)
        if scheduler is not None and scheduler_interval == "step":
            scheduler.step()
        for name, value in losses.items():
            value = value.detach().float()
            sums[name] = sums[name] + value if name in sums else value
        seen += _batch_size(batch)
        if bar is not None:
            bar.update(1)
    return sums, seen


def evaluate_epoch(
    model: torch.nn.Module, evaluate: Callable[[torch.nn.Module], Mapping[str, float]], run: RunContext, amp: bool = True
) -> dict[str, float]:
    """``evaluate(model)`` in eval mode, without gradients, under the training's autocast."""
    model.eval()
    with torch.no_grad(), autocast_for(run.device, amp):
        scores = evaluate(model)
    model.train()
    return {f"val/{name}": float(value) for name, value in scores.items()}


def save_checkpoint(
    run: RunContext,
    *,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    history: list[dict[str, float]],
    state: _State,
) -> None:
    """Write the checkpoint of ``epoch`` atomically (rank 0; every process's generators are kept)."""
    rank, world_size = distributed_world()
    rng = _gather(_rng_state(run.device)) if world_size > 1 else [_rng_state(run.device)]
    if rank == 0:
        _atomic_save(
            {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict(),
                "rng": rng,
                "history": history,
                "train_s": state.train_s,
                "best_value": state.best_value,
                "best_epoch": state.best_epoch,
                "fingerprint": run.fingerprint,
                "world_size": world_size,
            },
            run.run_dir / CHECKPOINT,
        )
    _barrier()


def fit(
    model: torch.nn.Module,
    train_data: Dataset,
    *,
    run: RunContext,
    loss_fn: Callable[[torch.nn.Module, Any], Mapping[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int,
    evaluate: Callable[[torch.nn.Module], Mapping[str, float]] | None = None,
    monitor: str | None = None,
    monitor_mode: str = "max",
    restore_best: bool = True,
    scheduler: Any = None,
    scheduler_interval: str = "epoch",
    amp: bool = True,
    collate_fn: Callable | None = None,
    drop_last: bool = True,
    grad_clip: float | None = None,
    sample_weights: torch.Tensor | None = None,
    on_epoch_end: Iterable[Callable[[int, dict[str, float]], None]] = (),
    after_step: Callable[[torch.nn.Module], None] | None = None,
    find_unused_parameters: bool = False,
) -> FitResult:
    """Train ``model`` on ``train_data`` for ``epochs`` epochs, checkpointing into ``run.run_dir``.

    ``evaluate(model)`` (optional) runs after every epoch in eval mode without gradients; its values
    are logged as ``val/<name>``. With ``monitor`` (a key of ``evaluate``'s result) the best epoch's
    weights are kept in ``best.pt`` and, with ``restore_best``, loaded back at the end.

    ``sample_weights`` (one per training sample) makes each epoch draw ``len(train_data)`` samples
    with replacement in proportion to them, e.g. :func:`class_balanced_weights`.

    ``after_step(model)`` runs after every optimiser step, without gradients: e.g. the momentum
    update of a key encoder. Whatever it changes must live in the model's parameters or buffers, so
    the checkpoint carries it.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if len(train_data) < batch_size and drop_last:
        raise ValueError(f"the training set has {len(train_data)} samples, fewer than one batch of {batch_size}")
    if monitor_mode not in ("max", "min"):
        raise ValueError(f"monitor_mode must be 'max' or 'min', got {monitor_mode!r}")
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
    rank, world_size = distributed_world()
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {world_size} processes")

    run.run_dir.mkdir(parents=True, exist_ok=True)
    model.to(run.device)
    if run.channels_last:
        to_channels_last(model)
    if run.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        torch.cuda.reset_peak_memory_stats(run.device)
    use_amp = amp and amp_dtype(run.device) is not None
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype(run.device) == torch.float16)

    result = FitResult(history=[], run_dir=run.run_dir, world_size=world_size)
    state = resume(run, model, optimizer, scheduler, scaler, epochs, result)
    if world_size > 1 and state.start_epoch == 1:
        torch.manual_seed(_epoch_seed(run.seed, 0) + rank)  # each process its own augmentations
    trained = (
        _Distributed(model, find_unused_parameters=find_unused_parameters) if world_size > 1 else model
    )

    sampler = EpochShuffleSampler(len(train_data), run.seed, sample_weights, rank, world_size)
    loader_generator = torch.Generator()
    loader = make_loader(
        train_data,
        batch_size=batch_size // world_size,
        device=run.device,
        sampler=sampler,
        num_workers=run.num_workers,
        collate_fn=collate_fn,
        drop_last=drop_last,
        generator=loader_generator,
    )
    steps_per_epoch = len(loader)
    bar = None
    if _progress_enabled(run.progress) and state.start_epoch <= epochs and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=(epochs - state.start_epoch + 1) * steps_per_epoch, desc=run.desc, leave=False)

    interrupt_after = int(os.environ.get(INTERRUPT_AFTER_EPOCH, "0"))
    last_saved = state.start_epoch - 1
    try:
        for epoch in range(state.start_epoch, epochs + 1):
            sampler.set_epoch(epoch)
            loader_generator.manual_seed(_epoch_seed(run.seed, epoch) + 1)
            if run.device.type == "cuda":
                torch.cuda.synchronize(run.device)
            tic = time.perf_counter()
            sums, seen = train_epoch(
                trained, loader, loss_fn=loss_fn, optimizer=optimizer, scaler=scaler, run=run, amp=use_amp,
                grad_clip=grad_clip, scheduler=scheduler, scheduler_interval=scheduler_interval,
                after_step=after_step, bar=bar,
            )
            if run.device.type == "cuda":
                torch.cuda.synchronize(run.device)
            epoch_s = time.perf_counter() - tic
            state.train_s += epoch_s
            if scheduler is not None and scheduler_interval == "epoch":
                scheduler.step()

            record: dict[str, float] = {"epoch": epoch}
            for name, total in sums.items():  # the one read of the device per epoch
                if world_size > 1:
                    torch.distributed.all_reduce(total)
                    total = total / world_size
                record[f"train/{name}"] = total.item() / steps_per_epoch
            if not math.isfinite(record.get("train/loss", 0.0)):
                raise FloatingPointError(f"the training loss is {record['train/loss']} in epoch {epoch} ({run.run_dir})")
            record["lr"] = optimizer.param_groups[0]["lr"]
            record["epoch_s"] = epoch_s
            record["samples_per_s"] = seen * world_size / epoch_s if epoch_s > 0 else float("nan")
            if evaluate is not None:
                record.update(evaluate_epoch(model, evaluate, run, use_amp))
            record["peak_memory_mb"] = peak_memory_mb(run.device)

            if monitor is not None:
                key = monitor if monitor in record else f"val/{monitor}"
                if key not in record:
                    raise KeyError(f"monitor {monitor!r} is not among the logged values: {sorted(record)}")
                value = record[key]
                if state.best_value is None or (value > state.best_value if monitor_mode == "max" else value < state.best_value):
                    state.best_value, state.best_epoch = value, epoch
                    if rank == 0:
                        _atomic_save({"model": model.state_dict(), "epoch": epoch, "fingerprint": run.fingerprint}, run.run_dir / BEST)

            result.history.append(record)
            save_checkpoint(
                run, epoch=epoch, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                history=result.history, state=state,
            )
            last_saved = epoch
            result.epochs_trained_now += 1
            for callback in on_epoch_end:
                callback(epoch, record)
            if epoch == interrupt_after and epoch < epochs:
                raise KeyboardInterrupt(f"{INTERRUPT_AFTER_EPOCH}={interrupt_after}")
    except KeyboardInterrupt:
        print(f"Interrupted. Run again with the same run folder to resume after epoch {last_saved}: {run.run_dir}")
        raise
    finally:
        if bar is not None:
            bar.close()

    _barrier()
    if monitor is not None and restore_best and (run.run_dir / BEST).exists():
        model.load_state_dict(load_checkpoint(run.run_dir / BEST, run.device)["model"])
    result.train_s = state.train_s
    result.best_epoch, result.best_value = state.best_epoch, state.best_value
    speeds = [r["samples_per_s"] for r in result.history if math.isfinite(r.get("samples_per_s", float("nan")))]
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


# ---------------------------------------------------------------------------------------------
# Prediction over a whole dataset


_EVAL_LOADERS: "weakref.WeakKeyDictionary[Dataset, dict]" = weakref.WeakKeyDictionary()


def _eval_loader(data: Dataset, batch_size: int, device: torch.device, num_workers: int, collate_fn) -> DataLoader:
    """One loader per evaluation set (its persistent workers live as long as the dataset)."""
    key = (batch_size, device.type, num_workers, collate_fn)
    try:
        cached = _EVAL_LOADERS.setdefault(data, {})
    except TypeError:  # a dataset that cannot be weakly referenced: no reuse
        cached = {}
    if key not in cached:
        cached[key] = make_loader(data, batch_size=batch_size, device=device, num_workers=num_workers, collate_fn=collate_fn)
    return cached[key]


class _Shard(Dataset):
    def __init__(self, data: Dataset, start: int, stop: int):
        self.data, self.start, self.stop = data, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int):
        return self.data[self.start + index]


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
    Under several processes each takes a contiguous share of ``data`` and the shares are gathered,
    so every process gets the outputs of the whole set, in order.
    """
    rank, world_size = distributed_world()
    if len(data) == 0:
        raise ValueError("predict() got an empty dataset")
    if world_size > 1:
        share = math.ceil(len(data) / world_size)
        start, stop = min(rank * share, len(data)), min((rank + 1) * share, len(data))
        loader = make_loader(_Shard(data, start, stop), batch_size=batch_size, device=device, num_workers=num_workers, collate_fn=collate_fn)
    else:
        loader = _eval_loader(data, batch_size, device, num_workers, collate_fn)
    was_training = model.training
    model.eval()
    outputs: list[Any] = []
    with autocast_for(device, amp):
        for batch in loader:
            outputs.append(forward(model, to_device(batch, device, channels_last)))
    model.train(was_training)
    merged = _concatenate(outputs)
    if world_size > 1:
        merged = _concatenate([part for part in _gather(merged) if part is not None])
    return merged


def _concatenate(outputs: list[Any]) -> Any:
    if not outputs:
        return None
    if isinstance(outputs[0], Mapping):
        return {k: torch.cat([o[k].float().cpu() for o in outputs]) for k in outputs[0]}
    return torch.cat([o.float().cpu() for o in outputs])
