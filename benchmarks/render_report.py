"""Render the finance report in headless Chromium to a PNG, to check that the page and its charts draw.

Usage::

    python benchmarks/render_report.py                       # synthetic book -> budget -> report -> PNG
    python benchmarks/render_report.py --report out/report.html --png report.png

Without ``--report`` it builds a synthetic book (``features.synthetic``), scores it as of one year
before the book's end with the generator's own latent parameters instead of trained models (so it
needs no MLflow; the BTYD parameters of the scoring run are fitted on the history as training
would), writes the budget outputs, and prints a backtest of the 12-month forecast against the
revenue the book actually recorded after the scoring date. Needs Debian's ``chromium`` package
(``apt-get install -y chromium``) for the PNG; the rest runs without it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.config import FeatureConfig
from features.families import btyd
from features.history import prepare_history
from features.synthetic import generate, oracle_expected_spend
from serving import clv as C
from serving import segments as SG
from serving.finance import compute_budget
from serving.finance.outputs import REPORT_NAME, write_budget, write_report
from serving.scores import Scores, ScoringRun
from training.config import ClvConfig

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "headless_shell")


def find_chromium() -> str | None:
    """Path of a Chromium binary on PATH, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def render(html_path: Path, png_path: Path, *, width: int = 1200, height: int = 7000, timeout: float = 120) -> Path:
    """Screenshot ``html_path`` with headless Chromium into ``png_path``.

    Network access is off (the page must be self-contained); the window height should cover the
    whole page because ``--screenshot`` captures the window only.
    """
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium binary on PATH (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="clvcast-chromium-") as profile:
        cmd = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={png_path.resolve()}",
            f"--window-size={width},{height}",
            html_path.resolve().as_uri(),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)
    if not png_path.exists() or png_path.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot to {png_path}")
    return png_path


def oracle_scores(book, *, as_of: pd.Timestamp, horizon_days: int, clv: ClvConfig) -> Scores:
    """Scores computed from the generator's latent parameters instead of models.

    p = P(no purchase in H): 1 for customers already gone; for a live customer with purchase rate λ
    and dropout rate μ (exponential lifetime T), E[exp(−λ min(T, H))]. s = oracle expected spend /
    (1 − p). Seasonality is ignored in p, which is enough for a rendering check and a backtest of
    the forecast arithmetic. The run's BTYD parameters are fitted on the history up to ``as_of``
    with the default feature settings, as training fits them.
    """

    truth = book.truth
    spend = oracle_expected_spend(truth, cutoff=as_of, horizon_days=horizon_days)
    known = truth.loc[spend.index]
    t0 = as_of + pd.Timedelta(days=1)
    alive = (known["dropout_at"] > t0).to_numpy()
    lam = known["purchase_rate_per_day"].to_numpy()
    mu = known["dropout_rate_per_day"].to_numpy()
    a = (lam + mu) * horizon_days
    p_live = mu / (lam + mu) * -np.expm1(-a) + np.exp(-a)
    p = np.where(alive, p_live, 1.0)
    s = np.where(p < 1, spend.to_numpy() / np.where(p < 1, 1 - p, 1.0), 0.0)

    tx = book.tables.transactions
    tx = tx[tx["timestamp"] < t0]
    day = tx["timestamp"].dt.normalize()
    per_day = tx.assign(day=day).groupby(["customer_id", "day"])["amount"].sum().reset_index()
    g = per_day.groupby("customer_id")
    rfm = pd.DataFrame(
        {
            "recency_days": (as_of - g["day"].max()).dt.days,
            "frequency": g.size() - 1,
            "monetary_value": g["amount"].mean(),
        }
    ).reindex(spend.index)
    rfm = rfm.fillna({"recency_days": 10_000, "frequency": 0, "monetary_value": 0.0})
    customers = book.tables.customers.set_index("customer_id").loc[spend.index]
    lifetime = C.lifetime_clv(
        p, s, horizon_days=horizon_days, margin=clv.gross_margin, cost_to_serve=clv.cost_to_serve,
        annual_discount_rate=clv.annual_discount_rate, lifetime_horizons=clv.lifetime_horizons,
    )  # fmt: skip
    scores = pd.DataFrame(
        {
            "customer_id": spend.index.astype("str"),
            "as_of": as_of.date(),
            "horizon_days": horizon_days,
            "churn_probability": p,
            "spend_if_active": s,
            "expected_spend": C.expected_spend(p, s),
            "clv_horizon": C.horizon_clv(p, s, margin=clv.gross_margin, cost_to_serve=clv.cost_to_serve),
            "clv": lifetime,
            "expected_lifetime_days": C.expected_lifetime_days(
                p, horizon_days=horizon_days, lifetime_horizons=clv.lifetime_horizons
            ),
            "clv_tier": SG.clv_tier(lifetime),
            "rfm_segment": "",
            "recency_days": rfm["recency_days"].to_numpy(),
            "frequency": rfm["frequency"].to_numpy(),
            "monetary_value": rfm["monetary_value"].to_numpy(),
            "channel": customers["channel"].to_numpy(),
            "acquired_at": customers["acquired_at"].to_numpy(),
            "acquisition_cost": customers["acquisition_cost"].to_numpy(),
            "drivers": [{"churn": [], "spend": []}] * len(spend),
            "churn_model_version": "oracle",
            "spend_model_version": "oracle",
            "feature_set_id": "oracle",
        }
    )
    r = SG.rfm_scores(scores["recency_days"], scores["frequency"], scores["monetary_value"])
    scores["rfm_segment"] = SG.rfm_segment(r["r_score"], r["f_score"], r["m_score"])
    run = ScoringRun(
        as_of=as_of.date(), horizon_days=horizon_days, churn_model_version="oracle", spend_model_version="oracle",
        run_id="oracle", feature_set_id="oracle", clv=clv,
        btyd=btyd.fit(prepare_history(book.tables, as_of), FeatureConfig()),
    )  # fmt: skip
    return Scores(frame=scores, run=run)


