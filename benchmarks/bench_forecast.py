"""Backtest of the finance forecast (``forecast.csv``) with the real models.

Usage::

    .venv/bin/python benchmarks/bench_forecast.py [--customers 20000] [--seed 0] [--json out.json]

1. Generates a synthetic book (``features.synthetic.generate``).
2. Picks a cutoff 12 months before the end of the book and cuts the history there
   (``features.dates.history_until``): nothing after the cutoff is seen from here to step 4.
3. Trains the churn and spend models on that history (``training.pipeline.train``, holdout = the
   last window before the cutoff) in a throwaway MLflow store (or ``--tracking-uri``), scores every
   customer known at the cutoff (``serving.scoring.score_tables``) and computes the finance budget
   (``serving.finance.compute_budget``, written by ``serving.finance.outputs``) on the history up
   to the cutoff.
4. Compares ``forecast.csv`` with what the same customers actually spent in the 12 months after the
   cutoff, month by month over the forecast's own periods (net of refunds, as the models' spend).

The forecast is the revenue of the *current base*: customers acquired after the cutoff are not in
it, so the actual it is compared with is restricted to the customers known at the cutoff. The
revenue of the whole book (with the new customers) is printed beside it for context only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def actual_by_period(transactions: pd.DataFrame, customers: pd.Index, forecast: pd.DataFrame) -> pd.DataFrame:
    """Net revenue per forecast period: of the ``customers`` given, and of every customer.

    Periods are the forecast's own ``period_start`` .. ``period_end`` (both inclusive days).
    """
    ts = transactions["timestamp"]
    known = transactions["customer_id"].isin(customers)
    rows = []
    for _, f in forecast.iterrows():
        start = pd.Timestamp(f["period_start"])
        end = pd.Timestamp(f["period_end"]) + pd.Timedelta(days=1)
        inside = (ts >= start) & (ts < end)
        rows.append(
            {
                "month": str(f["month"]),
                "actual_base": float(transactions.loc[inside & known, "amount"].sum()),
                "actual_all": float(transactions.loc[inside, "amount"].sum()),
                "active_base": int(transactions.loc[inside & known & (transactions["amount"] >= 0), "customer_id"].nunique()),
            }
        )
    return pd.DataFrame(rows)


def oracle_by_period(truth: pd.DataFrame, customers: pd.Index, cutoff: pd.Timestamp, forecast: pd.DataFrame) -> np.ndarray:
    """Expected net revenue per forecast period given the latent truth (``oracle_expected_spend``).

    The best forecast any model could make: it knows who is still alive at the cutoff, every rate
    and the seasonality, but not the future draws. Periods as in :func:`actual_by_period`.
    """
    from features.synthetic import oracle_expected_spend

    cumulative = [0.0]
    for end in pd.to_datetime(forecast["period_end"]):
        days = int((end - cutoff).days)
        spend = oracle_expected_spend(truth, cutoff=cutoff, horizon_days=days)
        cumulative.append(float(spend.reindex(customers).fillna(0.0).sum()))
    return np.diff(cumulative)


def compare(forecast: pd.DataFrame, actual: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per-month table and headline figures of forecast vs actual (the base known at the cutoff)."""
    t = forecast[
        ["month", "period_start", "period_end", "expected_revenue", "revenue_low", "revenue_high",
         "cumulative_revenue", "cumulative_revenue_low", "cumulative_revenue_high", "expected_active_customers"]
    ].merge(actual, on="month")
    t["error"] = t["expected_revenue"] - t["actual_base"]
    t["ape"] = (t["error"].abs() / t["actual_base"]).where(t["actual_base"] != 0)
    t["inside"] = (t["actual_base"] >= t["revenue_low"]) & (t["actual_base"] <= t["revenue_high"])
    last = t.iloc[-1]
    total_actual = float(t["actual_base"].sum())
    summary = {
        "months": int(len(t)),
        "total_forecast": float(t["expected_revenue"].sum()),
        "total_low": float(last["cumulative_revenue_low"]),
        "total_high": float(last["cumulative_revenue_high"]),
        "total_actual_base": total_actual,
        "total_actual_all_customers": float(t["actual_all"].sum()),
        "total_error": float(t["expected_revenue"].sum() - total_actual),
        "total_error_pct": float((t["expected_revenue"].sum() - total_actual) / total_actual * 100) if total_actual else None,
        "total_covered": bool(last["cumulative_revenue_low"] <= total_actual <= last["cumulative_revenue_high"]),
        "monthly_mape_pct": float(t["ape"].mean() * 100),
        "monthly_mae": float(t["error"].abs().mean()),
        "months_inside_band": int(t["inside"].sum()),
    }
    if "oracle" in t.columns:
        summary["total_oracle"] = float(t["oracle"].sum())
        summary["oracle_monthly_mape_pct"] = float(((t["oracle"] - t["actual_base"]).abs() / t["actual_base"]).mean() * 100)
    return t, summary


