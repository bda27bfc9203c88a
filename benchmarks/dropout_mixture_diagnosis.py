"""Which spread of the dropout rates lengthens the lifetime tail? bench_lifetime's protocol on altered books.

Usage (development seeds only; a diagnosis, no target is measured on these books)::

    .venv/bin/python benchmarks/dropout_mixture_diagnosis.py --seed 3 --book default|no-age|no-channel|one-gamma
        [--customers 120000] --work DIR

Runs ``bench_lifetime.synthetic`` (generate, ``clvcast train`` at 2019-06-30, ``clvcast score`` at
2019-12-31, the horizons and lifetime against what the customers spent) on a retail book whose
generator configuration is changed only in the dropout rate's effects:

- ``default``: the defaults (a gamma across customers times the channel's and the age's effects);
- ``no-age``: ``age_dropout_effect = 0``;
- ``no-channel``: every channel's ``dropout_effect = 1``;
- ``one-gamma``: both, so that the dropout rate is one gamma, the mixing distribution of the
  dropout process clvcast fits (:mod:`features.btyd.lifetime`).

The generator's defaults, and every book a target is measured on, are unchanged: this only tells
which part of the book the fitted tail does not follow (BENCHMARKS.md, "Books of 120,000 customers").
Each book gets its own directory under ``DIR`` (``DIR/BOOK``): ``clvcast train`` promotes, so a
store shared by two books would score the second with the first one's champion.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_lifetime as B  # noqa: E402

from features.synthetic import write_book  # noqa: E402
from features.synthetic.retail import SyntheticConfig, generate  # noqa: E402


def config(book: str) -> SyntheticConfig:
    """The generator's configuration of ``book`` (module docstring)."""
    cfg = SyntheticConfig()
    if book in ("no-age", "one-gamma"):
        cfg = dataclasses.replace(cfg, age_dropout_effect=0.0)
    if book in ("no-channel", "one-gamma"):
        cfg = dataclasses.replace(cfg, channels=tuple(dataclasses.replace(c, dropout_effect=1.0) for c in cfg.channels))
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--book", choices=("default", "no-age", "no-channel", "one-gamma"), required=True)
    parser.add_argument("--customers", type=int, default=120_000)
    parser.add_argument("--work", required=True)
    args = parser.parse_args(argv)
    if args.seed in (0, 1):
        parser.error("seeds 0 and 1 are the benchmark's: diagnose on other books")
    work = Path(args.work) / args.book
    if work.exists() and any(work.iterdir()):
        parser.error(f"{work} is not empty: each book needs a fresh store (module docstring)")
    work.mkdir(parents=True, exist_ok=True)
    book = generate(args.customers, seed=args.seed, start=B.START, end=B.END, config=config(args.book))
    write_book(book, work / f"book-{args.seed}")
    result = B.synthetic(args.seed, work, customers=args.customers, written=True)
    print(f"## Seed {args.seed}, book {args.book} ({args.customers:,} customers)\n")
    print(B._table_synthetic([result]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
