"""medlab: the package behind the medlab book (ten medical-image-analysis papers, re-implemented).

Notebooks import only the public names below and the modules ``medlab.data``, ``medlab.engine``,
``medlab.metrics``, ``medlab.results``, ``medlab.plots`` and ``medlab.papers.<chapter>``.
"""

__version__ = "0.1.0"

from medlab.runtime import (  # noqa: E402
    PROFILES,
    choose_device,
    environment_record,
    resolve_profile,
    seed_everything,
)

__all__ = [
    "PROFILES",
    "__version__",
    "choose_device",
    "environment_record",
    "resolve_profile",
    "seed_everything",
]