def by_half(t: pd.DataFrame, months_per_horizon: float) -> list[str]:
    """Forecast, oracle and actual summed over each horizon of the forecast (first H days, then the rest)."""
    first = np.arange(len(t)) < round(months_per_horizon)
    lines = []
    for name, rows in (("months 1-%d" % round(months_per_horizon), first), ("months %d-%d" % (round(months_per_horizon) + 1, len(t)), ~first)):
        part = t.loc[rows]
        if part.empty:
            continue
        a = part["actual_base"].sum()
        line = f"{name}: forecast {part['expected_revenue'].sum():,.0f} ({(part['expected_revenue'].sum() / a - 1) * 100:+.1f}%)"
        if "oracle" in part.columns:
            line += f", oracle {part['oracle'].sum():,.0f} ({(part['oracle'].sum() / a - 1) * 100:+.1f}%)"
        lines.append(line + f", actual {a:,.0f}")
    return lines


def format_report(t: pd.DataFrame, s: dict, header: list[str], halves: list[str] = ()) -> str:
    lines = list(header)
    lines.append("")
    lines.append(
        f"{'month':>7}  {'period':<23}  {'forecast':>10}  {'80% band':>21}  {'actual':>10}  "
        f"{'error':>9}  {'APE':>6}  {'in band':>7}  {'oracle':>10}"
    )
    for _, r in t.iterrows():
        band = f"{r['revenue_low']:,.0f} .. {r['revenue_high']:,.0f}"
        lines.append(
            f"{str(r['month']):>7}  {str(r['period_start'])} .. {str(r['period_end'])}  "
            f"{r['expected_revenue']:>10,.0f}  {band:>21}  {r['actual_base']:>10,.0f}  "
            f"{r['error']:>+9,.0f}  {r['ape'] * 100:>5.1f}%  {'yes' if r['inside'] else 'NO':>7}  "
            f"{r.get('oracle', np.nan):>10,.0f}"
        )
    lines.append("")
    lines.append(
        f"12-month revenue of the base known at the cutoff: forecast {s['total_forecast']:,.0f} "
        f"(80% interval {s['total_low']:,.0f} .. {s['total_high']:,.0f}), actual {s['total_actual_base']:,.0f}, "
        f"error {s['total_error']:+,.0f} ({s['total_error_pct']:+.1f}%): "
        f"{'covered' if s['total_covered'] else 'NOT covered'} by the interval"
    )
    lines.append(
        f"monthly: MAPE {s['monthly_mape_pct']:.1f}%, MAE {s['monthly_mae']:,.0f}; "
        f"{s['months_inside_band']} of {s['months']} months inside their 80% band"
    )
    if "total_oracle" in s:
        lines.append(
            f"oracle (latent truth: who is alive, rates, seasonality): 12-month {s['total_oracle']:,.0f}, "
            f"monthly MAPE {s['oracle_monthly_mape_pct']:.1f}%"
        )
    lines.extend(halves)
    lines.append(
        f"(whole book incl. customers acquired after the cutoff, not forecast: {s['total_actual_all_customers']:,.0f})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", default="2021-01-01")
    parser.add_argument("--end", default="2024-12-31")
    parser.add_argument("--months", type=int, default=12, help="cutoff this many forecast months before the end")
    parser.add_argument("--horizon-days", type=int, default=None, help="label horizon (default: config)")
    parser.add_argument("--config", default=None, help="a clvcast config file (YAML/JSON)")
    parser.add_argument("--common-cv", type=float, default=None, help="budget's base-wide CV (default: budget's)")
    parser.add_argument("--simulations", type=int, default=None, help="budget's n_simulations (default: budget's)")
    parser.add_argument(
        "--tracking-uri", default=None,
        help="MLflow store to log the training run in (default: a temporary sqlite store); the run's "
        "models are used directly and the champion alias there is not moved",
    )
    parser.add_argument("--out", default=None, help="keep the budget outputs here (default: temporary)")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args(argv)
    # The training steps with their durations on stderr, as `clvcast train` shows them.
    logging.basicConfig(level=logging.INFO, format="[clvcast] %(message)s")

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    with tempfile.TemporaryDirectory(prefix="bench-forecast-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri or f"sqlite:///{tmp}/mlflow.db"
        return _run(args, Path(tmp))


def _run(args, tmp: Path) -> int:
    from features.synthetic import generate
    from serving import clv as C
    from serving.finance import BudgetSettings, compute_budget
    from serving.finance.outputs import REPORT_NAME, write_budget, write_report
    from serving.scoring import score_tables
    from training import registry
    from training.config import load_config
    from features.dates import history_until
    from training.pipeline import train

    overrides = {"horizon_days": args.horizon_days} if args.horizon_days else {}
    config = load_config(args.config, **overrides)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    book = generate(args.customers, seed=args.seed, start=args.start, end=args.end)
    timings["generate"] = time.perf_counter() - t0
    full = book.tables
    end = pd.Timestamp(args.end).normalize()
    # The forecast's calendar months end on the book's last day's month end: the cutoff is the last
    # day of the month ``args.months`` calendar months before it (no partial first month).
    cutoff = (end.to_period("M") - args.months).to_timestamp(how="end").normalize()
    history = history_until(full, cutoff)
    _log(
        f"book: {len(full.customers):,} customers, {len(full.transactions):,} transactions, "
        f"{args.start} .. {args.end}; cutoff {cutoff.date()}: {len(history.transactions):,} transactions "
        f"before it ({timings['generate']:.1f} s)"
    )

    t0 = time.perf_counter()
    in_temp_store = args.tracking_uri is None
    result = train(history, config=config, promote="auto" if in_temp_store else "never")
    timings["train"] = time.perf_counter() - t0
    if in_temp_store:
        champion = registry.load_champion()  # exactly what `clvcast score` would load
        if champion.run_id != result.run_id:
            raise RuntimeError(f"the champion of the temporary store is run {champion.run_id}, not {result.run_id}")
    else:
        # Do not move the alias of a shared store: use this run's models and serving metadata.
        serving = registry._load_serving(registry._client(), result.run_id, registry.tracking_uri())
        champion = registry.Champion(
            models=result.models,
            churn_version=result.churn_version,
            spend_version=result.spend_version,
            run_id=result.run_id,
            serving=serving,
            tracking_uri=registry.tracking_uri(),
        )

    t0 = time.perf_counter()
    scores = score_tables(history, as_of=cutoff, champion=champion, clv=config.clv, top_drivers=0)
    timings["score"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    budget_kwargs = {}
    if args.common_cv is not None:
        budget_kwargs["common_cv"] = args.common_cv
    if args.simulations is not None:
        budget_kwargs["n_simulations"] = args.simulations
    out_dir = Path(args.out) if args.out else tmp / "budget"
    res = compute_budget(
        history, scores, decisions=config.clv, settings=BudgetSettings(forecast_months=args.months, **budget_kwargs)
    )
    paths = write_budget(res, out_dir)
    write_report(res, out_dir / REPORT_NAME)
    timings["budget"] = time.perf_counter() - t0
    forecast = pd.read_csv(paths["forecast"])

    base = pd.Index(scores.frame["customer_id"])
    actual = actual_by_period(full.transactions, base, forecast)
    actual["oracle"] = oracle_by_period(book.truth, base, cutoff, forecast)
    table, summary = compare(forecast, actual)
    settings = res.summary["settings"]
    header = [
        f"forecast backtest: {args.customers:,} customers (seed {args.seed}), book {args.start} .. {args.end}, "
        f"cutoff {cutoff.date()}",
        f"models: run {result.run_id}, horizon {champion.horizon_days} days, holdout cutoff {result.cutoff}; "
        f"holdout expected-spend MAE {result.metrics['clvcast']['mae']:.2f}, "
        f"churn AUC {result.metrics['clvcast']['churn_auc']:.3f}, total predicted "
        f"{result.metrics['clvcast']['total_predicted']:,.0f} vs actual {result.metrics['clvcast'].get('total_actual', float('nan')):,.0f}",
        f"base at the cutoff: {len(scores.frame):,} scored customers; budget: {settings['n_simulations']} simulations, "
        f"spend_cv {settings['spend_cv']}, common_cv {settings['common_cv']}",
        "forecast: later horizons by "
        + ("BG/NBD decay" if res.summary.get("forecast_decay") == "bgnbd" else "retention r^k")
        + "; seasonality index Jan..Dec "
        + " ".join(f"{v:.2f}" for v in res.summary.get("forecast_seasonality", [1.0] * 12)),
        "timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()),
    ]
    halves = by_half(table, C.months_per_horizon(champion.horizon_days))
    print(format_report(table, summary, header, halves))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "args": vars(args),
            "cutoff": str(cutoff.date()),
            "customers_scored": int(len(scores.frame)),
            "settings": settings,
            "timings": timings,
            "summary": summary,
            "months": json.loads(table.to_json(orient="records", date_format="iso")),
        }
        Path(args.json_out).write_text(json.dumps(payload, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
