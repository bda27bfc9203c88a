"""Accuracy experiments on CDNOW: named config variants, scored on the pseudo-holdouts, logged to MLflow.

Usage::

    .venv/bin/python benchmarks/accuracy_experiments.py --list
    .venv/bin/python benchmarks/accuracy_experiments.py --data ../shared/data/cdnow --variants all
    .venv/bin/python benchmarks/accuracy_experiments.py --variants recipe,isotonic --windows PH-A
    .venv/bin/python benchmarks/accuracy_experiments.py --variants recipe --windows cdnow-26w

A variant is a set of overrides of :func:`training.config.load_config` (``horizon_days`` comes from
the window). Each (variant, window) pair runs :func:`training.pipeline.evaluate`, the code behind
``clvcast backtest``: train on the history up to the window's cutoff, score clvcast and BG/NBD +
Gamma-Gamma on the window. Each pair is one run of the MLflow experiment
``clvcast-accuracy-experiments`` (store: ``MLFLOW_TRACKING_URI``, else ``./mlruns``) with the
overrides and the whole config as params and the metrics of both models; the script then prints
one table.

Settings are chosen on the two pseudo-holdouts, whose windows end before the benchmark window
(see BENCHMARKS.md, "How the settings were chosen"):

- PH-A: cutoff 1997-07-31, horizon 91 days (training origins up to 1997-05-01);
- PH-B: cutoff 1997-09-30, horizon 91 days (training origins up to 1997-07-01).

``cdnow-26w`` (cutoff 1997-12-31, horizon 182 days) is the benchmark holdout itself. It is never in
the default windows: run it once, for the variant the pseudo-holdouts recommend.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXPERIMENT = "clvcast-accuracy-experiments"
WINDOWS = {
    "PH-A": ("1997-07-31", 91),
    "PH-B": ("1997-09-30", 91),
    "cdnow-26w": ("1997-12-31", 182),
}
DEFAULT_WINDOWS = ("PH-A", "PH-B")
METRICS = ("mae", "rmse", "gini", "spearman", "decile_mape", "churn_auc", "total_ratio")


def both_models(**params: Any) -> dict[str, Any]:
    """The same LightGBM hyperparameters for the churn and the spend model, as overrides."""
    return {f"training__{model}__{k}": v for model in ("churn_params", "spend_params") for k, v in params.items()}


@dataclass(frozen=True)
class Variant:
    """Overrides of the default config. A value may be a function of the window's horizon (days)."""

    note: str
    overrides: dict[str, Any | Callable[[int], Any]] = field(default_factory=dict)

    def resolve(self, horizon_days: int) -> dict[str, Any]:
        return {k: v(horizon_days) if callable(v) else v for k, v in self.overrides.items()}


VARIANTS: dict[str, Variant] = {
    # The defaults of training.config.TrainingConfig.
    "recipe": Variant("the recipe: BTYD offset, age-free features, 13 origins 14 d apart, 15 leaves x 200 rows"),
    # Variants of the experiment log of BENCHMARKS.md that are config overrides.
    "previous-defaults": Variant(
        "4 origins 30 d apart, all features, no offset, isotonic calibration, 31 leaves x 100 rows, 400 trees",
        {"n_cutoffs": 4, "step_days": 30, "exclude_features": [], "btyd_offset": False,
         "churn_calibration": "isotonic", **both_models(num_leaves=31, min_child_samples=100, num_boost_round=400)},
    ),
    "no-offset": Variant("recipe without the BTYD offset (age-free hurdle)", {"btyd_offset": False}),
    "all-features": Variant("recipe with the age-dependent features", {"exclude_features": []}),
    "step7": Variant("origins every 7 days over the same half year", {"n_cutoffs": 26, "step_days": 7}),
    "isotonic": Variant("isotonic churn calibration on the latest origin", {"churn_calibration": "isotonic"}),
    "tweedie-1.2": Variant("Tweedie power 1.2", {"tweedie_variance_power": 1.2}),
    "tweedie-1.8": Variant("Tweedie power 1.8", {"tweedie_variance_power": 1.8}),
    "leaves63": Variant("63 leaves x 100 rows, learning rate 0.1",
                        both_models(num_leaves=63, min_child_samples=100, learning_rate=0.1)),
    "generic-31": Variant("31 leaves x 100 rows x 400 trees",
                          both_models(num_leaves=31, min_child_samples=100, num_boost_round=400)),
    "churn-2000-trees": Variant("churn classifier may grow up to 2000 trees (it uses all 600 on both "
                                "pseudo-holdouts)", {"training__churn_params__num_boost_round": 2000}),
    "churn-200-trees": Variant("churn classifier capped at 200 trees", {"training__churn_params__num_boost_round": 200}),
    **{
        f"min-history-{days}": Variant(f"origins at least {days} days after the first purchase",
                                       {"min_history_days": days})
        for days in (14, 28, 42)
    },
    "step7-min-history-28": Variant("origins every 7 days, at least 28 days after the first purchase",
                                    {"n_cutoffs": 26, "step_days": 7, "min_history_days": 28}),
}


