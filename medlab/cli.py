"""The ``medlab`` command: run, sweep, book, bench, data.

medlab run notebooks/01_ccl.py -p seeds 0,1,2 -p epochs 5         # one chapter, with parameters
medlab run ccl --profile paper -p data_dir /data/isic2018          # the paper profile on real data
medlab run c2l --profile paper --nproc 4 -p data_dir /data/cxr14   # train on 4 GPUs (torchrun), then the notebook
medlab sweep ccl --grid lambda_cc=0.5,1,2 --grid seeds=0,1,2       # a grid of executions, 2 at a time here
medlab sweep ccl --grid seeds=0,1,2 --executor slurm --partition gpu --gpus 1   # each point a Slurm job
medlab book                                                        # re-execute stale chapters, build the HTML
medlab bench ccl --profiles smoke demo                             # time a chapter per profile
medlab data list | medlab data check isic2018 /data/isic2018       # datasets; validate a real layout
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any, Sequence


def _parameters(pairs: Sequence[Sequence[str]] | None) -> dict[str, Any]:
    from medlab.notebooks import parse_value

    return {name: parse_value(value) for name, value in (pairs or [])}


def _cmd_run(args: argparse.Namespace) -> int:
    from medlab import notebooks
    from medlab.runtime import resolve_profile

    source = notebooks.find_chapter(args.chapter)
    profile = resolve_profile(args.profile)
    parameters = _parameters(args.parameter)
    if args.nproc is not None:
        code = _train_distributed(source, profile, parameters, args.nproc)
        if code != 0 or args.train_only:
            return code
        print("training done; executing the notebook, which reads the runs' records and checkpoints")
    output = Path(args.output) if args.output else notebooks.default_output(source, profile, parameters)
    print(f"running {source.name} at profile {profile} with {parameters or 'its default parameters'}")
    record = notebooks.execute(source, output, profile=profile, parameters=parameters, progress=args.progress)
    print(f"done in {record['wall_s']:.0f} s; executed notebook: {output}")
    return 0


def _train_distributed(source: Path, profile: str, parameters: dict[str, Any], nproc: int) -> int:
    """The chapter's grid under ``torchrun --standalone`` with ``nproc`` processes (see medlab.launch)."""
    import subprocess

    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "medlab.launch", str(source), "--profile", profile,
    ]
    for name, value in parameters.items():
        command += ["-p", name, value if isinstance(value, str) else json.dumps(value)]
    print("training:", " ".join(command[2:]).replace("torch.distributed.run", "torchrun"), flush=True)
    return subprocess.run(command).returncode


def _grid(items: Sequence[str]) -> list[dict[str, Any]]:
    from medlab.notebooks import parse_value

    axes: list[tuple[str, list[Any]]] = []
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name or not values:
            raise SystemExit(f"--grid {item!r}: expected name=value1,value2,...")
        axes.append((name, [parse_value(v) for v in values.split(",")]))
    return [dict(zip([a[0] for a in axes], combo)) for combo in itertools.product(*[a[1] for a in axes])]


def _cmd_sweep(args: argparse.Namespace) -> int:
    from medlab import notebooks, sweep
    from medlab.runtime import resolve_profile

    source = notebooks.find_chapter(args.chapter)
    profile = resolve_profile(args.profile)
    fixed = _parameters(args.parameter)
    points = [{**fixed, **point} for point in _grid(args.grid)]
    print(f"{len(points)} points of {source.name} at profile {profile}, executor {args.executor}")
    outcome = sweep.run(
        source, profile, points, executor=args.executor, parallel=args.parallel, partition=args.partition,
        gpus=args.gpus, time_min=args.time,
    )
    print(sweep.table(outcome))
    failed = sum(p.status == "failed" for p in outcome)
    print(f"{len(points) - failed} of {len(points)} points done or skipped; results records under results/{profile}/")
    return 1 if failed else 0


