"""Run-time choices shared by every chapter: profile, device, seeding, settings and provenance.

The profile contract (see the "running this book" page):

* ``MEDLAB_PROFILE`` in the environment sets the default profile (so nbmake, papermill and a plain
  "Run all" execute the same code); the notebook's ``profile`` parameter overrides it.
* ``smoke`` is tiny synthetic data for CI, ``demo`` is the teaching-size run shown in the book, and
  ``paper`` uses the real dataset with the paper's settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import random
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

PROFILES = ("smoke", "demo", "paper")
PROFILE_BUDGET_S = {"smoke": 60.0, "demo": 900.0, "paper": None}
"""Wall-time budget per chapter on 2 CPU cores (``None``: no budget, it needs a GPU)."""

PACKAGE_ROOT = Path(__file__).resolve().parent


def resolve_profile(profile: str | None = None) -> str:
    """The profile to run: ``profile`` if given, else ``$MEDLAB_PROFILE``, else ``demo``."""
    chosen = profile if profile is not None else os.environ.get("MEDLAB_PROFILE", "demo")
    chosen = str(chosen).strip().lower()
    if chosen not in PROFILES:
        source = "the profile parameter" if profile is not None else "$MEDLAB_PROFILE"
        raise ValueError(f"unknown profile {chosen!r} (from {source}); expected one of {', '.join(PROFILES)}")
    return chosen


def choose_device(preference: str | torch.device | None = None) -> torch.device:
    """cuda > mps > cpu, unless ``preference`` (or ``$MEDLAB_DEVICE``) names one.

    A named device that is not available raises, rather than silently training elsewhere.
    """
    wanted = preference if preference is not None else os.environ.get("MEDLAB_DEVICE") or "auto"
    if isinstance(wanted, torch.device):
        wanted = str(wanted)
    wanted = wanted.strip().lower()
    if wanted == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = wanted.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {wanted!r} was requested but torch.cuda.is_available() is False")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"device {wanted!r} was requested but MPS is not available")
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {wanted!r}; expected auto, cpu, cuda[:N] or mps")
    return torch.device(wanted)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for training on ``device``: bf16 on CUDA devices of compute capability 8.0
    or more (Ampere, Hopper, ...), fp16 below (a T4 or V100: bf16 there is emulated and slow; fp16
    needs the gradient scaler the engine adds), and ``None`` (no mixed precision) off CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, _ = torch.cuda.get_device_capability(index)
    return torch.bfloat16 if major >= 8 else torch.float16


def distributed_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` unless a process group is initialised
    (under ``torchrun``, see :func:`init_distributed`)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...): NCCL on CUDA (one GPU per process, chosen by
    ``LOCAL_RANK``), gloo on a CPU. Without those variables it does nothing. Returns ``(rank, world_size)``."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return distributed_world()
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return distributed_world()


def local_device(device: torch.device) -> torch.device:
    """The device of this process: under ``torchrun`` on CUDA, the GPU of its ``LOCAL_RANK``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def parse_seeds(value: Any) -> list[int]:
    """Seeds from a list, an int, or a string such as ``"0,1,2"`` (as typed on a command line)."""
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").strip("[]()").split(",") if p]
        try:
            return [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"seeds {value!r}: expected integers separated by commas, e.g. 0,1,2") from None
    if isinstance(value, int):
        return [value]
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"seeds {value!r}: expected a list of integers or a string like '0,1,2'") from None


def _coerce(name: str, value: Any, current: Any) -> Any:
    """Convert a command-line value (often a string) to the type of the setting it replaces."""
    if name == "seeds":
        return parse_seeds(value)
    if isinstance(current, bool):
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError(f"setting {name}={value!r}: expected true or false")
        return bool(value)
    if isinstance(current, (list, tuple)) and isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
        if current and isinstance(current[0], (int, float)) and not isinstance(current[0], bool):
            return type(current)(type(current[0])(v) for v in items)
        return type(current)(items)
    if isinstance(current, float) and isinstance(value, (int, str)):
        return float(value)
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, str):
        return int(value)
    return value


def settings_for(profiles: dict[str, Any], profile: str, **overrides: Any) -> Any:
    """The settings dataclass of ``profile`` with the non-``None`` ``overrides`` applied.

    ``profiles`` maps each profile name to a settings dataclass (defined in the chapter's module).
    Unknown override names raise with the list of valid ones.
    """
    profile = resolve_profile(profile)
    base = profiles[profile]
    fields = {f.name for f in dataclasses.fields(base)}
    changes = {}
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in fields:
            raise ValueError(f"unknown setting {name!r}; the settings are: {', '.join(sorted(fields))}")
        changes[name] = _coerce(name, value, getattr(base, name))
    return dataclasses.replace(base, **changes)


def stable_hash(obj: Any, length: int = 12) -> str:
    """A short hash of a JSON-like object that does not change between processes."""
    import json

    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def code_fingerprint() -> str:
    """A hash of the medlab package's source: a checkpoint made by other code is not resumed."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def project_root(start: Path | None = None) -> Path:
    """The book's checkout (the folder holding ``_toc.yml`` and ``medlab/``), else the current folder.

    Notebooks run with their own folder as working directory; results and runs still land at the
    top of the checkout. Outside a checkout (for example a pip install on Colab) it is the working folder.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file() and (folder / "medlab").is_dir():
            return folder
    return here


def git_commit(root: Path | None = None) -> dict[str, Any] | None:
    """The checkout's commit and whether its code has uncommitted changes; ``None`` outside git."""
    root = root or project_root()
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        # outputs (results records, executed notebooks) do not make the code dirty
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results", ":(exclude)*.ipynb"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"commit": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def device_description(device: torch.device) -> dict[str, Any]:
    """What the device is, in words a reader can compare across runs."""
    info: dict[str, Any] = {"type": device.type}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(name=props.name, memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    elif device.type == "cpu":
        info.update(
            name=platform.processor() or platform.machine(),
            threads=torch.get_num_threads(),
            cores=os.cpu_count(),
        )
    else:
        info.update(name=device.type)
    return info


def environment_record(device: torch.device | None = None) -> dict[str, Any]:
    """Versions, device and commit: the provenance stored with every results record."""
    from medlab import __version__

    packages = {
        name: _version(name)
        for name in (
            "torch",
            "torchvision",
            "torchmetrics",
            "numpy",
            "scipy",
            "scikit-learn",
            "pandas",
            "nibabel",
        )
    }
    return {
        "medlab": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "packages": {k: v for k, v in packages.items() if v is not None},
        "device": device_description(device or choose_device()),
        "git": git_commit(),
        "code_fingerprint": code_fingerprint(),
    }