def forecast_backtest(book, forecast: pd.DataFrame, *, as_of: pd.Timestamp, customer_ids) -> pd.DataFrame:
    """Forecast beside the revenue the book recorded, per forecast month, for the scored customers."""
    tx = book.tables.transactions
    t0 = as_of + pd.Timedelta(days=1)
    tx = tx[(tx["timestamp"] >= t0) & tx["customer_id"].isin(set(customer_ids))]
    month = np.floor((tx["timestamp"] - t0) / pd.Timedelta(days=1) / C.MONTH_DAYS).astype(int) + 1
    actual = tx["amount"].groupby(month.to_numpy()).sum().reindex(forecast["month"], fill_value=0.0)
    out = forecast[["month", "expected_revenue", "revenue_low", "revenue_high"]].copy()
    out["actual_revenue"] = actual.to_numpy()
    out["inside"] = (out["revenue_low"] <= out["actual_revenue"]) & (out["actual_revenue"] <= out["revenue_high"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="render this report.html instead of building one")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/report"), help="budget output directory")
    parser.add_argument("--png", type=Path, help="screenshot path (default: report.png beside the report)")
    parser.add_argument("--customers", type=int, default=5000, help="synthetic customers")
    parser.add_argument("--horizon-days", type=int, default=182)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=7000)
    args = parser.parse_args(argv)

    report = args.report
    if report is None:
        t = time.perf_counter()
        book = generate(args.customers, seed=0)
        end = pd.Timestamp(book.truth.attrs["period_end"])
        as_of = end - pd.Timedelta(days=365)
        scores = oracle_scores(book, as_of=as_of, horizon_days=args.horizon_days, clv=ClvConfig())
        print(f"book and scores: {len(scores.frame)} customers as of {as_of.date()} in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        result = compute_budget(book.tables, scores)
        write_budget(result, args.out)
        report = write_report(result, args.out / REPORT_NAME)
        print(f"budget: {time.perf_counter() - t:.1f} s -> {args.out}")
        bt = forecast_backtest(book, result.forecast, as_of=as_of, customer_ids=scores.frame["customer_id"])
        with pd.option_context("display.width", 160, "display.float_format", "{:,.0f}".format):
            print(bt.to_string(index=False))
        total = bt["actual_revenue"].sum()
        lo, hi = result.summary["forecast_revenue_low"], result.summary["forecast_revenue_high"]
        mape = float(np.mean(np.abs(bt["expected_revenue"] - bt["actual_revenue"]) / bt["actual_revenue"]))
        print(
            f"12-month revenue: forecast {result.summary['forecast_revenue']:,.0f} "
            f"[{lo:,.0f}, {hi:,.0f}], actual {total:,.0f}, inside: {lo <= total <= hi}; "
            f"monthly MAPE {100 * mape:.1f}%, months inside their 80% band: {int(bt['inside'].sum())}/{len(bt)}"
        )

    png = args.png or report.with_suffix(".png")
    if find_chromium() is None:
        print("no chromium binary on PATH: skipped the screenshot (Debian: apt-get install -y chromium)")
        return 0
    t = time.perf_counter()
    render(report, png, width=args.width, height=args.height)
    print(f"screenshot: {png} ({png.stat().st_size / 1024:.0f} KiB) in {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
