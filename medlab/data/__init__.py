"""Datasets: the registry, synthetic generators (:mod:`medlab.data.synth`) and real-data readers
(:mod:`medlab.data.formats`)."""

from medlab.data.registry import SPLITS, available, load, register, splits_of

__all__ = ["SPLITS", "available", "load", "register", "splits_of"]
