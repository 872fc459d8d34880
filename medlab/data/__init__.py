"""Datasets: the registry, synthetic generators (:mod:`medlab.data.synth`) and real-data readers
(:mod:`medlab.data.formats`)."""

from medlab.data.registry import Entry, available, entry, load, register, splits_of
from medlab.data.splits import SPLITS

__all__ = ["SPLITS", "Entry", "available", "entry", "load", "register", "splits_of"]
