"""Observable oracle: the best expected-spend MAE any model can reach from observable data.

Usage::

    .venv/bin/python benchmarks/observable_oracle.py [--book DIR | --customers 20000 --seed 7] \\
        [--cutoff 2024-06-30] [--horizon-days 182] [--limit N | --sample N [--sample-seed 0]] \\
        [--out FILE.parquet] [--json FILE.json]

Issue 5 asks that clvcast's MAE on the synthetic book come within 15% of the MAE of the
generator's oracle (:func:`features.synthetic.oracle_expected_spend`). That oracle is handed the
latent state: each customer's true purchase rate, mean order value, dropout rate and whether the
customer is still alive at the cutoff. A model only sees the tables. This script computes the
*observable oracle*: for every customer known at the cutoff, the posterior mean of the net spend
in the window ``(cutoff, cutoff + H]`` under the generator's own model and priors (by numerical
integration), given only what a model could see at the cutoff:

- the customer's transactions and events up to the end of the cutoff day;
- the customer attributes (acquisition time, channel, region, age);
- the generator's configuration (the priors and every effect), read from the book's
  ``dataset.json`` (``settings.config``), the defaults when the book does not store it.

It integrates over the latent quantities that the tables do not reveal:

- the dropout time ``tau``: prior from the Pareto-II lifetime (gamma-mixed exponential with the
  channel and age effects), on cells of 5 days far from the cutoff, 1 day from 60 days before the
  cutoff to the end of the window, plus one cell "after the window";
- the purchase rate ``lambda``: gamma prior with the channel and region effects, on a 90-point
  log grid fitted to each customer's likelihood;
- the session multiplier (log-normal, 9-point Gauss-Hermite rule) and the email-open probability
  (beta, 24 quantiles).

The likelihood of a (``tau``, ``lambda``) cell combines the repeat purchases (Poisson with the
calendar-month seasonality, up to ``min(tau, cutoff)``), the sessions and email opens (Poisson at
their rates, fading over ``fade_days`` before ``tau`` and down to ``residual_share`` after it),
the support tickets (rising to ``support_boost`` before ``tau``, none after it: ``tau`` is after
the last ticket and the last purchase) and the absence of a ``cancel`` event (a customer with a
cancel before the cutoff has dropped out for sure and is predicted 0). The mean order value gets
its own posterior from the observed purchase amounts (gamma-gamma), and refunds are deducted at
their expected rate as in the oracle. Clicks and acquisition costs carry no information on the
latent quantities beyond the above and are not used. Referral links (a referrer is drawn among
the customers still active, in proportion to the purchase rate) are not used either; on the
seed-7 book they move the MAE by less than 0.05.

Why it is a bound: clvcast, BG/NBD and the oracle all forecast the *expected* window spend, and
among such forecasts made from the tables none can do better than the posterior mean under the
true model; the oracle reaches lower errors only because it is told the latent state. So if the
observable oracle's MAE is itself more than 15% above the oracle's, issue 5's "within 15% of the
oracle" cannot be met by any expected-spend model trained on the tables. (MAE is minimised by the
posterior *median* rather than the mean, so the bound is not strict for MAE; shrinking the
posterior mean to 0 for customers who are likely gone, a crude step towards the median, changes
the MAE by less than 1%.)

Customers and actuals are those of ``clvcast backtest``: every customer with a purchase on or
before the cutoff day, actual = net spend of the window days ``cutoff + 1 .. cutoff + H``
(:func:`training.labels.build_labels`). On the same customers it scores the true oracle and
BG/NBD + Gamma-Gamma fitted on the history up to the cutoff (the backtest's ``btyd`` baseline),
and prints MAE and total predicted, overall and split by the ground-truth state at the cutoff
(alive by tenure: under 90 days, 90 to 365 days, 365 days and more; dropped out).

The loop over customers costs a few milliseconds per customer (single-threaded numpy); ``--limit``
(the first N customers by id) or ``--sample`` (N customers drawn with a fixed seed) shorten it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DAY_NS = 86_400 * 10**9
# Grid sizes of the numerical integration.
N_LAMBDA = 90  # purchase-rate grid points (log-spaced)
N_SESSION = 9  # Gauss-Hermite nodes of the log-normal session multiplier
N_OPEN = 24  # quantile nodes of the beta email-open probability
N_AOV = 400  # mean-order-value grid points (log-spaced, +-3 around the prior mean)
COARSE_CELL_DAYS = 5.0  # dropout cells far before the cutoff
FINE_FROM_DAYS = 60.0  # daily dropout cells from this many days before the cutoff
TENURE_EDGES = (90, 365)
TARGET_RATIO = 1.15  # issue 5: within 15% of the oracle's MAE


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# the book and its generator settings


def synthetic_config(settings: dict):
    """The :class:`~features.synthetic.SyntheticConfig` a book was generated with.

    Parameters
    ----------
    settings : dict
        ``SyntheticBook.settings`` (``dataset.json``'s ``settings``); its ``config`` entry is the
        generator configuration as written by :func:`features.synthetic.write_book`.

    Returns
    -------
    SyntheticConfig
        The stored configuration (lists turned back into tuples, channels into ``ChannelSpec``),
        or the defaults when the settings hold none.

    Raises
    ------
    ValueError
        If the stored configuration has keys the generator does not know.
    """
    from features.synthetic import ChannelSpec, SyntheticConfig

    stored = (settings or {}).get("config")
    if not stored:
        _log("the book stores no generator config: using the SyntheticConfig defaults")
        return SyntheticConfig()
    known = {f.name for f in fields(SyntheticConfig)}
    unknown = sorted(set(stored) - known)
    if unknown:
        raise ValueError(f"the book's generator config has keys SyntheticConfig does not know: {unknown}")
    values = {}
    for name, value in stored.items():
        if name == "channels":
            value = tuple(ChannelSpec(**c) for c in value)
        elif name == "regions":
            value = tuple(tuple(r) for r in value)
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return SyntheticConfig(**values)


def load_book(book_dir: str | None, *, customers: int, seed: int, workdir: Path):
    """The book to score: read from ``book_dir``, or generated as ``clvcast generate`` does.

    Parameters
    ----------
    book_dir : str, optional
        A directory written by :func:`features.synthetic.write_book` (``clvcast generate --out``).
    customers, seed : int
        Size and seed of the book to generate when ``book_dir`` is None (default period and
        configuration, as ``clvcast generate --customers N --seed S``).
    workdir : Path
        Where a generated book is written (then read back like any other book).

    Returns
    -------
    SyntheticBook
    """
    from features.synthetic import generate, read_book, write_book

    if book_dir is None:
        t0 = time.perf_counter()
        book_dir = workdir / "book"
        write_book(generate(customers, seed=seed), book_dir)
        _log(f"generated {customers:,} customers (seed {seed}) into {book_dir} ({time.perf_counter() - t0:.1f} s)")
    return read_book(book_dir)


# --------------------------------------------------------------------------------------------------
# the model: fade profiles, seasonality, per-customer posterior


def _days(timestamps, start: pd.Timestamp) -> np.ndarray:
    """Float days since ``start`` of naive timestamps."""
    ts = np.asarray(pd.DatetimeIndex(timestamps).as_unit("ns").asi8, dtype=np.int64)
    return (ts - start.value) / DAY_NS


@dataclass(frozen=True)
class ObservableModel:
    """The generator's model as a likelihood of the observables, for one cutoff and window.

    Times are float days since the start of the book's period. Build it with :meth:`build`.

    Attributes
    ----------
    cfg : SyntheticConfig
        The generator configuration (priors, effects, fade and support profiles).
    t0, t1 : float
        Start of the window (end of the cutoff day) and its end (``t0 + H``, capped at the end
        of the period).
    season_cum : numpy.ndarray
        Cumulative daily seasonality from the start of the period (``season_cum[d]`` = integral
        over days ``0 .. d``), integrated piecewise linearly by :meth:`season_integral`.
    dropout_grid : numpy.ndarray
        Edges of the dropout-time cells (coarse, then daily, ending at ``t1``).
    session_nodes, session_weights : numpy.ndarray
        Quadrature of the log-normal session multiplier (mean 1).
    open_nodes, open_weights : numpy.ndarray
        Quadrature of the beta email-open probability.
    channels, region_effects : dict
        ``ChannelSpec`` and purchase-rate effect by name.
    """

    cfg: object
    t0: float
    t1: float
    season_cum: np.ndarray
    dropout_grid: np.ndarray
    session_nodes: np.ndarray
    session_weights: np.ndarray
    open_nodes: np.ndarray
    open_weights: np.ndarray
    channels: dict
    region_effects: dict

    @classmethod
    def build(cls, cfg, *, start: pd.Timestamp, period_end: pd.Timestamp, cutoff: pd.Timestamp, horizon_days: int):
        """The model for the window ``(cutoff, cutoff + horizon_days]`` of a book.

        Parameters
        ----------
        cfg : SyntheticConfig
            The book's generator configuration.
        start, period_end : Timestamp
            First and last day of the book's period.
        cutoff : Timestamp
            Last day of history.
        horizon_days : int
            Window length H.

        Returns
        -------
        ObservableModel
        """
        from scipy.stats import beta

        t0 = float((cutoff + pd.Timedelta(days=1) - start).days)
        t1 = min(t0 + horizon_days, float((period_end + pd.Timedelta(days=1) - start).days))
        n_days = int(t1) + 400
        days = np.datetime64(start.date(), "D") + np.arange(n_days)
        season = np.asarray(cfg.seasonality, dtype=float)[days.astype("datetime64[M]").astype(np.int64) % 12]
        grid = np.r_[
            np.arange(0, t0 - FINE_FROM_DAYS, COARSE_CELL_DAYS), np.arange(t0 - FINE_FROM_DAYS, t1, 1.0), t1
        ]
        s = cfg.session_sigma
        x, w = np.polynomial.hermite_e.hermegauss(N_SESSION)
        q = (np.arange(N_OPEN) + 0.5) / N_OPEN
        return cls(
            cfg=cfg,
            t0=t0,
            t1=t1,
            season_cum=np.r_[0, np.cumsum(season)],
            dropout_grid=grid,
            session_nodes=np.exp(-(s**2) / 2 + s * x),
            session_weights=w / w.sum(),
            open_nodes=beta.ppf(q, *cfg.email_open_beta),
            open_weights=np.full(N_OPEN, 1 / N_OPEN),
            channels={c.name: c for c in cfg.channels},
            region_effects={r[0]: r[2] for r in cfg.regions},
        )

    # -- profiles: u = tau - t, the time left until dropout (negative after it)

    def season_integral(self, a, b) -> np.ndarray:
        """Integral of the daily seasonality over ``[a, b]`` (days since the start)."""
        x = np.arange(len(self.season_cum))
        return np.interp(b, x, self.season_cum) - np.interp(a, x, self.season_cum)

    def fade_integral(self, x) -> np.ndarray:
        """Integral over ``u`` in ``[0, x]`` of the session/open rate profile (x may be negative).

        The profile is ``residual_share`` after dropout (u <= 0), ``fade_floor + (1 - fade_floor)
        * (u / fade_days) ** fade_power`` within the fade and 1 before it.
        """
        c = self.cfg
        F, p, f = c.fade_days, c.fade_power, c.fade_floor
        x = np.asarray(x, float)
        xf = np.clip(x, 0, F)
        inside = f * xf + (1 - f) * xf ** (p + 1) / ((p + 1) * F**p)
        return np.where(x <= 0, c.residual_share * x, np.where(x <= F, inside, inside + (x - F)))

    def log_fade(self, u) -> np.ndarray:
        """Log of the session/open rate profile at ``u``."""
        c = self.cfg
        F = c.fade_days
        u = np.asarray(u, float)
        inside = np.log(c.fade_floor + (1 - c.fade_floor) * (np.clip(u, 0, F) / F) ** c.fade_power)
        return np.where(u <= 0, np.log(c.residual_share), np.where(u <= F, inside, 0.0))

    def support_integral(self, x) -> np.ndarray:
        """Integral over ``u`` in ``[0, x]`` of the support-ticket profile (0 for x <= 0).

        The profile is 0 after dropout, ``1 + (support_boost - 1) * (1 - u / fade_days)`` within
        the fade and 1 before it.
        """
        c = self.cfg
        F, k = c.fade_days, c.support_boost - 1
        x = np.asarray(x, float)
        xf = np.clip(x, 0, F)
        inside = (1 + k) * xf - k * xf**2 / (2 * F)
        return np.where(x <= 0, 0.0, np.where(x <= F, inside, inside + (x - F)))

    def log_support(self, u) -> np.ndarray:
        """Log of the support-ticket profile at ``u`` (``-inf`` after dropout)."""
        c = self.cfg
        F = c.fade_days
        u = np.asarray(u, float)
        with np.errstate(divide="ignore"):
            inside = np.log(1 + (c.support_boost - 1) * (1 - np.clip(u, 0, F) / F))
            return np.where(u <= 0, -np.inf, np.where(u <= F, inside, 0.0))

    # -- one customer

    def posterior(
        self,
        *,
        acquired: float,
        channel: str,
        region: str,
        age: float,
        purchase_times: np.ndarray,
        amounts: np.ndarray,
        sessions: np.ndarray,
        opens: np.ndarray,
        tickets: np.ndarray,
    ) -> tuple[float, float, float, float]:
        """Posterior of one customer's window spend given the history up to the cutoff.

        Parameters
        ----------
        acquired : float
            Acquisition time.
        channel, region : str
            Acquisition channel and region (names of the generator's configuration).
        age : float
            Age in years.
        purchase_times : numpy.ndarray
            Times of the purchases (amount >= 0) before ``t0``, sorted; the first is the purchase at
            acquisition.
        amounts : numpy.ndarray
            Their amounts.
        sessions, opens, tickets : numpy.ndarray
            Times of the ``session``, ``email_open`` and ``support_ticket`` events before ``t0``.

        Returns
        -------
        tuple of float
            ``(expected_spend, p_alive, expected_spend_if_alive, expected_order_value)``: posterior
            mean of the net window spend, probability of being alive at ``t0``, mean spend given
            alive, and posterior mean order value (before refunds).
        """
        from scipy.stats import gamma

        cfg, t0, t1 = self.cfg, self.t0, self.t1
        spec = self.channels[channel]
        age_dev = age - cfg.age_mean
        n_repeat = len(purchase_times) - 1
        n_sessions = len(sessions)

        # Dropout cells: tau is after the last purchase and the last support ticket.
        last_seen = max(purchase_times[-1], tickets.max() if len(tickets) else -1, acquired)
        edges = np.r_[last_seen, self.dropout_grid[self.dropout_grid > last_seen]]
        lo, hi = edges[:-1], edges[1:]
        rep = np.r_[(lo + hi) / 2, np.inf]  # the last cell: dropout after the window
        lo = np.r_[lo, edges[-1]]
        hi = np.r_[hi, np.inf]
        finite = np.isfinite(rep)
        rep0 = np.where(finite, rep, 0.0)

        # Prior mass of each cell: gamma-mixed exponential lifetime (Pareto II).
        shape = cfg.dropout_rate_shape
        rate_scale = shape / (cfg.dropout_rate_mean * spec.dropout_effect * np.exp(cfg.age_dropout_effect * age_dev))

        def survival(x):
            return (rate_scale / (rate_scale + np.maximum(x, 0))) ** shape

        mass = survival(lo - acquired) - np.where(np.isinf(hi), 0, survival(np.where(np.isinf(hi), 0, hi) - acquired))

        # Exposures before t0 given tau: purchases (seasonal), sessions/opens (fade), tickets (boost).
        purchase_exposure = self.season_integral(acquired, np.minimum(rep, t0))
        event_exposure = np.where(finite, self.fade_integral(rep0 - acquired) - self.fade_integral(rep0 - t0), t0 - acquired)
        ticket_exposure = np.where(
            finite, self.support_integral(rep0 - acquired) - self.support_integral(rep0 - t0), t0 - acquired
        )
        rep_big = np.where(finite, rep, 1e9)
        times = np.r_[sessions, opens]
        log_fade = self.log_fade(rep_big[:, None] - times[None, :]).sum(1) if len(times) else np.zeros(len(rep))
        log_support = (
            self.log_support(rep_big[:, None] - tickets[None, :]).sum(1) if len(tickets) else np.zeros(len(rep))
        )
        no_cancel = np.where(rep < t0, np.log(1 - cfg.cancel_share), 0.0)

        # Purchase-rate grid around the plausible values, with the gamma prior as log-grid weights.
        prior_shape = cfg.purchase_rate_shape
        prior_scale = cfg.purchase_rate_mean / prior_shape * spec.rate_effect * self.region_effects[region]
        lam_lo = gamma.ppf(1e-4, prior_shape + n_repeat, scale=1 / (1 / prior_scale + purchase_exposure.max())) * 0.5
        lam_hi = (
            gamma.ppf(
                1 - 1e-6,
                prior_shape + n_repeat + n_sessions / cfg.session_per_purchase + 1,
                scale=1 / (1 / prior_scale + max(purchase_exposure.min(), 0.0)),
            )
            * 2
        )
        lam = np.exp(np.linspace(np.log(max(lam_lo, 1e-7)), np.log(lam_hi), N_LAMBDA))
        log_prior = gamma.logpdf(lam, prior_shape, scale=prior_scale) + np.log(lam)

        # Joint likelihood of purchases and sessions over (cell, lambda, session multiplier).
        log_purchases = n_repeat * np.log(lam)[None, :] - lam[None, :] * purchase_exposure[:, None] + log_prior[None, :]
        r = cfg.session_per_purchase * lam[:, None] * self.session_nodes[None, :] + cfg.session_floor_rate
        log_sessions = (
            n_sessions * np.log(r)[None] - r[None] * event_exposure[:, None, None]
            + np.log(self.session_weights)[None, None, :]
        )
        joint = log_purchases[:, :, None] + log_sessions
        top = joint.max(axis=(1, 2), keepdims=True)
        e = np.exp(joint - top)
        Z = e.sum((1, 2))
        M1 = (e * lam[None, :, None]).sum((1, 2))
        log_Z = np.log(Z) + top[:, 0, 0]

        # Email opens, integrated over the open probability.
        open_rate = cfg.email_send_rate * self.open_nodes
        log_opens = len(opens) * np.log(open_rate)[None] - open_rate[None] * event_exposure[:, None]
        top_o = log_opens.max(1, keepdims=True)
        log_Z_opens = np.log((np.exp(log_opens - top_o) * self.open_weights).sum(1)) + top_o[:, 0]

        with np.errstate(divide="ignore"):
            log_w = (
                np.log(mass) + log_Z + log_Z_opens + log_fade + log_support
                - ticket_exposure * cfg.support_rate + no_cancel
            )
        log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
        W = np.exp(log_w - log_w.max())
        W /= W.sum()

        # Window spend: E[lambda | cell] * seasonal exposure of the window up to tau.
        mean_lam = M1 / Z
        window = np.where(finite, self.season_integral(t0, np.clip(rep0, t0, t1)), self.season_integral(t0, t1))
        p_alive = W[rep > t0].sum()
        rate_exposure = (W * mean_lam * window).sum()
        rate_exposure_alive = (W * mean_lam * window)[rep > t0].sum() / max(p_alive, 1e-300)

        # Mean order value: gamma prior, gamma order values around it.
        k = cfg.order_value_heterogeneity_shape
        prior_aov = cfg.order_value_mean * spec.spend_effect * np.exp(cfg.age_spend_effect * age_dev)
        grid = prior_aov * np.exp(np.linspace(-3, 3, N_AOV))
        v = cfg.order_value_shape
        log_aov = (
            gamma.logpdf(grid, k, scale=prior_aov / k) + np.log(grid)
            - v * len(amounts) * np.log(grid) - v * amounts.sum() / grid
        )
        wa = np.exp(log_aov - log_aov.max())
        mean_aov = (wa * grid).sum() / wa.sum()

        net = 1 - cfg.refund_probability * cfg.expected_refund_fraction
        return rate_exposure * mean_aov * net, p_alive, rate_exposure_alive * mean_aov * net, mean_aov


def _split(ids: pd.Series, index: pd.Index, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows grouped by customer: row order, group bounds, and the arrays in that order.

    Returns ``(bounds, *sorted_arrays)`` where the rows of ``index[i]`` are
    ``sorted_arrays[..][bounds[i]:bounds[i + 1]]``; rows of other customers are dropped.
    """
    code = index.get_indexer(ids)
    keep = code >= 0
    order = np.argsort(code[keep], kind="stable")
    code = code[keep][order]
    bounds = np.searchsorted(code, np.arange(len(index) + 1))
    return (bounds, *(a[keep][order] for a in arrays))


def observable_oracle(book, cfg, *, cutoff, horizon_days: int, customers: pd.Index, progress: bool = True) -> pd.DataFrame:
    """Posterior mean window spend of ``customers`` from their observables up to ``cutoff``.

    Parameters
    ----------
    book : SyntheticBook
        The book (its tables are read up to the end of the cutoff day only; ``truth`` is not read).
    cfg : SyntheticConfig
        The configuration the book was generated with.
    cutoff : date-like
        Last day of history.
    horizon_days : int
        Window length H: the window is ``(cutoff, cutoff + H]``.
    customers : pandas.Index
        Customers to score; each needs a purchase on or before the cutoff day.
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id`` like ``customers``: ``obs_spend`` (posterior mean net window
        spend), ``p_alive`` (posterior probability of being alive at the end of the cutoff day),
        ``obs_spend_if_alive`` and ``eaov`` (posterior mean order value; NaN with a cancel before
        the cutoff, where the prediction is 0 for sure).
    """
    from tqdm.auto import tqdm

    settings = book.settings or {}
    start = pd.Timestamp(settings.get("start", book.truth.attrs.get("period_start")))
    period_end = pd.Timestamp(settings.get("end", book.truth.attrs.get("period_end")))
    cutoff = pd.Timestamp(cutoff).normalize()
    model = ObservableModel.build(cfg, start=start, period_end=period_end, cutoff=cutoff, horizon_days=horizon_days)
    end = start + pd.Timedelta(days=model.t0)

    tables = book.tables
    tx = tables.transactions.loc[(tables.transactions["timestamp"] < end) & (tables.transactions["amount"] >= 0)]
    ev = tables.events.loc[tables.events["timestamp"] < end]
    tx_bounds, tx_t, tx_amount = _split(
        tx["customer_id"], customers, _days(tx["timestamp"], start), tx["amount"].to_numpy(float)
    )
    etype = ev["event_type"].astype(str).to_numpy()
    ev_bounds, ev_t, ev_type = _split(ev["customer_id"], customers, _days(ev["timestamp"], start), etype)
    attrs = tables.customers.set_index("customer_id").reindex(customers)
    if attrs["acquired_at"].isna().any():
        raise ValueError("some customers to score are missing from the customers table")
    acquired = _days(attrs["acquired_at"], start)
    channel = attrs["channel"].astype(str).to_numpy()
    region = attrs["region"].astype(str).to_numpy()
    age = attrs["age"].to_numpy(float)

    rows = np.full((len(customers), 4), np.nan)
    for i in tqdm(range(len(customers)), desc="observable oracle", unit="customer", disable=not progress, mininterval=2):
        e0, e1 = ev_bounds[i], ev_bounds[i + 1]
        kind = ev_type[e0:e1]
        t_ev = ev_t[e0:e1]
        if (kind == "cancel").any():
            rows[i] = (0.0, 0.0, 0.0, np.nan)
            continue
        p0, p1 = tx_bounds[i], tx_bounds[i + 1]
        if p1 == p0:
            raise ValueError(f"customer {customers[i]} has no purchase on or before {cutoff.date()}")
        t_p = tx_t[p0:p1]
        sort = np.argsort(t_p, kind="stable")
        rows[i] = model.posterior(
            acquired=float(acquired[i]),
            channel=channel[i],
            region=region[i],
            age=float(age[i]),
            purchase_times=t_p[sort],
            amounts=tx_amount[p0:p1][sort],
            sessions=t_ev[kind == "session"],
            opens=t_ev[kind == "email_open"],
            tickets=t_ev[kind == "support_ticket"],
        )
    return pd.DataFrame(rows, index=customers, columns=["obs_spend", "p_alive", "obs_spend_if_alive", "eaov"])


# --------------------------------------------------------------------------------------------------
# scoring


def select_customers(index: pd.Index, *, limit: int | None, sample: int | None, sample_seed: int) -> pd.Index:
    """The customers to score: all, the first ``limit`` by id, or ``sample`` drawn with a seed.

    Parameters
    ----------
    index : pandas.Index
        Every customer of the backtest (sorted ids).
    limit : int, optional
        Keep the first ``limit`` customers (the earliest acquired: ids follow acquisition order).
    sample : int, optional
        Keep ``sample`` customers drawn without replacement by ``numpy.random.default_rng(sample_seed)``.
    sample_seed : int
        Seed of the sample.

    Returns
    -------
    pandas.Index
        Sorted ids.
    """
    if limit is not None:
        return index[:limit]
    if sample is not None and sample < len(index):
        pick = np.random.default_rng(sample_seed).choice(len(index), size=sample, replace=False)
        return index[np.sort(pick)]
    return index


def btyd_spend(book, *, cutoff, horizon_days: int, customers: pd.Index) -> pd.Series:
    """BG/NBD + Gamma-Gamma expected window spend, exactly as ``clvcast backtest``'s ``btyd``.

    Fitted on the history up to the end of the cutoff day of every customer (default clvcast
    configuration), predicted for ``customers``.

    Parameters
    ----------
    book : SyntheticBook
    cutoff : date-like
    horizon_days : int
    customers : pandas.Index

    Returns
    -------
    pandas.Series
        Expected spend indexed like ``customers``.
    """
    from features.build import fit_btyd
    from training.baselines import btyd_forecast
    from training.config import load_config
    from features.dates import history_until

    config = load_config(horizon_days=horizon_days)
    cutoff = pd.Timestamp(cutoff).normalize()
    history = history_until(book.tables, cutoff)
    fitted = fit_btyd(history, cutoff=cutoff.date(), config=config.features)
    forecast = btyd_forecast(
        history.transactions,
        cutoff=cutoff,
        horizon_days=horizon_days,
        customers=customers,
        time_unit_days=config.features.btyd_time_unit_days,
        fitted=(fitted.bgnbd, fitted.gamma_gamma),
    )
    return forecast.expected_spend


def segments(truth: pd.DataFrame, customers: pd.Index, cutoff) -> dict[str, np.ndarray]:
    """Masks of the table's columns: all, alive at the cutoff (by tenure) and dropped out.

    Alive = the true dropout time is after the end of the cutoff day (as the oracle decides);
    tenure = days from the acquisition day to the cutoff day (the ``days_since_acquisition``
    feature).
    """
    cutoff = pd.Timestamp(cutoff).normalize()
    t = truth.loc[customers]
    alive = (t["dropout_at"] > cutoff + pd.Timedelta(days=1)).to_numpy()
    tenure = (cutoff - t["acquired_at"].dt.floor("D")).dt.days.to_numpy()
    a, b = TENURE_EDGES
    return {
        "all": np.ones(len(customers), bool),
        "alive": alive,
        f"alive, <{a} d": alive & (tenure < a),
        f"alive, {a}-{b} d": alive & (tenure >= a) & (tenure < b),
        f"alive, >={b} d": alive & (tenure >= b),
        "dropped out": ~alive,
    }


def score(actual: np.ndarray, predictions: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict:
    """MAE and total predicted of each prediction on each segment.

    Returns
    -------
    dict
        ``{model: {segment: {"mae": x, "total": y}}}`` plus ``{"actual": {segment: {"n": n, "total": y}}}``.
    """
    from training import metrics as M

    out = {"actual": {s: {"n": int(m.sum()), "total": float(actual[m].sum())} for s, m in masks.items()}}
    for name, p in predictions.items():
        out[name] = {
            s: {"mae": M.mae(actual[m], p[m]) if m.any() else float("nan"), "total": float(p[m].sum())}
            for s, m in masks.items()
        }
    return out


def format_table(title: str, scores: dict, labels: dict[str, str]) -> str:
    """Markdown table: one row per model, MAE per segment, then the total predicted.

    Parameters
    ----------
    title : str
    scores : dict
        As returned by :func:`score`.
    labels : dict
        Display name of each model key.
    """
    seg = list(scores["actual"])
    actual = scores["actual"]
    lines = [f"### {title}", ""]
    lines.append("| MAE | " + " | ".join(seg) + " | total predicted |")
    lines.append("| --- |" + " ---: |" * (len(seg) + 1))
    lines.append("| customers | " + " | ".join(f"{actual[s]['n']:,}" for s in seg) + " | – |")
    lines.append(
        "| actual spend | " + " | ".join(f"{actual[s]['total']:,.0f}" for s in seg)
        + f" | {actual['all']['total']:,.0f} |"
    )
    for key, name in labels.items():
        row = scores[key]
        total = row["all"]["total"]
        lines.append(
            f"| {name} | " + " | ".join(f"{row[s]['mae']:.2f}" for s in seg)
            + f" | {total:,.0f} ({total / actual['all']['total'] - 1:+.1%}) |"
        )
    return "\n".join(lines)


def _count(value) -> str:
    """``12,345`` for a number, ``?`` when the book does not say."""
    return f"{value:,}" if isinstance(value, int) else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--book", default=None, help="a book written by `clvcast generate` (default: generate one)")
    src.add_argument("--customers", type=int, default=20_000, help="size of the generated book")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated book")
    parser.add_argument("--cutoff", default="2024-06-30")
    parser.add_argument("--horizon-days", type=int, default=182)
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--limit", type=int, default=None, help="score only the first N customers by id")
    pick.add_argument("--sample", type=int, default=None, help="score N customers drawn with --sample-seed")
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the per-customer predictions here (Parquet)")
    parser.add_argument("--json", dest="json_out", default=None, help="also write the scores here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with tempfile.TemporaryDirectory(prefix="observable-oracle-") as tmp:
        return _run(args, Path(tmp))


def _run(args, workdir: Path) -> int:
    from training.labels import build_labels
    from features.synthetic import oracle_expected_spend

    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    book = load_book(args.book, customers=args.customers, seed=args.seed, workdir=workdir)
    cfg = synthetic_config(book.settings)
    settings = book.settings or {}
    cutoff = pd.Timestamp(args.cutoff).normalize()
    timings["load"] = time.perf_counter() - t_start

    t0 = time.perf_counter()
    labels = build_labels(book.tables, cutoff=cutoff.date(), horizon_days=args.horizon_days)
    customers = select_customers(labels.index, limit=args.limit, sample=args.sample, sample_seed=args.sample_seed)
    actual = labels["spend"].reindex(customers).to_numpy(float)
    oracle = oracle_expected_spend(book.truth, cutoff=cutoff, horizon_days=args.horizon_days)
    oracle = oracle.reindex(customers).fillna(0.0).to_numpy(float)
    btyd = btyd_spend(book, cutoff=cutoff, horizon_days=args.horizon_days, customers=customers).to_numpy(float)
    timings["labels, oracle, btyd"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    obs = observable_oracle(
        book, cfg, cutoff=cutoff, horizon_days=args.horizon_days, customers=customers, progress=not args.no_progress
    )
    timings["observable oracle"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    masks = segments(book.truth, customers, cutoff)
    predictions = {"observable": obs["obs_spend"].to_numpy(float), "oracle": oracle, "btyd": btyd}
    scores = score(actual, predictions, masks)
    labels_ = {
        "observable": "observable oracle (posterior mean)",
        "oracle": "oracle (true latent state)",
        "btyd": "BG/NBD + Gamma-Gamma",
    }
    subset = (
        f", first {len(customers):,} of {len(labels):,} customers" if args.limit is not None
        else f", random sample of {len(customers):,} of {len(labels):,} customers (seed {args.sample_seed})"
        if args.sample is not None and len(customers) < len(labels) else ""
    )
    book_name = args.book or "generated"
    title = (
        f"Observable oracle: {_count(settings.get('n_customers'))} customers, seed {settings.get('seed', '?')} "
        f"({book_name}), cutoff {cutoff.date()}, horizon {args.horizon_days} days{subset}"
    )
    obs_mae, oracle_mae = scores["observable"]["all"]["mae"], scores["oracle"]["all"]["mae"]
    ratio = obs_mae / oracle_mae
    per_customer = timings["observable oracle"] / max(len(customers), 1) * 1000
    print(format_table(title, scores, labels_))
    print()
    print(
        f"observable / true oracle MAE: {obs_mae:.2f} / {oracle_mae:.2f} = {ratio:.3f} ({ratio - 1:+.1%}); "
        f"issue 5 asks for MAE <= {TARGET_RATIO:.2f} x oracle = {TARGET_RATIO * oracle_mae:.2f}: "
        + ("reachable from observables" if ratio <= TARGET_RATIO else "out of reach of any model of the tables")
    )
    print(
        f"mean posterior P(alive) {obs['p_alive'].mean():.3f} vs share alive per ground truth "
        f"{masks['alive'].mean():.3f}; cancelled before the cutoff (predicted 0): {int(obs['eaov'].isna().sum()):,}"
    )
    print(
        "timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        + f" ({per_customer:.1f} ms per customer)"
    )

    if args.out:
        out = obs.assign(
            actual=actual, oracle=oracle, btyd=btyd, alive=masks["alive"],
            days_since_acquisition=(cutoff - book.truth.loc[customers, "acquired_at"].dt.floor("D")).dt.days.to_numpy(),
        )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        out.to_parquet(args.out)
    if args.json_out:
        payload = {
            "args": vars(args),
            "book": {k: settings.get(k) for k in ("n_customers", "seed", "start", "end")},
            "customers_scored": int(len(customers)),
            "customers_in_backtest": int(len(labels)),
            "scores": scores,
            "observable_over_oracle_mae": ratio,
            "timings": timings,
        }
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(payload, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
