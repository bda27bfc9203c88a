"""Does the fit with the season recover the dropout process it assumes? A simulation check.

Usage::

    .venv/bin/python benchmarks/seasonal_fit_recovery.py [--customers 200000] [--cutoff 2019-06-30]
        [--seeds 7] [--r 0.9 --alpha 2.0 --s 1.2 --beta 48]

Simulates customers of the seasonal Pareto/NBD of :mod:`features.btyd.seasonal_pareto`, counted in
purchase days, and nothing else (no channels, no refunds, no engagement): acquisition days uniform from 2018-01-01 to the
cutoff; per customer a purchase rate lambda ~ Gamma(r, alpha) and a dropout rate
mu ~ Gamma(s, beta) per week; a purchase on each day alive with probability
1 - exp(-lambda/7 * index(month)) (a purchase day, as the fits count them; so the purchase
heterogeneity is not exactly gamma for the heaviest buyers); the lifetime exponential in calendar
time; the indices those of the retail generator's default season, rescaled to mean 1. Then it fits,
on the same customers:

- Pareto/NBD in calendar time (:func:`features.btyd.pareto_nbd.fit_pareto_nbd`), the calendar fit;
- the seasonal likelihood with the true indices (:func:`features.btyd.seasonal_pareto.fit_seasonal_pareto_nbd`).

and prints the four parameters of each, and E[mu] = s / beta, beside the truth. On the large
synthetic books of BENCHMARKS.md ("Books of 120,000 customers") the fit with the season put the
tail long when fitted at the end of June; this separates the likelihood from the rest of the book.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lifetime import START  # noqa: E402  (the synthetic protocol's first day)

from features.btyd.pareto_nbd import fit_pareto_nbd  # noqa: E402
from features.btyd.seasonal import SeasonalClock  # noqa: E402
from features.btyd.seasonal_pareto import SeasonalHistory, fit_seasonal_pareto_nbd  # noqa: E402
from features.synthetic.retail import SyntheticConfig  # noqa: E402

#: The retail generator's default season.
SEASON = SyntheticConfig().seasonality


def simulate(n: int, cutoff: str, seed: int, r: float, alpha: float, s: float, beta: float) -> SeasonalHistory:
    """``n`` customers' purchase days to ``cutoff`` (module docstring), as the seasonal fit reads them."""
    rng = np.random.default_rng(seed)
    index = np.asarray(SEASON) / np.mean(SEASON)
    days = np.arange(np.datetime64(START), np.datetime64(cutoff) + 1)
    season_of_day = index[days.astype("datetime64[M]").astype(int) % 12]
    acquired = rng.integers(0, len(days), n)
    lam = rng.gamma(r, 1 / alpha, n) / 7.0
    mu = rng.gamma(s, 1 / beta, n) / 7.0
    dropout = acquired + rng.exponential(1 / mu)
    repeat, last = np.zeros(n), acquired.copy()
    for d in range(len(days)):
        alive = np.flatnonzero((acquired < d) & (dropout > d))
        bought = alive[rng.random(alive.size) < -np.expm1(-lam[alive] * season_of_day[d])]
        repeat[bought] += 1
        last[bought] = d
    epoch = int((np.datetime64(START) - np.datetime64("1970-01-01")).astype(int))
    return SeasonalHistory(frequency=repeat, first_day=(acquired + epoch).astype(np.int64),
                           last_day=(last + epoch).astype(np.int64),
                           cutoff_day=np.full(n, len(days) - 1 + epoch, dtype=np.int64))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--cutoff", default="2019-06-30")
    parser.add_argument("--seeds", default="7")
    for name, default in (("r", 0.9), ("alpha", 2.0), ("s", 1.2), ("beta", 48.0)):
        parser.add_argument(f"--{name}", type=float, default=default)
    args = parser.parse_args(argv)
    print("| seed | fit | r | alpha | s | beta | E[mu] a week |\n| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| | truth | {args.r} | {args.alpha} | {args.s} | {args.beta} | {args.s / args.beta:.5f} |")
    for seed in (int(v) for v in args.seeds.split(",")):
        h = simulate(args.customers, args.cutoff, seed, args.r, args.alpha, args.s, args.beta)
        x, t_x, big_t = h.frequency, (h.last_day - h.first_day) / 7.0, (h.cutoff_day - h.first_day) / 7.0
        calendar = fit_pareto_nbd(x, t_x, big_t)
        seasonal = fit_seasonal_pareto_nbd(h, SeasonalClock(SEASON), time_unit_days=7.0, start=calendar)
        for name, p in (("calendar (Pareto/NBD)", calendar), ("seasonal, true indices", seasonal)):
            print(f"| {seed} | {name} | {p.r:.3f} | {p.alpha:.3f} | {p.s:.3f} | {p.beta:.2f} | {p.s / p.beta:.5f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
