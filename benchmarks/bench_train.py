"""Training time on a large synthetic book, step by step.

Usage::

    .venv/bin/python benchmarks/bench_train.py --customers 1000000 [--log] [--json out.json]

Generates the book in memory (``features.synthetic.generate``), then runs the training pipeline's
``evaluate`` (training set over the rolling origins, both models, holdout scoring, baselines) and
prints the wall time of each step with the peak resident memory. With ``--log`` it runs ``train``
instead against a throwaway MLflow store, so logging and registering the models are timed too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_gb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", default="2021-01-01")
    parser.add_argument("--end", default="2024-12-31")
    parser.add_argument("--horizon-days", type=int, default=182)
    parser.add_argument("--threads", type=int, default=None, help="LightGBM threads (default: config)")
    parser.add_argument("--log", action="store_true", help="also log and register in a temporary MLflow store")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args(argv)
    # The training steps with their durations on stderr, as `clvcast train` shows them.
    logging.basicConfig(level=logging.INFO, format="[clvcast] %(message)s")

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from features.synthetic import generate
    from training.config import load_config
    from training.pipeline import evaluate, format_table, train

    config = load_config(horizon_days=args.horizon_days, num_threads=args.threads)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    book = generate(args.customers, seed=args.seed, start=args.start, end=args.end)
    timings["generate"] = time.perf_counter() - t0
    tables = book.tables
    print(
        f"book: {len(tables.customers):,} customers, {len(tables.transactions):,} transactions, "
        f"{0 if tables.events is None else len(tables.events):,} events ({timings['generate']:.1f} s)",
        file=sys.stderr,
    )

    t0 = time.perf_counter()
    if args.log:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
            result = train(tables, config=config)
            metrics, customers = result.metrics, result.customers
    else:
        ev = evaluate(tables, cutoff=None, config=config)
        metrics, customers = ev.metrics, ev.customers
        timings.update({f"evaluate.{k}": v for k, v in ev.seconds.items()})
        timings["training_rows"] = ev.n_training_rows
    timings["train_total"] = time.perf_counter() - t0
    timings["peak_rss_gb"] = _peak_gb()

    print(format_table(metrics))
    print(json.dumps({"customers": customers, **{k: round(v, 2) for k, v in timings.items()}}, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "timings": timings, "metrics": metrics}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
