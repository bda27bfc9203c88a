"""Where the contractual CLV departs from the truth on the synthetic SaaS books, per plan and tenure.

Usage::

    .venv/bin/python benchmarks/subscription_clv_diagnosis.py [--customers 12000] [--seeds 0 1]

For each seed, the book and cutoff of ``bench_subscription.py``: the running subscribers' summed
lifetime CLV over the truth without returns (``clv - clv_reactivation`` of ``subscription_truth``:
the model does not model returns) per plan x tenure band, with

- ``chain``: the model as it is (the defaults of ``ContractualSettings``: plans change along the
  pooled monthly plan-change matrix Q, under the frailty hazard scaled by each subscriber's
  propensity);
- ``fixed plan``: the same survival with Q = identity (each subscriber keeps its plan);
- the 6-month P(cancel) ratio of the band, the share of the band whose fitted sBG tail has no
  finite mean (alpha <= 1 in the stage that rules at the end of the explicit periods; the sBG is
  fitted either way, it scores only with ``survival: sbg``), and the mean expected lifetime of the
  truth, days.

It separates the two sources of the summed CLV's excess: the revenue path (Q extrapolated over
the whole survival tail) and the survival tail itself. Prints Markdown.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.synthetic import generate_subscription, subscription_truth  # noqa: E402
from serving.contractual import ContractualSettings, fit_contractual, score_contractual  # noqa: E402

PLANS = {"starter": 29.0, "growth": 79.0, "scale": 199.0}
BANDS = ([-1, 2, 11, 23, np.inf], ["0-2", "3-11", "12-23", "24+"])


def run(n_customers: int, seed: int, cutoff: str = "2023-12-31", horizon_days: int = 182) -> pd.DataFrame:
    book = generate_subscription(n_customers, seed=seed)
    truth = subscription_truth(book, cutoff=cutoff, horizon_days=horizon_days).customers
    model = fit_contractual(book.tables, cutoff=cutoff, settings=ContractualSettings(plans=PLANS, horizon_days=horizon_days))
    names = model.plan_transition.index
    fixed = replace(model, plan_transition=pd.DataFrame(np.eye(len(names)), index=names, columns=names))
    chain = score_contractual(model, book.tables)
    still = score_contractual(fixed, book.tables)
    both = chain.join(still[["clv"]].add_suffix("_fixed")).join(truth.add_suffix("_truth"))
    both["clv_truth_no_returns"] = both["clv_truth"] - both["clv_reactivation_truth"]
    running = both.loc[both["state"].isin(["active", "reactivated"])].copy()
    tail_alpha = np.where(running["tenure_periods"].astype(float) + model.settings.explicit_periods
                          >= model.settings.late_tenure_periods, running["late_alpha"], running["alpha"])
    running["infinite_tail"] = tail_alpha <= 1
    band = pd.cut(running["tenure_periods"].astype(float), BANDS[0], labels=BANDS[1])
    g = running.groupby([running["plan"], band], observed=True)
    sums = g[["clv", "clv_fixed", "clv_truth_no_returns", "churn_probability", "churn_probability_truth"]].sum()
    out = pd.DataFrame({
        "subscribers": g.size(),
        "chain": sums["clv"] / sums["clv_truth_no_returns"],
        "fixed_plan": sums["clv_fixed"] / sums["clv_truth_no_returns"],
        "p_cancel": sums["churn_probability"] / sums["churn_probability_truth"],
        "infinite_tail": g["infinite_tail"].mean(),
        "lifetime_days_truth": g["expected_lifetime_days_truth"].mean(),
    })
    total = running[["clv", "clv_fixed", "clv_truth_no_returns"]].sum()
    out.attrs["total"] = {"chain": total["clv"] / total["clv_truth_no_returns"],
                          "fixed_plan": total["clv_fixed"] / total["clv_truth_no_returns"]}
    out.attrs["alphas"] = model.segments[["alpha", "late_alpha"]].describe().loc[["min", "50%", "max"]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=12_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    for seed in args.seeds:
        table = run(args.customers, seed)
        print(f"\nseed {seed}: running subscribers' CLV / truth without returns: chain {table.attrs['total']['chain']:.3f}, "
              f"fixed plan {table.attrs['total']['fixed_plan']:.3f}")
        print("sBG alpha (min, median, max) early:", table.attrs["alphas"]["alpha"].round(2).tolist(),
              "late:", table.attrs["alphas"]["late_alpha"].round(2).tolist())
        print("| plan, tenure | subscribers | CLV chain / truth | CLV fixed plan / truth | P(cancel) / truth | alpha <= 1 | lifetime truth, days |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for (plan, band), r in table.iterrows():
            print(f"| {plan} {band} | {int(r['subscribers']):,} | {r['chain']:.2f} | {r['fixed_plan']:.2f} | "
                  f"{r['p_cancel']:.2f} | {r['infinite_tail']:.0%} | {r['lifetime_days_truth']:,.0f} |")


if __name__ == "__main__":
    main()
