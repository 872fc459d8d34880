"""The ``medlab`` command: run, sweep, book, bench, data.

medlab run notebooks/01_ccl.py -p seeds 0,1,2 -p epochs 5         # one chapter, with parameters
medlab run ccl --profile paper -p data_dir /data/isic2018          # the paper profile on real data
medlab sweep ccl --grid lambda_cc=0.5,1,2 --grid seeds=0,1,2       # a grid of runs
medlab book                                                        # re-execute stale chapters, build the HTML
medlab bench ccl --profiles smoke demo                             # time a chapter per profile
medlab data list | medlab data check isic2018 /data/isic2018       # datasets; validate a real layout
"""

from __future__ import annotations

import argparse
import itertools
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
    output = Path(args.output) if args.output else notebooks.default_output(source, profile, parameters)
    print(f"running {source.name} at profile {profile} with {parameters or 'its default parameters'}")
    record = notebooks.execute(source, output, profile=profile, parameters=parameters, progress=args.progress)
    print(f"done in {record['wall_s']:.0f} s; executed notebook: {output}")
    return 0


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
    from medlab import notebooks
    from medlab.runtime import resolve_profile

    source = notebooks.find_chapter(args.chapter)
    profile = resolve_profile(args.profile)
    fixed = _parameters(args.parameter)
    points = _grid(args.grid)
    failures = 0
    for i, point in enumerate(points, 1):
        parameters = {**fixed, **point}
        output = notebooks.default_output(source, profile, parameters)
        print(f"[{i}/{len(points)}] {source.name} {profile} {point}")
        try:
            record = notebooks.execute(source, output, profile=profile, parameters=parameters)
            print(f"    done in {record['wall_s']:.0f} s -> {output}")
        except Exception as error:  # keep going: one failed point must not lose the others
            failures += 1
            print(
                f"    FAILED: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} (partial notebook: {output})"
            )
    print(
        f"{len(points) - failures} of {len(points)} runs finished; their results records are under results/{profile}/"
    )
    return 1 if failures else 0


def _cmd_book(args: argparse.Namespace) -> int:
    from medlab import book

    html = book.build(profile=args.profile, force=args.force, execute=not args.no_execute)
    print(f"\nThe book is built. Open {html / 'index.html'}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from medlab import bench

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
    run.set_defaults(func=_cmd_run)

    sweep = sub.add_parser("sweep", help="execute one chapter over a grid of parameters")
    add_parameter_options(sweep)
    sweep.add_argument(
        "--grid", action="append", required=True, metavar="NAME=V1,V2", help="a grid axis; repeat for more"
    )
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
