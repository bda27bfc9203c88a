"""CDNOW's classic window: clvcast's and Pareto/NBD + Gamma-Gamma's MAE, each also at the other's total.

Usage::

    .venv/bin/python benchmarks/cdnow_mae_at_equal_totals.py [--cdnow ../shared/data/cdnow]
        [--window classic|PH-91|PH-91x3|PH-121x2] [--blends 0.25,0.5,0.75]

Most of CDNOW's customers buy nothing in the 39 weeks after 1997-09-30, so the MAE of a mean
forecast falls as the forecast shrinks: a lower total wins on MAE whatever the allocation. This
script runs ``clvcast backtest``'s evaluation (:func:`training.pipeline.evaluate`, cutoff
1997-09-30, 273 days) once and prints both models' MAE and total, then each one's MAE with its
forecasts scaled to the other's total, which compares how the two allocate the same amount over
the customers. It reports on the benchmark window and chooses nothing.

``--window`` runs a pseudo-holdout of :mod:`lifetime_experiments` instead (they end before the
classic window), and ``--blends`` adds the mixtures w × clvcast + (1 − w) × Pareto/NBD, each at its
own total and at clvcast's: whether two allocations that err differently do better together.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lifetime_experiments import CDNOW_WINDOWS, cdnow_window  # noqa: E402  (the pseudo-holdouts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cdnow", default=str(ROOT.parent / "shared" / "data" / "cdnow"))
    parser.add_argument("--window", default="classic", choices=("classic", *CDNOW_WINDOWS))
    parser.add_argument("--blends", default="", help="weights w of clvcast's forecast, comma-separated")
    args = parser.parse_args(argv)
    blends = [float(w) for w in args.blends.split(",") if w]
    if any(not 0 <= w <= 1 for w in blends):
        parser.error(f"--blends: rule 'weights in [0, 1]': got {args.blends}")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from features.io import load_tables
    from training.config import load_config
    from training.pipeline import evaluate

    tables = load_tables(args.cdnow).tables
    if args.window == "classic":
        cutoff, shape = "1997-09-30", {"horizon_days": 273}
    else:
        cutoff, shape = cdnow_window(args.window)
    ev = evaluate(tables, cutoff=cutoff, config=load_config(**shape))
    actual = ev.actual_spend
    ours = ev.predictions["clvcast"]["expected_spend"].to_numpy(float)
    pareto = ev.predictions["pareto"]["expected_spend"].to_numpy(float)

    def mae(forecast: np.ndarray) -> float:
        return float(np.abs(forecast - actual).mean())

    print(f"$ python benchmarks/cdnow_mae_at_equal_totals.py --cdnow {args.cdnow} --window {args.window}" + (f" --blends {args.blends}" if blends else ""))
    print(f"window {args.window}: cutoff {cutoff}, {shape}; customers {len(actual):,}; actual total {actual.sum():,.0f}")
    print("| forecast | MAE | total ÷ actual | MAE at the other's total |\n| --- | --- | --- | --- |")
    print(f"| clvcast | {mae(ours):.2f} | {ours.sum() / actual.sum():.3f} | {mae(ours * pareto.sum() / ours.sum()):.2f} |")
    print(f"| Pareto/NBD + Gamma-Gamma | {mae(pareto):.2f} | {pareto.sum() / actual.sum():.3f} | {mae(pareto * ours.sum() / pareto.sum()):.2f} |")
    for w in blends:
        mix = w * ours + (1 - w) * pareto
        print(f"| {w:g} × clvcast + {1 - w:g} × Pareto/NBD | {mae(mix):.2f} | {mix.sum() / actual.sum():.3f} | {mae(mix * ours.sum() / mix.sum()):.2f} (clvcast's) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
