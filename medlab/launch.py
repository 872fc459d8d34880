"""Train a chapter's grid in several processes: the program ``torchrun`` starts once per process.

``medlab run CHAPTER --nproc N`` runs it as ``torchrun --standalone --nproc_per_node N -m medlab.launch
CHAPTER ...``; on several nodes, start the same command by hand with torchrun's ``--nnodes``,
``--node_rank`` and ``--rdzv_endpoint`` options. Every process joins the process group (NCCL on CUDA,
one GPU each; gloo on a CPU), runs the grid with the engine's DistributedDataParallel path, and rank 0
writes the records and checkpoints. The notebook then renders from them without training again.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping, Sequence


def split_parameters(parameters: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Notebook parameters as (settings overrides, data folders, device): ``*data_dir`` names are data
    folders, ``device`` the device, ``overrides`` is merged, everything else overrides a setting."""
    overrides: dict[str, Any] = {}
    data: dict[str, Any] = {}
    device = None
    for name, value in parameters.items():
        if name == "overrides":
            overrides.update(value or {})
        elif name.endswith("data_dir"):
            data[name] = value
        elif name == "device":
            device = value
        elif name != "profile":
            overrides[name] = value
    return overrides, data, device


def train_grid(chapter_name: str, profile: str | None, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Run one chapter's grid in this process (one of ``torchrun``'s) and return its records."""
    import torch.distributed as dist

    from medlab import chapter, experiment, notebooks
    from medlab.runtime import choose_device, init_distributed, local_device, resolve_profile

    module = chapter.load(notebooks.slug_of(notebooks.find_chapter(chapter_name)))
    profile = resolve_profile(profile)
    overrides, data, device = split_parameters(parameters)
    config = module.settings(profile, **overrides)
    device = local_device(choose_device(device))
    rank, world_size = init_distributed(device)
    try:
        records = experiment.run_grid(module, config, profile=profile, device=device, progress=False, **data)
        if rank == 0:
            print(f"{len(records)} runs of {module.SLUG} trained in {world_size} process(es); records under results/{profile}/{module.SLUG}/")
        return records
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    from medlab.notebooks import parse_value

    parser = argparse.ArgumentParser(prog="python -m medlab.launch", description=__doc__)
    parser.add_argument("chapter")
    parser.add_argument("--profile")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"))
    args = parser.parse_args(argv)
    parameters = {name: parse_value(value) for name, value in (args.parameter or [])}
    train_grid(args.chapter, args.profile, parameters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