def run_one(tables, name: str, window: str) -> dict[str, Any]:
    """Evaluate one variant on one window; returns the overrides, config and metrics."""
    from training.config import load_config
    from training.pipeline import evaluate

    cutoff, horizon = WINDOWS[window]
    overrides = VARIANTS[name].resolve(horizon)
    config = load_config(horizon_days=horizon, **overrides)
    t0 = time.perf_counter()
    ev = evaluate(tables, cutoff=cutoff, config=config)
    total = float(ev.actual_spend.sum())
    metrics = {
        model: {**{k: ev.metrics[model][k] for k in METRICS if k != "total_ratio"},
                "total_ratio": ev.metrics[model]["total_predicted"] / total}
        for model in ("clvcast", "btyd")
    }
    return {
        "variant": name, "window": window, "cutoff": cutoff, "horizon_days": horizon, "overrides": overrides,
        "config": config.to_flat_dict(), "metrics": metrics, "total_actual": total,
        "training_rows": ev.n_training_rows, "origins": [str(o.date()) for o in ev.plan.origins],
        "best_iterations": ev.models.best_iterations_, "seconds": time.perf_counter() - t0,
    }


def log_to_mlflow(result: dict[str, Any]) -> str:
    """One MLflow run per (variant, window): params = overrides + window + whole config."""
    import mlflow

    from training.registry import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(EXPERIMENT)
    params = {
        "variant": result["variant"], "window": result["window"], "cutoff": result["cutoff"],
        "horizon_days": result["horizon_days"],
        **{f"override.{k}": json.dumps(v) for k, v in result["overrides"].items()},
        **{f"config.{k}": json.dumps(v) for k, v in result["config"].items()},
    }
    metrics = {f"{model}_{k}": v for model, values in result["metrics"].items() for k, v in values.items()}
    metrics.update({"training_rows": result["training_rows"], "seconds": result["seconds"],
                    **{f"best_iteration_{m}": n for m, n in result["best_iterations"].items()}})
    with mlflow.start_run(run_name=f"{result['variant']} @ {result['window']}") as run:
        mlflow.set_tags({"variant": result["variant"], "window": result["window"],
                         "note": VARIANTS[result["variant"]].note})
        items = list(params.items())
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per call
            mlflow.log_params(dict(items[start : start + 100]))
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        return run.info.run_id


def format_table(results: list[dict[str, Any]]) -> str:
    """Markdown table: MAE / Gini / Spearman / decile MAPE / churn AUC / total ratio per window."""
    windows = list(dict.fromkeys(r["window"] for r in results))

    def cell(m: dict[str, float]) -> str:
        return (f"{m['mae']:.2f} / {m['gini']:.3f} / {m['spearman']:.3f} / {m['decile_mape']:.3f} / "
                f"{m['churn_auc']:.3f} / {m['total_ratio']:.3f}")

    by_key = {(r["variant"], r["window"]): r for r in results}
    lines = ["MAE / Gini / Spearman / decile MAPE / churn AUC / total predicted ÷ actual", "",
             "| variant | " + " | ".join(windows) + " |", "| --- |" + " --- |" * len(windows)]
    baseline = {w: next(r for r in results if r["window"] == w)["metrics"]["btyd"] for w in windows}
    lines.append("| BG/NBD + Gamma-Gamma | " + " | ".join(cell(baseline[w]) for w in windows) + " |")
    for name in dict.fromkeys(r["variant"] for r in results):
        cells = [cell(by_key[name, w]["metrics"]["clvcast"]) if (name, w) in by_key else "–" for w in windows]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cdnow"))
    parser.add_argument("--variants", default="all", help="comma-separated names, or 'all' (see --list)")
    parser.add_argument("--windows", default=",".join(DEFAULT_WINDOWS),
                        help=f"comma-separated, of {', '.join(WINDOWS)}; default the pseudo-holdouts")
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the runs")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    if args.list:
        for name, variant in VARIANTS.items():
            shown = {k: getattr(v, "__name__", v) for k, v in variant.overrides.items()}
            print(f"{name:22s} {variant.note}\n{'':22s} {json.dumps(shown) if shown else '(defaults)'}")
        return 0
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    windows = args.windows.split(",")
    unknown = [n for n in names if n not in VARIANTS] + [w for w in windows if w not in WINDOWS]
    if unknown:
        parser.error(f"unknown variant(s) or window(s): {unknown}; see --list")

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from features.io import load_tables

    tables = load_tables(args.data).tables
    results = []
    for name in names:
        for window in windows:
            result = run_one(tables, name, window)
            if not args.no_mlflow:
                result["run_id"] = log_to_mlflow(result)
            m = result["metrics"]["clvcast"]
            print(f"{name} @ {window}: MAE {m['mae']:.2f}, churn AUC {m['churn_auc']:.3f}, "
                  f"total {m['total_ratio']:.3f} ({result['seconds']:.0f} s)", file=sys.stderr, flush=True)
            results.append(result)
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
