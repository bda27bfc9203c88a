"""Coverage of the new-customer 80 % interval on the champions of ``bench_lifetime.py``.

Usage::

    .venv/bin/python benchmarks/bench_lifetime.py --seeds 0,1 --parts synthetic --work DIR
    .venv/bin/python benchmarks/new_customer_coverage.py DIR 0,1

For each seed: the customers acquired in the 182 days after the scoring date (``bench_lifetime``'s
cohort), each one's realised value from acquisition (margin of its acquisition day and of the K
horizons after it, discounted as the CLV is; what lies after the book's end is not filled in), and
the share of them inside their channel's interval ``first_order_margin + [clv_lower, clv_upper]``
of :func:`serving.lifetime.new_customer_curves` for their day. Prints the coverage, the shares
below and above, and the coverage of the few whose whole cap lies within the book.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def coverage(work: Path, seed: int) -> dict:
    """The cohort of ``seed`` against its new-customer intervals (module docstring)."""
    import bench_lifetime as B

    from features.synthetic import read_book
    from serving.lifetime import new_customer_curves
    from serving.scoring import champion_clv_config
    from training import registry

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / f'mlflow-{seed}' / 'mlflow.db'}"
    champion = registry.load_champion()
    clv = champion_clv_config(champion)
    H, K = champion.horizon_days, clv.lifetime_horizons
    book = read_book(work / f"book-{seed}")
    ids, days, channel, real, discount = B.new_cohort(
        book, horizon_days=H, n_horizons=K, annual_discount_rate=clv.annual_discount_rate
    )
    realised = clv.gross_margin * real @ discount
    whole_cap = (pd.to_datetime(days) + pd.Timedelta(days=H * K)) <= pd.Timestamp(B.END)
    lower, upper = np.zeros(len(ids)), np.zeros(len(ids))
    for day in np.unique(days):
        rows = np.flatnonzero(days == day)
        frame = new_customer_curves(champion, sorted(set(channel[rows])), acquired_at=pd.Timestamp(day), clv=clv)
        first = frame["first_order_margin"]
        lower[rows] = (first + frame["clv_lower"]).reindex(channel[rows]).to_numpy()
        upper[rows] = (first + frame["clv_upper"]).reindex(channel[rows]).to_numpy()
    inside = (realised >= lower - 1e-9) & (realised <= upper + 1e-9)
    return {"seed": seed, "customers": len(ids), "coverage": float(inside.mean()),
            "below": float(np.mean(realised < lower - 1e-9)), "above": float(np.mean(realised > upper + 1e-9)),
            "whole_cap_customers": int(whole_cap.sum()), "whole_cap_coverage": float(inside[whole_cap].mean()),
            "basis": str(frame["basis"].iloc[0])}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for seed in (int(s) for s in argv[1].split(",")):
        r = coverage(Path(argv[0]), seed)
        print(f"seed {r['seed']} ({r['basis']}): {r['customers']} customers, 80 % interval coverage {r['coverage']:.3f} "
              f"(below {r['below']:.3f}, above {r['above']:.3f}); whole cap within the book: "
              f"{r['whole_cap_customers']} customers, {r['whole_cap_coverage']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
