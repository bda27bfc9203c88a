"""Backtest of lifetime CLV, the spend curve and the intervals, per customer and per horizon.

Usage::

    .venv/bin/python benchmarks/bench_lifetime.py [--seeds 0,1] [--parts synthetic,cdnow,cdnow2]
        [--customers 20000] [--work DIR] [--json out.json]

Every step runs the command line, as a user would, in a throwaway MLflow store per book:

- ``synthetic`` (the issue's protocol), for each seed::

      clvcast generate --customers 20000 --seed S --start 2018-01-01 --end 2024-12-31 --out BOOK
      clvcast train --data BOOK --cutoff 2019-06-30            # sees nothing after 2019-12-31
      clvcast score --data BOOK --cutoff 2019-12-31 --out scores.parquet

  then, for the scored base: expected spend of each horizon k = 1..10 of 182 days
  (``expected_spend_curve``) against what those customers spent in it; the sum of ``clv`` against
  the discounted margin they brought over the cap (margin 0.3, 10 % a year, per-horizon discount
  as in the formula); per acquisition channel the same; the share of customers whose realised
  first-horizon spend and realised discounted margin fall inside ``expected_spend_lower/upper``
  and ``clv_lower/upper``; the mean expected remaining lifetime against the generator's truth; and,
  for context, the previous formula (r^k with r = 1 − churn_probability) on the same scores and
  the oracle (the generator's latent rates and alive state) per horizon, which shows how much of
  a horizon's error is the noise of what customers happened to spend.
- ``cdnow``: CDNOW's classic 39-week protocol,
  ``clvcast backtest --data CDNOW --cutoff 1997-09-30 --horizon-days 273 --json FILE``
  (clvcast against Pareto/NBD and BG/NBD + Gamma-Gamma, interval coverage).
- ``cdnow2``: two horizons of 182 days from 1997-06-30 (to 1998-06-28)::

      clvcast train --data CDNOW --cutoff 1997-06-30 --horizon-days 182
      clvcast score --data CDNOW --cutoff 1997-06-30 --out scores.parquet

  each horizon's expected spend and MAE against Pareto/NBD + Gamma-Gamma fitted on the same history,
  and the interval coverage of the first.

Settings were chosen before this ran, on other books and windows (``benchmarks/lifetime_experiments.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLVCAST = str(Path(sys.executable).with_name("clvcast"))
CDNOW = ROOT.parent / "shared" / "data" / "cdnow"
N_CUSTOMERS, START, END = 20_000, "2018-01-01", "2024-12-31"
TRAIN_CUTOFF, AS_OF = "2019-06-30", "2019-12-31"
#: Customers acquired in this many days after AS_OF are the new-customer cohort.
NEW_COHORT_DAYS = 182


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args: list[str], env: dict[str, str]) -> str:
    """Run ``clvcast ARGS`` and return its standard output; the command is logged."""
    _log("$ clvcast " + " ".join(args))
    done = subprocess.run([CLVCAST, "--quiet", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"clvcast {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def _env(store: Path, *, refit: bool = False) -> dict[str, str]:
    """The environment of the commands: a throwaway MLflow store; without ``refit``, no refit.

    Without ``refit`` the champion is trained on the whole book with ``training.refit`` off: the
    refit would fit again on origins up to the book's last day, its future. With it, the champion is
    trained on the book cut at the scoring date (:func:`_history_book`), refit included, as a user
    training on what is known at the scoring date would.
    """
    store.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true",
           "BENTOML_DO_NOT_TRACK": "true"}
    return env if refit else {**env, "CLVCAST_TRAINING__REFIT": "false"}


def _history_book(book_dir: Path, out: Path, until: str) -> Path:
    """The tables of the book at ``book_dir`` up to the end of day ``until``, as a data directory at ``out``."""
    from features.dates import history_until
    from features.synthetic import read_book

    out.mkdir(parents=True, exist_ok=True)
    tables = history_until(read_book(book_dir).tables, until)
    for name in ("transactions", "events", "customers"):
        frame = getattr(tables, name)
        if frame is not None:
            frame.to_parquet(out / f"{name}.parquet", index=False)
    return out


def realised_horizons(transactions: pd.DataFrame, ids: pd.Index, *, as_of, horizon_days: int, n_horizons: int) -> np.ndarray:
    """Net spend of each customer of ``ids`` in each horizon k = 1..K after ``as_of``, shape (n, K)."""
    start = pd.Timestamp(as_of).normalize() + pd.Timedelta(days=1)
    tx = transactions.loc[transactions["timestamp"] >= start]
    k = ((tx["timestamp"] - start) // pd.Timedelta(days=horizon_days)).to_numpy()
    pos = ids.get_indexer(tx["customer_id"])
    keep = (pos >= 0) & (k < n_horizons)
    out = np.zeros((len(ids), n_horizons))
    np.add.at(out, (pos[keep], k[keep]), tx["amount"].to_numpy(float)[keep])
    return out


def _covered(actual, lower, upper) -> float:
    return float(np.mean((actual >= lower - 1e-9) & (actual <= upper + 1e-9)))


def oracle_horizons(truth: pd.DataFrame, ids: pd.Index, *, as_of, horizon_days: int, n_horizons: int) -> np.ndarray:
    """Expected net spend per horizon given the generator's latent state at ``as_of`` (rates, alive, seasonality)."""
    t0 = pd.Timestamp(as_of).normalize() + pd.Timedelta(days=1)
    tr = truth.reindex(ids)
    alive = (tr["dropout_at"] > t0).to_numpy()
    season = np.asarray(truth.attrs["seasonality"], dtype=float)
    days = pd.date_range(t0, periods=n_horizons * horizon_days, freq="D")
    index = season[days.month - 1]
    mu = tr["dropout_rate_per_day"].to_numpy()
    mid = np.arange(len(days)) + 0.5
    out = np.zeros((len(ids), n_horizons))
    for k in range(n_horizons):
        part = slice(k * horizon_days, (k + 1) * horizon_days)
        out[:, k] = (np.exp(-np.outer(mu, mid[part])) * index[part]).sum(axis=1)
    return out * (tr["purchase_rate_per_day"] * tr["net_order_value"]).to_numpy()[:, None] * alive[:, None]


