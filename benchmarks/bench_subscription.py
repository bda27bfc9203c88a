"""Contractual churn and CLV on synthetic SaaS books, against the generator's exact truth.

Usage::

    .venv/bin/python benchmarks/bench_subscription.py [--customers 12000] [--seeds 0 1] [--cutoff 2023-12-31]
        [--horizon-days 182] [--truth-draws 200000] [--json out.json]

For each seed: generates a subscription book (``features.synthetic.generate_subscription``, the
defaults: 2021-2024, plans 29 / 79 / 199 a month), fits the contractual model on the history up to
the cutoff (``serving.contractual.fit_contractual`` with its defaults: the gamma-frailty cancel
hazard by tenure band, plan and channel, each subscriber's plan-change propensity), the two-stage
sBG (``survival: sbg``) and the plain sBG (``survival: sbg, late_tenure_periods: 0``) on the same
history, scores every customer and compares with ``subscription_truth`` at the cutoff and
``new_customer_truth`` on the cutoff:

- 6-month P(cancel) of the subscribed (active or reactivated): mean per plan x tenure band
  (billing months 0-2 / 3-11 / 12-23 / 24+), model / truth;
- expected spend in the window, summed;
- lifetime CLV summed over every customer: the frailty hazard (the default, returns after a
  running subscription included), the same without the returns against the truth without them, the
  two-stage sBG (a second sBG from 12 renewals on), the plain sBG (one sBG for every tenure), all
  over the whole survival curve, discounted; the classic ARPU x margin / churn; and the truth
  (returns included, and the share without them);
- new-subscriber CLV and LTV:CAC per channel against the truth of a customer acquired on the cutoff
  (the default model, the same without returns, and the two-stage sBG). The truth is a Monte Carlo
  mean over ``--truth-draws`` latent customers per channel; its standard error is printed.

Prints Markdown tables (the ones in BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.synthetic import generate_subscription, new_customer_truth, subscription_truth  # noqa: E402
from serving.contractual import (  # noqa: E402
    ContractualSettings,
    fit_contractual,
    new_subscriber_clv,
    score_contractual,
)

PLANS = {"starter": 29.0, "growth": 79.0, "scale": 199.0}
BANDS = ([-1, 2, 11, 23, np.inf], ["0-2", "3-11", "12-23", "24+"])


def run(n_customers: int, seed: int, cutoff: str, horizon_days: int, truth_draws: int) -> dict:
    started = time.perf_counter()
    book = generate_subscription(n_customers, seed=seed)
    truth = subscription_truth(book, cutoff=cutoff, horizon_days=horizon_days).customers
    settings = ContractualSettings(plans=PLANS, horizon_days=horizon_days)
    model = fit_contractual(book.tables, cutoff=cutoff, settings=settings)
    scores = score_contractual(model, book.tables)
    seconds = time.perf_counter() - started
    alone = replace(model, returns=None)  # the same fit, without the returns
    no_returns = score_contractual(alone, book.tables)
    sbg_model = fit_contractual(book.tables, cutoff=cutoff, settings=replace(settings, survival="sbg"))
    sbg = score_contractual(sbg_model, book.tables)
    plain = score_contractual(
        fit_contractual(book.tables, cutoff=cutoff, settings=replace(settings, survival="sbg", late_tenure_periods=0)),
        book.tables,
    )
    both = (scores.join(truth.add_suffix("_truth")).join(sbg[["churn_probability", "clv"]].add_suffix("_sbg"))
            .join(plain[["churn_probability", "clv"]].add_suffix("_plain"))
            .join(no_returns[["clv"]].add_suffix("_alone")))
    running = both.loc[both["state"].isin(["active", "reactivated"])]
    band = pd.cut(running["tenure_periods"].astype(float), BANDS[0], labels=BANDS[1])
    cols = ["churn_probability", "churn_probability_truth", "churn_probability_sbg", "churn_probability_plain"]
    by_band = running.groupby([running["plan"], band], observed=True)[cols].agg(["mean", "size"])
    table = pd.DataFrame({
        "customers": by_band[("churn_probability", "size")],
        "model": by_band[("churn_probability", "mean")],
        "truth": by_band[("churn_probability_truth", "mean")],
        "sbg": by_band[("churn_probability_sbg", "mean")],
        "plain": by_band[("churn_probability_plain", "mean")],
    })
    table["ratio"] = table["model"] / table["truth"]
    table["sbg_ratio"] = table["sbg"] / table["truth"]
    table["plain_ratio"] = table["plain"] / table["truth"]
    new_truth = new_customer_truth(book, acquired_at=cutoff, horizon_days=horizon_days,
                                   draws=truth_draws).add_suffix("_truth")
    new = new_subscriber_clv(model, book.tables).join(new_truth)
    new_alone = new_subscriber_clv(alone, book.tables)
    new_sbg = new_subscriber_clv(sbg_model, book.tables).join(new_truth)
    clv_truth = float(both["clv_truth"].sum())
    return {
        "seed": seed,
        "seconds": seconds,
        "subscribed": len(running),
        "p_cancel": {"model": float(running["churn_probability"].mean()),
                     "truth": float(running["churn_probability_truth"].mean())},
        "p_cancel_by_band": {f"{p} {b}": row.to_dict() for (p, b), row in table.iterrows()},
        "expected_spend": {
            "model": float(both["expected_spend"].sum()), "truth": float(both["expected_spend_truth"].sum())
        },
        "clv": {
            "model": float(both["clv"].sum()),
            "without_returns": float(both["clv_alone"].sum()),
            "sbg": float(both["clv_sbg"].sum()),
            "plain_sbg": float(both["clv_plain"].sum()),
            "classic": float(both["clv_classic"].replace(np.inf, np.nan).sum()),
            "truth": clv_truth,
            "truth_without_returns": float((both["clv_truth"] - both["clv_reactivation_truth"]).sum()),
        },
        "alpha_below_1": int((model.segments["alpha"] <= 1).sum()),
        "segments": len(model.segments),
        "new_customer": {
            ch: {**{key: r[key] for key in ("clv", "clv_truth", "ltv_cac", "ltv_cac_truth", "ltv_cac_se_truth")},
                 "ltv_cac_sbg": new_sbg.loc[ch, "ltv_cac"], "ltv_cac_without_returns": new_alone.loc[ch, "ltv_cac"]}
            for ch, r in new.iterrows()
        },
        "returns": None if model.returns is None else model.returns.to_dict(),
        "truth_draws": truth_draws,
    }


def _markdown(results: list[dict]) -> str:
    lines = ["| seed | subscribed | mean P(cancel) model / truth | spend model / truth | "
             "CLV frailty / truth | CLV frailty without returns / truth without returns | "
             "CLV two-stage sBG / truth | CLV plain sBG / truth | CLV classic / truth | "
             "CLV truth without returns / truth |",
             "|" + " --- |" * 10]
    for r in results:
        c = r["clv"]
        lines.append(
            f"| {r['seed']} | {r['subscribed']:,} | {r['p_cancel']['model']:.3f} / {r['p_cancel']['truth']:.3f} | "
            f"{r['expected_spend']['model'] / r['expected_spend']['truth']:.3f} | {c['model'] / c['truth']:.3f} | "
            f"{c['without_returns'] / c['truth_without_returns']:.3f} | {c['sbg'] / c['truth']:.3f} | "
            f"{c['plain_sbg'] / c['truth']:.3f} | "
            f"{c['classic'] / c['truth']:.3f} | {c['truth_without_returns'] / c['truth']:.3f} |"
        )

    def band(r, key):
        b = r["p_cancel_by_band"][key]
        return (f"{b['truth']:.3f}, {b['model']:.3f} ({b['ratio']:.2f}), {b['sbg']:.3f} ({b['sbg_ratio']:.2f}), "
                f"{b['plain']:.3f} ({b['plain_ratio']:.2f})")

    def channel(r, key):
        n = r["new_customer"][key]
        return (f"{n['ltv_cac']:.2f} / {n['ltv_cac_truth']:.2f} ({n['ltv_cac'] / n['ltv_cac_truth']:.2f}), "
                f"{n['ltv_cac_without_returns']:.2f} ({n['ltv_cac_without_returns'] / n['ltv_cac_truth']:.2f}), "
                f"{n['ltv_cac_sbg']:.2f} ({n['ltv_cac_sbg'] / n['ltv_cac_truth']:.2f})")

    for first, heading, keys, cell in (
        ("plan, tenure (months)", "truth, frailty (ratio), two-stage sBG (ratio), plain sBG (ratio)",
         results[0]["p_cancel_by_band"], band),
        ("channel", "LTV:CAC frailty / truth (ratio), without returns (ratio), two-stage sBG (ratio)",
         results[0]["new_customer"], channel),
    ):
        seeds = " | ".join(f"seed {r['seed']}: {heading}" for r in results)
        lines += ["", f"| {first} | {seeds} |", "| --- | " + " | ".join("---" for _ in results) + " |"]
        lines += [f"| {key} | " + " | ".join(cell(r, key) for r in results) + " |" for key in keys]
    se = max(n["ltv_cac_se_truth"] / n["ltv_cac_truth"] for r in results for n in r["new_customer"].values())
    lines += ["", (f"The truth's LTV:CAC per channel: {results[0]['truth_draws']:,} draws, Monte Carlo standard "
                   f"error at most {se:.2%} of it.")]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=12_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--cutoff", default="2023-12-31")
    parser.add_argument("--horizon-days", type=int, default=182)
    parser.add_argument("--truth-draws", type=int, default=200_000,
                        help="latent customers per channel of the new-customer truth (200,000: its standard error "
                             "about 0.2 %% of the LTV:CAC)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = [run(args.customers, seed, args.cutoff, args.horizon_days, args.truth_draws) for seed in args.seeds]
    print(_markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
