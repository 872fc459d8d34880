"""The template chapter's settings and profiles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medlab import runtime
from medlab.experiment import ChapterSettings, grid_field

SLUG = "template"
DATASETS = ("isic2018",)
METHODS = {"hard": "cross-entropy on one-hot targets", "smoothing": "label smoothing, Eq. (2)"}


@dataclass(frozen=True, kw_only=True)
class Settings(ChapterSettings):
    """Everything a run of the template depends on."""

    methods: tuple[str, ...] = grid_field(("hard", "smoothing"))
    image_size: int = 16
    n_train: int = 128
    n_test: int = 128
    epochs: int = 3
    batch_size: int = 16
    lr: float = 3e-3
    epsilon: float = 0.1  # eps of Eq. (1)
    width: int = 8
    data_seed: int = 2018


PROFILES: dict[str, Settings] = {
    "smoke": Settings(seeds=(0,), n_train=64, n_test=64, epochs=2, workers=1),
    "demo": Settings(),
    "paper": Settings(image_size=64, n_train=0, n_test=0, epochs=20, width=32),
}


def settings(profile: str | None = None, **overrides: Any) -> Settings:
    """The settings of ``profile`` with overrides applied (unknown names and bad values raise)."""
    config = runtime.settings_for(PROFILES, runtime.resolve_profile(profile), **overrides)
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {', '.join(METHODS)}")
    if config.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {config.epochs}")
    return config