def expected_from(truth: pd.DataFrame, ids: pd.Index, starts: pd.Series, *, horizon_days: int, n_horizons: int) -> np.ndarray:
    """Expected net spend per horizon from each customer's own start, given the generator's latent rates, shape (n, K).

    Horizon k covers the days ``start + 1 + (k − 1) H .. start + k H``; the customer is alive at
    ``start`` (just acquired) and drops out at the rate ``dropout_rate_per_day``; purchases follow
    ``purchase_rate_per_day`` times the month's seasonality index, each worth ``net_order_value``.
    """
    tr = truth.reindex(ids)
    season = np.asarray(truth.attrs["seasonality"], dtype=float)
    start = pd.to_datetime(starts.to_numpy()).normalize()
    mu = tr["dropout_rate_per_day"].to_numpy()
    n_days = n_horizons * horizon_days
    out = np.zeros((len(ids), n_horizons))
    for day in range(n_days):
        month = (start + pd.Timedelta(days=day + 1)).month.to_numpy()
        out[:, day // horizon_days] += np.exp(-mu * (day + 0.5)) * season[month - 1]
    return out * (tr["purchase_rate_per_day"] * tr["net_order_value"]).to_numpy()[:, None]


def new_cohort(book, *, horizon_days: int, n_horizons: int, annual_discount_rate: float):
    """The customers acquired in the NEW_COHORT_DAYS days after ``AS_OF`` and what they spent.

    Returns ``ids`` (Index), ``days`` (acquisition days, datetime64), ``channel`` (str array),
    ``real`` (n, K + 1: spend on the acquisition day, then in each of the K horizons of H days after
    it, up to the book's end) and ``discount`` (K + 1 factors: 1 for the acquisition day, then
    (1 + δ)^-k, as the CLV discounts).
    """
    from serving import clv as C

    customers = book.tables.customers
    start = pd.Timestamp(AS_OF) + pd.Timedelta(days=1)
    acquired = pd.to_datetime(customers["acquired_at"])
    cohort = customers.loc[(acquired >= start) & (acquired < start + pd.Timedelta(days=NEW_COHORT_DAYS))]
    ids = pd.Index(cohort["customer_id"].astype("str"))
    days = pd.to_datetime(cohort["acquired_at"]).dt.normalize().to_numpy()
    channel = cohort["channel"].astype("str").to_numpy()
    tx = book.tables.transactions
    tx = tx.loc[tx["customer_id"].isin(ids)]
    pos = ids.get_indexer(tx["customer_id"])
    offset = (tx["timestamp"].dt.normalize().to_numpy() - days[pos]) // np.timedelta64(1, "D")
    k = np.where(offset <= 0, 0, (offset - 1) // horizon_days + 1)  # 0: the acquisition day
    real = np.zeros((len(ids), n_horizons + 1))
    keep = k <= n_horizons
    np.add.at(real, (pos[keep], k[keep]), tx["amount"].to_numpy(float)[keep])
    per_horizon = C.discount_per_horizon(horizon_days, annual_discount_rate)
    discount = np.concatenate([[1.0], (1 + per_horizon) ** -np.arange(1, n_horizons + 1)])
    return ids, days, channel, real, discount


def new_customers(book, store: Path, *, horizon_days: int, clv) -> dict:
    """New-customer CLV per channel (the champion's, from acquisition) vs the cohorts acquired after the scoring date.

    The cohort: customers acquired in the NEW_COHORT_DAYS days after ``AS_OF``. Each one's value
    from acquisition, discounted per horizon as the CLV is: margin of the acquisition day's orders,
    plus the margin of each of the K horizons of H days after it over (1 + δ)^k. Realised: what they
    spent, up to the book's end (the last cohort members' 10th horizon ends up to NEW_COHORT_DAYS
    days after it; those days are filled with the generator's expectation, ``tail_filled``);
    expected: the same from the generator's latent rates (``oracle``). Predicted: the champion's
    ``clv_from_acquisition`` of a customer acquired through the channel on the same day
    (:func:`serving.lifetime.new_customer_curves`), averaged over the cohort.
    """
    from serving.lifetime import new_customer_curves
    from training import registry

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    champion = registry.load_champion()
    K, m = clv.lifetime_horizons, clv.gross_margin
    ids, days, channel, real, discount = new_cohort(
        book, horizon_days=horizon_days, n_horizons=K, annual_discount_rate=clv.annual_discount_rate
    )
    oracle = expected_from(book.truth, ids, pd.Series(days), horizon_days=horizon_days, n_horizons=K)
    # Days of the cap after the book's end, per customer and horizon: filled with the expectation.
    end = pd.Timestamp(END)
    first = days[:, None] + np.timedelta64(1, "D") + np.arange(K)[None, :] * np.timedelta64(horizon_days, "D")
    missing = np.clip((first + np.timedelta64(horizon_days, "D") - np.timedelta64(1, "D") - end.to_datetime64())
                      // np.timedelta64(1, "D"), 0, horizon_days)
    tail = oracle * missing / horizon_days
    realised = m * (real + np.concatenate([np.zeros((len(ids), 1)), tail], axis=1)) @ discount
    expected = m * (real[:, 0] + oracle @ discount[1:])
    predicted = np.zeros(len(ids))
    for day in np.unique(days):
        rows = np.flatnonzero(days == day)
        names = sorted(set(channel[rows]))
        frame = new_customer_curves(champion, names, acquired_at=pd.Timestamp(day), clv=clv)
        predicted[rows] = frame["clv_from_acquisition"].reindex(channel[rows]).to_numpy()
    out = {}
    for c in sorted(set(channel)):
        rows = channel == c
        out[c] = {"customers": int(rows.sum()), "predicted": float(predicted[rows].mean()),
                  "realised": float(realised[rows].mean()), "oracle": float(expected[rows].mean())}
    out["all"] = {"customers": len(ids), "predicted": float(predicted.mean()), "realised": float(realised.mean()),
                  "oracle": float(expected.mean())}
    out["tail_filled"] = float((m * np.concatenate([np.zeros((len(ids), 1)), tail], axis=1) @ discount).sum() / realised.sum())
    return out


def synthetic(seed: int, work: Path, *, refit: bool = False, customers: int = N_CUSTOMERS, written: bool = False) -> dict:
    """The issue's protocol on one seed (module docstring) with a book of ``customers``; ``refit``: see :func:`_env`.

    ``written``: the book is already at ``work/book-SEED`` (e.g. made with another generator
    configuration, ``dropout_mixture_diagnosis.py``), so it is not generated.
    """
    from features.synthetic import read_book
    from serving import clv as C
    from serving.scores import read_scores

    book_dir, env = work / f"book-{seed}", _env(work / f"mlflow-{seed}", refit=refit)
    out = work / f"scores-{seed}.parquet"
    t0 = time.perf_counter()
    if not written:
        run(["generate", "--customers", str(customers), "--seed", str(seed), "--start", START, "--end", END,
             "--out", str(book_dir)], env)
    train_dir = _history_book(book_dir, work / f"history-{seed}", AS_OF) if refit else book_dir
    run(["train", "--data", str(train_dir), "--cutoff", TRAIN_CUTOFF], env)
    run(["score", "--data", str(book_dir), "--cutoff", AS_OF, "--out", str(out)], env)
    seconds = time.perf_counter() - t0
    scores = read_scores(out)
    frame, run_ = scores.frame, scores.run
    H, clv = run_.horizon_days, run_.clv
    K, m, d = clv.lifetime_horizons, clv.gross_margin, clv.annual_discount_rate
    book = read_book(book_dir)
    ids = pd.Index(frame["customer_id"].astype("str"))
    real = realised_horizons(book.tables.transactions, ids, as_of=AS_OF, horizon_days=H, n_horizons=K)
    oracle = oracle_horizons(book.truth, ids, as_of=AS_OF, horizon_days=H, n_horizons=K)
    curve = C.curve_matrix(frame["expected_spend_curve"])
    discount = (1 + C.discount_per_horizon(H, d)) ** -np.arange(1, K + 1)
    realised_clv = m * real @ discount
    # The previous formula, on the same scores: (m s − c) Σ_k r^k / (1+δ)^k, r = 1 − p.
    q = (1 - frame["churn_probability"].to_numpy()) / (1 + C.discount_per_horizon(H, d))
    previous = (m * frame["spend_if_active"].to_numpy() - clv.cost_to_serve) * (q[:, None] ** np.arange(1, K + 1)).sum(axis=1)
    channel = frame["channel"].astype("str").to_numpy()
    per_channel = {
        c: {"customers": int((channel == c).sum()), "clv": float(frame["clv"].to_numpy()[channel == c].sum()),
            "realised": float(realised_clv[channel == c].sum())}
        for c in sorted(set(channel))
    }  # fmt: skip
    # Remaining lifetime up to the cap, from the generator's dropout time.
    truth = book.truth.reindex(ids)
    t0d = pd.Timestamp(AS_OF) + pd.Timedelta(days=1)
    left = ((truth["dropout_at"] - t0d) / pd.Timedelta(days=1)).clip(lower=0, upper=K * H).to_numpy()
    return {
        "seed": seed,
        "customers": len(frame),
        "horizon_days": H,
        "seconds": seconds,
        "horizon_predicted": curve.sum(axis=0).tolist(),
        "horizon_realised": real.sum(axis=0).tolist(),
        "horizon_oracle": oracle.sum(axis=0).tolist(),
        "clv": float(frame["clv"].sum()),
        "clv_realised": float(realised_clv.sum()),
        "clv_previous_formula": float(previous.sum()),
        "clv_oracle": float((m * oracle @ discount).sum()),
        "per_channel": per_channel,
        "coverage_spend": _covered(real[:, 0], frame["expected_spend_lower"].to_numpy(), frame["expected_spend_upper"].to_numpy()),
        "coverage_clv": _covered(realised_clv, frame["clv_lower"].to_numpy(), frame["clv_upper"].to_numpy()),
        "interval_coverage_target": run_.interval_coverage,
        "lifetime_days_predicted": float(frame["expected_lifetime_days"].mean()),
        "lifetime_days_truth": float(left.mean()),
        "mae_h1": float(np.abs(curve[:, 0] - real[:, 0]).mean()),
        "mae_h1_oracle": float(np.abs(oracle[:, 0] - real[:, 0]).mean()),
        "new_customers": new_customers(book, work / f"mlflow-{seed}", horizon_days=H, clv=clv),
    }


def cdnow_classic(work: Path) -> dict:
    """CDNOW's 39-week protocol through ``clvcast backtest``."""
    env = _env(work / "mlflow-cdnow")
    out = work / "cdnow-273.json"
    t0 = time.perf_counter()
    run(["backtest", "--data", str(CDNOW), "--cutoff", "1997-09-30", "--horizon-days", "273", "--json", str(out)], env)
    result = json.loads(out.read_text())
    result["seconds"] = time.perf_counter() - t0
    return result


def cdnow_two_horizons(work: Path) -> dict:
    """Two 182-day horizons from 1997-06-30: train, score, compare with Pareto/NBD + Gamma-Gamma."""
    from features.btyd import (
        fit_gamma_gamma,
        fit_pareto_nbd,
        gamma_gamma_expected_value,
        pareto_nbd_expected_purchases_curve,
        summary_from_transactions,
    )
    from features.io import load_tables
    from serving import clv as C
    from serving.scores import read_scores

    env = _env(work / "mlflow-cdnow2")
    out = work / "cdnow2-scores.parquet"
    t0 = time.perf_counter()
    run(["train", "--data", str(CDNOW), "--cutoff", "1997-06-30", "--horizon-days", "182"], env)
    run(["score", "--data", str(CDNOW), "--cutoff", "1997-06-30", "--out", str(out)], env)
    seconds = time.perf_counter() - t0
    frame = read_scores(out).frame
    tables = load_tables(CDNOW).tables
    ids = pd.Index(frame["customer_id"].astype("str"))
    real = realised_horizons(tables.transactions, ids, as_of="1997-06-30", horizon_days=182, n_horizons=2)
    curve = C.curve_matrix(frame["expected_spend_curve"])[:, :2]
    history = tables.transactions.loc[tables.transactions["timestamp"] < pd.Timestamp("1997-07-01")]
    summary = summary_from_transactions(history, cutoff="1997-06-30").reindex(ids)
    x, tx, T, mv = (summary[c].to_numpy(float) for c in ("frequency", "recency", "T", "monetary_value"))
    pareto = fit_pareto_nbd(x, tx, T)
    value = gamma_gamma_expected_value(fit_gamma_gamma(x, mv), x, mv)
    # Windows of 26 weeks from T (the start of the cutoff day, as the baselines of clvcast backtest).
    cum = pareto_nbd_expected_purchases_curve(pareto, 182 / 7, 2, x, tx, T)
    baseline = np.diff(cum, axis=1, prepend=0.0) * value[:, None]
    return {
        "customers": len(frame),
        "seconds": seconds,
        "realised": real.sum(axis=0).tolist(),
        "clvcast": curve.sum(axis=0).tolist(),
        "pareto": baseline.sum(axis=0).tolist(),
        "mae_clvcast": np.abs(curve - real).mean(axis=0).tolist(),
        "mae_pareto": np.abs(baseline - real).mean(axis=0).tolist(),
        "coverage_spend": _covered(real[:, 0], frame["expected_spend_lower"].to_numpy(), frame["expected_spend_upper"].to_numpy()),
    }


def _table_synthetic(results: list[dict]) -> str:
    lines = ["| | " + " | ".join(f"seed {r['seed']}" for r in results) + " |", "| --- |" + " --- |" * len(results)]

    def row(label, values):
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    row("scored customers", [f"{r['customers']:,}" for r in results])
    row("lifetime CLV ÷ realised discounted margin", [f"{r['clv'] / r['clv_realised']:.3f}" for r in results])
    row("previous formula (r^k) ÷ realised", [f"{r['clv_previous_formula'] / r['clv_realised']:.3f}" for r in results])
    row("oracle ÷ realised", [f"{r['clv_oracle'] / r['clv_realised']:.3f}" for r in results])
    for k in range(len(results[0]["horizon_realised"])):
        row(f"horizon {k + 1}: predicted ÷ realised (oracle ÷ realised)", [
            f"{r['horizon_predicted'][k] / r['horizon_realised'][k]:.3f} ({r['horizon_oracle'][k] / r['horizon_realised'][k]:.3f})"
            for r in results
        ])  # fmt: skip
    row("80 % interval coverage, first-horizon spend", [f"{r['coverage_spend']:.3f}" for r in results])
    row("80 % interval coverage, lifetime CLV", [f"{r['coverage_clv']:.3f}" for r in results])
    row("expected remaining lifetime, days (truth, capped)", [f"{r['lifetime_days_predicted']:.0f} ({r['lifetime_days_truth']:.0f})" for r in results])
    row("first-horizon MAE (oracle)", [f"{r['mae_h1']:.1f} ({r['mae_h1_oracle']:.1f})" for r in results])
    channels = sorted(results[0]["per_channel"])
    for c in channels:
        row(f"channel {c}: lifetime CLV ÷ realised", [
            f"{r['per_channel'][c]['clv'] / r['per_channel'][c]['realised']:.3f}" for r in results
        ])  # fmt: skip
    for c in sorted(results[0]["new_customers"]):
        if c == "tail_filled":
            continue
        # expected ÷ realised: how far the cohort's own expectation (each customer's latent rates
        # known) is from what it spent, the sampling noise any prediction of the cohort meets.
        row(f"new customers {c}: CLV from acquisition ÷ realised (÷ expected; expected ÷ realised), customers", [
            f"{r['new_customers'][c]['predicted'] / r['new_customers'][c]['realised']:.3f} "
            f"({r['new_customers'][c]['predicted'] / r['new_customers'][c]['oracle']:.3f}; "
            f"{r['new_customers'][c]['oracle'] / r['new_customers'][c]['realised']:.3f}), {r['new_customers'][c]['customers']}"
            for r in results
        ])  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--parts", default="synthetic,cdnow,cdnow2")
    parser.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--customers", type=int, default=None,
                        help=f"synthetic: customers of each book (default {N_CUSTOMERS:,}, the issue's; the new-customer cohorts grow with it)")
    parser.add_argument("--refit", action="store_true",
                        help="synthetic: train on the book cut at the scoring date, with the refit (see _env)")
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - {"synthetic", "cdnow", "cdnow2"})
    if unknown:
        parser.error(f"--parts: rule 'synthetic, cdnow, cdnow2': unknown {', '.join(unknown)}")
    if "synthetic" not in parts and (args.customers is not None or args.refit):
        parser.error("--customers and --refit apply to the synthetic books only (CDNOW's data is fixed): add synthetic to --parts")
    if args.customers is not None and args.customers < 1:
        parser.error(f"--customers: rule 'at least 1': got {args.customers}")
    customers = N_CUSTOMERS if args.customers is None else args.customers
    work = Path(args.work or tempfile.mkdtemp(prefix="clvcast-bench-lifetime-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"command": "python benchmarks/bench_lifetime.py " + " ".join(argv or sys.argv[1:])}
    if "synthetic" in parts:
        report["synthetic"] = [synthetic(int(s), work, refit=args.refit, customers=customers)
                               for s in args.seeds.split(",")]
        print("## Synthetic books (train 2019-06-30, score 2019-12-31, 10 horizons of 182 days)\n")
        print(_table_synthetic(report["synthetic"]))
    if "cdnow" in parts:
        r = report["cdnow"] = cdnow_classic(work)
        print(f"\n## CDNOW, classic 39 weeks (cutoff 1997-09-30, 273 days; boosters' window {r.get('label_horizon_days')} days)\n")
        print("| model | MAE | RMSE | Gini | total predicted | total error |\n| --- | --- | --- | --- | --- | --- |")
        for name in ("clvcast", "pareto", "btyd", "naive"):
            mm = r["models"][name]
            print(f"| {name} | {mm['mae']:.2f} | {mm['rmse']:.2f} | {mm['gini']:.3f} | {mm['total_predicted']:,.0f} | "
                  f"{mm['total_predicted'] / r['total_actual'] - 1:+.1%} |")
        print(f"| actual | | | | {r['total_actual']:,.0f} | |")
        print(f"\n80 % interval coverage (clvcast): {r['models']['clvcast']['interval_coverage']:.3f}")
    if "cdnow2" in parts:
        r = report["cdnow2"] = cdnow_two_horizons(work)
        print("\n## CDNOW, two horizons of 182 days from 1997-06-30\n")
        print("| horizon | realised | clvcast | Pareto/NBD + GG | MAE clvcast | MAE Pareto/NBD |\n| --- | --- | --- | --- | --- | --- |")
        for k in range(2):
            print(f"| {k + 1} | {r['realised'][k]:,.0f} | {r['clvcast'][k]:,.0f} ({r['clvcast'][k] / r['realised'][k]:.3f}) | "
                  f"{r['pareto'][k]:,.0f} ({r['pareto'][k] / r['realised'][k]:.3f}) | {r['mae_clvcast'][k]:.2f} | {r['mae_pareto'][k]:.2f} |")
        print(f"\n80 % interval coverage of the first horizon (clvcast): {r['coverage_spend']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
