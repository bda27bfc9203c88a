"""Time the feature build: a large synthetic book, and the small batches of a serving request.

Usage::

    python benchmarks/bench_features.py                      # 1,000,000 customers, data cached in /tmp
    python benchmarks/bench_features.py --customers 100000 --data-dir /tmp/books

The book is generated with :mod:`features.synthetic` and written as Parquet once per
(customers, seed), then reused. Reported: load time, build time (BTYD fit included), the time of
one request-sized build (1 and 100 customers with stored BTYD parameters) and the peak resident
memory of the process. Targets (design.md): 1M customers in <= 60 s and <= 8 GB; request-sized
builds well inside a 15 ms end-to-end p50.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

# Runs as a script from a checkout as well as with the package installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.build import build_features, fit_btyd  # noqa: E402
from features.config import FeatureConfig  # noqa: E402
from features.contract import Tables  # noqa: E402
from features.io import load_tables  # noqa: E402
from features.synthetic import generate, write_book  # noqa: E402


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def book_dir(data_dir: Path, n_customers: int, seed: int) -> Path:
    """Directory of the cached book, generated and written on first use."""
    path = data_dir / f"clvcast-features-{n_customers}-seed{seed}"
    if not (path / "transactions.parquet").exists():
        print(f"generating {n_customers:,} customers into {path} ...", flush=True)
        start = time.perf_counter()
        write_book(generate(n_customers, seed=seed), path)
        print(f"  generated and written in {time.perf_counter() - start:.1f} s", flush=True)
    return path


def subset(tables: Tables, customer_ids: pd.Index) -> Tables:
    """The rows of the given customers only, as a request would carry them."""

    def rows(frame: pd.DataFrame | None) -> pd.DataFrame | None:
        if frame is None:
            return None
        return frame[frame["customer_id"].isin(customer_ids)].reset_index(drop=True)

    return Tables(rows(tables.transactions), rows(tables.events), rows(tables.customers))


def time_small(
    tables: Tables, known: pd.Index, cutoff, config: FeatureConfig, btyd, sizes=(1, 100), repeats: int = 200
) -> dict:
    """Median and p95 milliseconds of build_features on request-sized batches of known customers."""
    rng = np.random.default_rng(0)
    # A few different batches per size, each timed many times, so one odd customer does not decide.
    chosen = {size: [known[rng.choice(len(known), size, replace=False)] for _ in range(5)] for size in sizes}
    pool = subset(tables, pd.Index(np.concatenate([ids for batch in chosen.values() for ids in batch])))
    out = {}
    for size, id_batches in chosen.items():
        batches = [subset(pool, ids) for ids in id_batches]
        for batch in batches:  # warm up
            build_features(batch, cutoff=cutoff, config=config, btyd=btyd)
        times = []
        for i in range(repeats):
            batch = batches[i % len(batches)]
            start = time.perf_counter()
            build_features(batch, cutoff=cutoff, config=config, btyd=btyd)
            times.append((time.perf_counter() - start) * 1000)
        rows = sum(len(b.transactions) + len(b.events) for b in batches) / len(batches)
        out[size] = (statistics.median(times), float(np.percentile(times, 95)), rows)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers in the book (default 1,000,000)")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp"), help="where books are cached (default /tmp)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cutoff", default="2024-06-30", help="feature cutoff (default 2024-06-30)")
    parser.add_argument("--skip-small", action="store_true", help="skip the request-sized timings")
    args = parser.parse_args(argv)

    config = FeatureConfig(covariates=("region", "age"), categorical_covariates=("region",))
    path = book_dir(args.data_dir, args.customers, args.seed)
    gc.collect()
    rss_before = peak_rss_gb()

    start = time.perf_counter()
    tables = load_tables(path).tables
    load_s = time.perf_counter() - start
    rows = {name: len(frame) for name, frame in vars(tables).items() if frame is not None}

    start = time.perf_counter()
    features = build_features(tables, cutoff=args.cutoff, config=config)
    build_s = time.perf_counter() - start
    peak = peak_rss_gb()

    # The same build with stored parameters (as serving does) isolates the cost of the BTYD fit.
    btyd = fit_btyd(tables, cutoff=args.cutoff, config=config)
    start = time.perf_counter()
    build_features(tables, cutoff=args.cutoff, config=config, btyd=btyd)
    stored_s = time.perf_counter() - start

    print(f"book: {path}")
    print("rows: " + ", ".join(f"{k} {v:,}" for k, v in rows.items()))
    print(f"cutoff {args.cutoff}: {len(features):,} customers x {features.shape[1]} features")
    print(f"load (features.io.load_tables, Parquet):   {load_s:7.1f} s")
    print(f"build_features, BTYD fitted:               {build_s:7.1f} s")
    print(f"build_features, stored BTYD parameters:    {stored_s:7.1f} s")
    print(f"load + build:                              {load_s + build_s:7.1f} s   (target <= 60 s)")
    print(f"peak RSS after load + build:               {peak:7.2f} GB  (target <= 8 GB; {rss_before:.2f} GB before load)")

    if not args.skip_small:
        known = features.index
        del features
        for size, (p50, p95, n_rows) in time_small(tables, known, args.cutoff, config, btyd).items():
            print(
                f"build_features, {size:>3} customer(s) (~{n_rows:.0f} rows), stored BTYD params: "
                f"p50 {p50:.2f} ms, p95 {p95:.2f} ms"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
