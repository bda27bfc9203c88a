"""How far can a fit of 18 months of history place the tail? A simulation of the issue-11 protocol.

Usage::

    .venv/bin/python benchmarks/tail_sampling_spread.py [--customers 3700] [--seeds 100,101,...]
        [--fit-cutoff 2019-06-30] [--score-cutoff 2019-12-31] [--horizons 10] [--horizon-days 182]
        [--purchase-days]

Each seed simulates a book of ``--customers`` customers, all acquired by the scoring cutoff (the
scored base), from the very model clvcast fits, the seasonal Pareto/NBD of
:mod:`features.btyd.lifetime` (acquisition days uniform from 2018-01-01 to the scoring cutoff; per customer a purchase rate lambda ~ Gamma(r, alpha) and a dropout rate
mu ~ Gamma(s, beta) per week, the parameters of ``--r --alpha --s --beta``; while alive, a Poisson
number of purchases each day with mean lambda / 7 × the index of the day's month, the retail
generator's default season; the lifetime exponential in calendar time), followed for
``--horizons`` × ``--horizon-days`` days after the scoring cutoff. No channel, no refund, no
engagement, no change of the process over time: nothing the fit does not assume. Then, as the
protocol of ``bench_lifetime.py`` does:

- the process is fitted on the history to ``--fit-cutoff`` with the season in the likelihood and the
  true indices (:func:`features.btyd.seasonal_pareto.fit_seasonal_pareto_nbd`), and as a plain
  Pareto/NBD in calendar time (the calendar fit);
- every customer acquired by ``--score-cutoff`` gets its state at that cutoff
  (:class:`features.btyd.lifetime.DropoutState`), and the base's expected purchases in each
  horizon k are Σ P(alive) × E[purchases in k | alive], under the fitted parameters and under the
  true ones.

Size: the issue's synthetic books spread 20,000 customers over 2018–2024, so the scored base is
far smaller: on seed 2, 3,717 customers acquired by 2019-12-31 and 2,669 by the fit cutoff. Here
``--customers 3700`` is that base; ``--customers 22300`` that of a book of 120,000.

It prints, per book, fitted ÷ realised and true ÷ realised per horizon and over the cap (the
horizons' purchases discounted at 10 % a year as the lifetime CLV discounts them,
:func:`training.curve.discount_per_horizon`; the value of a purchase is the same in the prediction
and the realisation here, so this is the lifetime total's ratio), and over the books the mean and
standard deviation of each ratio, how many books have every horizon within ±10 % of what was
realised, how many have the lifetime total within ±5 %, how many both, and the mean fitted s. The true parameters' row is the noise
of the book alone (realised purchases around their expectation); the fitted rows add the fit's
error, which is what a book of that size lets a fit of this model do at year five. The purchases are counted, so the model holds exactly; with
``--purchase-days`` a day with purchases counts once, both in the history and in what is realised,
as clvcast reads a book (same-day purchases merged) and as :mod:`seasonal_fit_recovery` simulates:
then the model no longer holds for the heaviest buyers, and the true parameters' row shows by how
much.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lifetime import START  # noqa: E402  (the synthetic protocol's first day)
from seasonal_fit_recovery import SEASON  # noqa: E402  (the retail generator's default season)

from features.btyd.gamma_gamma import GammaGammaParams  # noqa: E402
from features.btyd.lifetime import DropoutState, LifetimeParams  # noqa: E402
from features.btyd.pareto_nbd import ParetoNBDParams, fit_pareto_nbd  # noqa: E402
from features.btyd.seasonal import SeasonalClock  # noqa: E402
from features.btyd.seasonal_pareto import SeasonalHistory, fit_seasonal_pareto_nbd, seasonal_pareto_nbd_probability_alive  # noqa: E402
from training.curve import discount_per_horizon  # noqa: E402

EPOCH = np.datetime64("1970-01-01")
#: The value process plays no part in purchase counts; DropoutState needs one.
_ANY_VALUE = GammaGammaParams(p=6.0, q=4.0, v=15.0)


def simulate_book(n, seed, truth: ParetoNBDParams, fit_cutoff: str, score_cutoff: str, horizons: int, horizon_days: int, *, purchase_days: bool = False):
    """One book: (history at ``fit_cutoff``, history at ``score_cutoff``, realised purchases per horizon).

    Returns
    -------
    fit_history : SeasonalHistory
        The customers acquired by ``fit_cutoff``, their repeat purchases to it.
    score_history : SeasonalHistory
        The customers acquired by ``score_cutoff``, to it.
    realised : ndarray, shape (horizons,)
        Purchases of the customers of ``score_history`` in each horizon after ``score_cutoff``.

    With ``purchase_days``, a day with purchases counts one purchase everywhere.
    """
    rng = np.random.default_rng(seed)
    index = SeasonalClock(SEASON).indices
    start, fit_day, score_day = (np.datetime64(d) for d in (START, fit_cutoff, score_cutoff))
    days = np.arange(start, score_day + 1 + horizons * horizon_days)
    season_of_day = index[days.astype("datetime64[M]").astype(int) % 12]
    fit_i, score_i = int((fit_day - start).astype(int)), int((score_day - start).astype(int))
    acquired = rng.integers(0, score_i + 1, n)
    lam = rng.gamma(truth.r, 1 / truth.alpha, n) / 7.0
    mu = rng.gamma(truth.s, 1 / truth.beta, n) / 7.0
    dropout = acquired + rng.exponential(1 / mu)
    repeat, last = np.zeros(n), acquired.copy()
    snapshots, realised = {}, np.zeros(horizons)
    for d in range(len(days)):
        alive = np.flatnonzero((acquired < d) & (dropout > d))
        count = rng.poisson(lam[alive] * season_of_day[d])
        if purchase_days:
            count = np.minimum(count, 1)
        bought = alive[count > 0]
        if d <= score_i:
            repeat[bought] += count[count > 0]
            last[bought] = d
        else:
            realised[(d - score_i - 1) // horizon_days] += count[acquired[alive] <= score_i].sum()
        if d in (fit_i, score_i):
            snapshots[d] = (repeat.copy(), last.copy())
    epoch = int((start - EPOCH).astype(int))

    def history(at: int) -> SeasonalHistory:
        rows = acquired <= at
        x, seen = snapshots[at]
        return SeasonalHistory(frequency=x[rows], first_day=(acquired[rows] + epoch).astype(np.int64),
                               last_day=(seen[rows] + epoch).astype(np.int64),
                               cutoff_day=np.full(int(rows.sum()), at + epoch, dtype=np.int64))  # fmt: skip

    return history(fit_i), history(score_i), realised


def expected_per_horizon(params: ParetoNBDParams, h: SeasonalHistory, fit_clock: str, horizons: int, horizon_days: int) -> np.ndarray:
    """Σ over the customers of P(alive) × E[purchases in each horizon | alive], shape (horizons,)."""
    lifetime = LifetimeParams(pareto=params, gamma_gamma=_ANY_VALUE, seasonality=tuple(SEASON), fit_clock=fit_clock)
    clock, unit = lifetime.clock, lifetime.time_unit_days
    x = np.asarray(h.frequency, dtype=float)
    tx, big_t = (h.last_day - h.first_day) / unit, (h.cutoff_day - h.first_day) / unit
    p_alive = seasonal_pareto_nbd_probability_alive(params, h, clock, time_unit_days=unit) if fit_clock == "seasonal" else None
    state = DropoutState._build(lifetime, x, tx, big_t, np.ones(x.size), clock.elapsed(h.first_day, h.cutoff_day) / unit,
                                h.cutoff_day, p_alive=p_alive)  # fmt: skip
    bounds = np.arange(horizons + 1) * horizon_days
    return state.p_alive @ state.expected_purchases(bounds[:-1], bounds[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3_700, help="the scored base (module docstring, 'Size')")
    parser.add_argument("--seeds", default=",".join(str(s) for s in range(100, 110)))
    parser.add_argument("--fit-cutoff", default="2019-06-30")
    parser.add_argument("--score-cutoff", default="2019-12-31")
    parser.add_argument("--horizons", type=int, default=10)
    parser.add_argument("--horizon-days", type=int, default=182)
    parser.add_argument("--purchase-days", action="store_true", help="a day with purchases counts one (module docstring)")
    for name, default in (("r", 0.9), ("alpha", 2.0), ("s", 1.2), ("beta", 48.0)):
        parser.add_argument(f"--{name}", type=float, default=default)
    args = parser.parse_args(argv)
    truth = ParetoNBDParams(r=args.r, alpha=args.alpha, s=args.s, beta=args.beta)
    clock = SeasonalClock(SEASON)
    k = args.horizons
    discount = (1.0 + discount_per_horizon(args.horizon_days, 0.10)) ** -np.arange(1, k + 1, dtype=float)
    counted = "purchase days" if args.purchase_days else "purchases"
    print(f"customers {args.customers} ({counted} counted), fit at {args.fit_cutoff}, scored at {args.score_cutoff}, {k} horizons of "
          f"{args.horizon_days} days; truth r {truth.r} alpha {truth.alpha} s {truth.s} beta {truth.beta}\n")  # fmt: skip
    print("| seed | fit s / beta | " + " | ".join(f"h{i + 1}" for i in range(k)) + " | lifetime |")
    print("| --- | --- | " + " | ".join("---" for _ in range(k)) + " | --- |")
    ratios = {"truth": [], "seasonal": [], "calendar": []}
    shapes = {"truth": [], "seasonal": [], "calendar": []}
    for seed in (int(v) for v in args.seeds.split(",")):
        t0 = time.perf_counter()
        fit_h, score_h, realised = simulate_book(args.customers, seed, truth, args.fit_cutoff, args.score_cutoff, k, args.horizon_days,
                                                 purchase_days=args.purchase_days)  # fmt: skip
        x, first = fit_h.frequency, fit_h.first_day
        calendar = fit_pareto_nbd(x, (fit_h.last_day - first) / 7.0, (fit_h.cutoff_day - first) / 7.0)
        seasonal = fit_seasonal_pareto_nbd(fit_h, clock, time_unit_days=7.0, start=calendar)
        for name, params, fit_clock in (("truth", truth, "seasonal"), ("seasonal", seasonal, "seasonal"), ("calendar", calendar, "calendar")):
            expected = expected_per_horizon(params, score_h, fit_clock, k, args.horizon_days)
            ratio = np.append(expected / realised, (expected @ discount) / (realised @ discount))
            ratios[name].append(ratio)
            shapes[name].append(params.s)
            fitted = f"{params.s:.3f} / {params.beta:.1f}"
            print(f"| {seed} {name} | {fitted} | " + " | ".join(f"{v:.3f}" for v in ratio) + " |")
        print(f"<!-- seed {seed}: {time.perf_counter() - t0:.0f} s -->", flush=True)
    books = len(ratios["truth"])
    print(f"\nOver {books} books: mean (standard deviation) of predicted ÷ realised; books with every horizon within ±10 %, "
          "with the lifetime total within ±5 %, and with both; the mean fitted s\n")  # fmt: skip
    print("| parameters | " + " | ".join(f"h{i + 1}" for i in range(k)) + " | lifetime | horizons within | lifetime within | both | s |")
    print("| --- | " + " | ".join("---" for _ in range(k + 1)) + " | --- | --- | --- | --- |")
    for name, rows in ratios.items():
        a = np.array(rows)
        horizons_ok = np.all(np.abs(a[:, :k] - 1) <= 0.10, axis=1)
        lifetime_ok = np.abs(a[:, k] - 1) <= 0.05
        horizons_within, lifetime_within, both = int(horizons_ok.sum()), int(lifetime_ok.sum()), int((horizons_ok & lifetime_ok).sum())
        cells = " | ".join(f"{m:.3f} ({s:.3f})" for m, s in zip(a.mean(axis=0), a.std(axis=0, ddof=1) if books > 1 else np.zeros(k + 1)))
        print(f"| {name} | {cells} | {horizons_within} of {books} | {lifetime_within} of {books} | {both} of {books} | {np.mean(shapes[name]):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