def _cmd_book(args: argparse.Namespace) -> int:
    from medlab import book, notebooks

    if args.dry_run:  # the chapters that would be re-executed, one name per line; nothing runs
        todo = notebooks.chapters() if args.force else book.stale(args.profile)
        for source in todo:
            print(source.stem)
        return 0

    html = book.build(profile=args.profile, force=args.force, execute=not args.no_execute)
    print(f"\nThe book is built. Open {html / 'index.html'}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from medlab import bench

    if args.loaders:  # the readers' item cache: decoding every epoch against reading the cache
        bench.loader_throughput(n_images=args.images, num_workers=args.workers)
        return 0
    rows = bench.run(args.chapters or None, args.profiles)
    over = [r for r in rows if r.get("within_budget") is False]
    return 1 if over and args.fail_over_budget else 0


def _counts(info: dict) -> str:
    for key in ("class_counts", "finding_counts", "grade_counts", "glaucoma_counts"):
        if key in info:
            return f"{key.replace('_', ' ')} {info[key]}"
    return "no counts"


def _cmd_data(args: argparse.Namespace) -> int:
    from medlab import data

    if args.action == "list":
        for name, description in data.available().items():
            print(f"{name:12s} {description}")
        print("\nWhere to get each real dataset and the layout medlab expects: data/README.md")
        return 0
    if not args.name or not args.path:
        raise SystemExit("usage: medlab data check NAME PATH")
    for split in data.splits_of(args.name):
        try:
            dataset = data.load(args.name, split, data_dir=args.path)
        except FileNotFoundError as error:
            print(f"{split:9s}: not available ({error})")
            continue
        if args.decode:
            for i in range(len(dataset)):
                dataset[i]
        print(
            f"{split:9s}: {len(dataset)} samples, "
            + _counts(dataset.info)
            + (" (all decoded)" if args.decode else "")
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medlab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add_parameter_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("chapter", help="chapter source, number or slug (notebooks/01_ccl.py, 1, ccl)")
        p.add_argument("--profile", help="smoke, demo or paper (default: $MEDLAB_PROFILE, else demo)")
        p.add_argument(
            "-p",
            "--parameter",
            nargs=2,
            action="append",
            metavar=("NAME", "VALUE"),
            help="a notebook parameter or chapter setting, e.g. -p seeds 0,1,2 -p data_dir /data/isic",
        )

    run = sub.add_parser("run", help="execute one chapter with papermill")
    add_parameter_options(run)
    run.add_argument("-o", "--output", help="executed notebook path (default: runs/notebooks/...)")
    run.add_argument("--progress", action="store_true", help="show progress bars")
    run.add_argument(
        "--nproc", type=int, help="train the grid first in this many processes under torchrun (one per GPU; gloo on a CPU)"
    )
    run.add_argument("--train-only", action="store_true", help="with --nproc: train, do not execute the notebook")
    run.set_defaults(func=_cmd_run)

    sweep = sub.add_parser("sweep", help="execute one chapter over a grid of parameters")
    add_parameter_options(sweep)
    sweep.add_argument(
        "--grid", action="append", required=True, metavar="NAME=V1,V2", help="a grid axis; repeat for more"
    )
    sweep.add_argument("--executor", choices=["local", "slurm"], default="local", help="where points run (submitit)")
    sweep.add_argument("--parallel", type=int, default=2, help="points running at once (Slurm: array parallelism)")
    sweep.add_argument("--partition", help="Slurm partition")
    sweep.add_argument("--gpus", type=int, default=0, help="GPUs per point")
    sweep.add_argument("--time", type=int, default=60, help="time limit per point, minutes")
    sweep.set_defaults(func=_cmd_sweep)

    book_p = sub.add_parser("book", help="re-execute stale chapters and build the HTML book into _build/html")
    book_p.add_argument(
        "--profile",
        default="demo",
        choices=["demo", "smoke"],
        help="demo (the published book) or smoke (a quick preview)",
    )
    book_p.add_argument("--force", action="store_true", help="re-execute every chapter")
    book_p.add_argument("--no-execute", action="store_true", help="build from the notebooks as they are")
    book_p.add_argument(
        "--dry-run", action="store_true", help="print the chapters that would be re-executed, one per line; run nothing"
    )
    book_p.set_defaults(func=_cmd_book)

    bench_p = sub.add_parser(
        "bench", help="time chapters at each profile on this device; write benchmark records"
    )
    bench_p.add_argument("chapters", nargs="*", help="chapters (default: all)")
    bench_p.add_argument(
        "--profiles", nargs="+", default=["smoke", "demo"], choices=["smoke", "demo", "paper"]
    )
    bench_p.add_argument(
        "--fail-over-budget", action="store_true", help="exit 1 if a chapter is over its budget"
    )
    bench_p.add_argument(
        "--loaders", action="store_true",
        help="measure the data loader instead: ISIC 2018 JPEGs (600x450) at 224 px, decoded every epoch vs cached",
    )
    bench_p.add_argument("--images", type=int, default=400, help="with --loaders: images in the generated fixture")
    bench_p.add_argument("--workers", type=int, default=2, help="with --loaders: DataLoader workers")
    bench_p.set_defaults(func=_cmd_bench)

    data_p = sub.add_parser("data", help="list datasets, or check a real dataset's layout")
    data_p.add_argument("action", choices=["list", "check"])
    data_p.add_argument("name", nargs="?")
    data_p.add_argument("path", nargs="?")
    data_p.add_argument("--decode", action="store_true", help="also decode every image (slow)")
    data_p.set_defaults(func=_cmd_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:
        print(f"medlab {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
