"""Prospects: customers known at the cutoff who have not bought yet, scored from their population.

The churn and spend models learnt from buyers (their features are purchase histories); a customer
without a purchase (events only, refunds only, or an acquisition without any activity) has none, and
scoring it with those models would be extrapolation. A prospect is scored instead with the
population's own first-purchase rate:

- **fit** (:func:`fit_prospects`): at origins ``as_of - k H`` (k = 1..``n_origins``, the whole
  label window before the scoring date), every customer without a purchase yet
  (:data:`features.population.PROSPECT_KINDS`) is a trial; it *converts* if it makes a purchase
  (amount >= 0) in the H days after the origin, and its spend in those days is recorded.
- **cells**: the conversion rate per (acquisition channel, engaged), where *engaged* means at least
  one event in the H days up to the origin (engagement) and the channel is the customer's attribute.
  A cell's rate is shrunk towards its engagement class, the class towards the pooled rate, each
  with :attr:`ProspectModel.prior_strength` pseudo-trials, so that a small cell does not swing.
- **predict** (:meth:`ProspectModel.columns`): q = P(first purchase in the next H days) of the
  prospect's cell; ``churn_probability`` = 1 - q (the same definition as for buyers: no purchase in
  the next H days); ``spend_if_active`` = the mean spend of the converters in their first window;
  ``clv_horizon`` = ``clv`` = q (m s - c): the margin of the first horizon only. This is a lower bound
  of a prospect's lifetime value, on purpose: what a converted prospect brings later is scored by
  the buyer models once it has bought, and the rate behind it is one the data showed.
  ``expected_lifetime_days`` = q H, for the same reason. The spend and margin curves hold that
  first horizon and zeros after it; ``p_alive`` is 0 (not a customer until a first purchase); the
  first horizon's spend takes two values (0 with probability 1 - q, s with q), so its central
  interval at level L is exact: each bound is 0 or s (margin: 0 or m s - c) as the tail 1 - L over
  two falls.

No trial at any origin (a book without customers acquired before their first purchase) gives no
model: prospects are then left out of scoring, counted, with that reason
(:class:`serving.scores.LeftOut`).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.contract import Tables
from features.dates import parse_cutoff
from features.history import isin_ids
from features.population import PROSPECT_KINDS, customer_population
from serving import clv as C
from training.config import ClvConfig

__all__ = ["ProspectCell", "ProspectModel", "fit_prospects", "prospect_model", "prospect_trials"]


class ProspectCell(BaseModel):
    """Trials and conversions of prospects of one channel and engagement class."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: str | None
    engaged: bool
    prospects: int = Field(ge=0)
    converted: int = Field(ge=0)


class ProspectModel(BaseModel):
    """First-purchase rates of prospects, fitted on a population (see the module docstring).

    Attributes
    ----------
    horizon_days : int
        H: the conversion window and the engagement window, days.
    origins : tuple of date
        Origins of the trials, newest first.
    prospects, converted : int
        Trials and conversions over all origins and cells.
    spend_if_converted : float
        Mean spend in the conversion window of the converters, currency units (0 without any).
    prior_strength : float
        Pseudo-trials of the shrinkage of a cell towards its class and of a class towards the pool.
    cells : tuple of ProspectCell
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    horizon_days: int = Field(ge=1)
    origins: tuple[date, ...]
    prospects: int = Field(gt=0)
    converted: int = Field(ge=0)
    spend_if_converted: float = Field(allow_inf_nan=False)
    prior_strength: float = Field(10.0, ge=0, allow_inf_nan=False)
    cells: tuple[ProspectCell, ...]

    def conversion(self, channel: np.ndarray, engaged: np.ndarray) -> np.ndarray:
        """P(first purchase in the next H days) per prospect, shape (n,), 0..1.

        ``channel``: object array of str or None (an unknown channel falls back on its class);
        ``engaged``: bool array (an event in the last H days).
        """
        pooled = self.converted / self.prospects
        a = self.prior_strength
        classes, cells = {}, {}
        for flag in (False, True):
            n = sum(c.prospects for c in self.cells if c.engaged == flag)
            k = sum(c.converted for c in self.cells if c.engaged == flag)
            classes[flag] = (k + a * pooled) / (n + a) if n + a > 0 else pooled
        for c in self.cells:
            prior = classes[c.engaged]
            cells[(c.channel, c.engaged)] = (c.converted + a * prior) / (c.prospects + a) if c.prospects + a else prior
        q = [cells.get((ch, bool(e)), classes[bool(e)]) for ch, e in zip(channel, engaged, strict=True)]
        return np.clip(np.asarray(q, dtype=float), 0.0, 1.0)

    def columns(
        self, channel: np.ndarray, engaged: np.ndarray, *, horizon_days: int, clv: ClvConfig,
        interval_level: float = 0.8,
    ) -> dict[str, Any]:
        """Score columns of prospects: the prediction and CLV columns of :data:`serving.scores.SCORE_COLUMNS`.

        Returns ``churn_probability``, ``p_alive`` (0), ``spend_if_active``, ``expected_spend`` with
        ``expected_spend_lower`` / ``_upper``, ``clv_horizon``, ``clv`` (= ``clv_horizon``, see the
        module docstring) with ``clv_lower`` / ``_upper`` and ``expected_lifetime_days``, each an
        array of shape (n,), and ``expected_spend_curve`` / ``expected_margin_curve``, lists of n
        arrays of K = ``clv.lifetime_horizons`` values (the first horizon, then zeros); money in
        currency units. ``interval_level``: the intervals' central level.

        Raises
        ------
        ValueError
            If ``horizon_days`` is not the H the model was fitted with.
        """
        if horizon_days != self.horizon_days:
            raise ValueError(
                f"prospect model: fitted for horizon_days={self.horizon_days}, asked for {horizon_days}"
            )
        q = self.conversion(channel, engaged)
        p = 1.0 - q
        s = np.full(len(q), self.spend_if_converted)
        value = C.horizon_clv(p, s, margin=clv.gross_margin, cost_to_serve=clv.cost_to_serve)
        spend = C.expected_spend(p, s)
        # Quantiles of the two-valued first horizon: the lower tail lands on 0 when P(0) = p covers it.
        tail = (1.0 - interval_level) / 2.0
        low, high = p <= tail, p >= 1.0 - tail  # the lower bound is s / the upper bound is 0
        bought = clv.gross_margin * s - clv.cost_to_serve
        k = clv.lifetime_horizons
        zeros = np.zeros(max(k - 1, 0))
        return {
            "churn_probability": p,
            "p_alive": np.zeros(len(q)),
            "spend_if_active": s,
            "expected_spend": spend,
            "expected_spend_lower": np.where(low, s, 0.0),
            "expected_spend_upper": np.where(high, 0.0, s),
            "clv_horizon": value,
            "clv": np.array(value, dtype=float),
            "clv_lower": np.minimum(np.where(low, bought, 0.0), np.where(high, 0.0, bought)),
            "clv_upper": np.maximum(np.where(low, bought, 0.0), np.where(high, 0.0, bought)),
            "expected_lifetime_days": q * horizon_days,
            "expected_spend_curve": [np.concatenate([[x], zeros]) for x in spend],
            "expected_margin_curve": [np.concatenate([[x], zeros]) for x in value],
        }


def fit_prospects(
    tables: Tables, *, as_of, horizon_days: int, n_origins: int = 4, prior_strength: float = 10.0
) -> ProspectModel | None:
    """Fit the prospects' first-purchase rates on the history before ``as_of`` (module docstring).

    Parameters
    ----------
    tables : Tables
        Contract tables; only rows on or before the ``as_of`` day are read.
    as_of : date-like
        Scoring date; origins are ``as_of - k horizon_days`` days, k = 1..n_origins.
    horizon_days : int
        H, days.
    n_origins : int
        Origins of the trials.
    prior_strength : float
        See :class:`ProspectModel`.

    Returns
    -------
    ProspectModel or None
        None when no origin has a prospect (no evidence for a rate).
    """
    trials = prospect_trials(tables, as_of=as_of, horizon_days=horizon_days, n_origins=n_origins)
    return prospect_model(trials, horizon_days=horizon_days, prior_strength=prior_strength)


#: Columns of :func:`prospect_trials` (index ``customer_id``).
TRIAL_COLUMNS = ("origin", "channel", "engaged", "converted", "spend")


def prospect_trials(tables: Tables, *, as_of, horizon_days: int, n_origins: int = 4) -> pd.DataFrame:
    """Every prospect's trial at each origin ``as_of - k horizon_days`` (k = 1..``n_origins``).

    A pure per-customer function: the trials of a set of whole customers are the rows of those
    customers among the trials of the book, so they can be computed per partition and stacked.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id``, rows ordered by origin (latest first), then as the population
        orders customers; columns ``origin`` (date), ``channel`` (str or None), ``engaged`` (an
        event in the H days up to the origin), ``converted`` (a purchase in the H days after it) and
        ``spend`` (net spend of a converter in those days, currency units; NaN otherwise).
    """
    as_of = pd.Timestamp(parse_cutoff(as_of))
    tx = tables.transactions
    frames = []
    for k in range(1, n_origins + 1):
        origin = as_of - pd.Timedelta(days=k * horizon_days)
        population = customer_population(tables, cutoff=origin, engagement_days=horizon_days)
        prospects = population[population["kind"].isin(PROSPECT_KINDS).to_numpy()]
        if len(prospects) == 0:
            continue
        start, end = origin + pd.Timedelta(days=1), origin + pd.Timedelta(days=1 + horizon_days)
        window = tx.loc[((tx["timestamp"] >= start) & (tx["timestamp"] < end)).to_numpy()]
        window = window.loc[isin_ids(window["customer_id"], prospects.index)]
        bought = window.loc[(window["amount"] >= 0).to_numpy(), "customer_id"].unique()
        converted = isin_ids(prospects.index, bought)
        spend = window.groupby("customer_id", observed=True)["amount"].sum().reindex(prospects.index)
        frames.append(pd.DataFrame(
            {
                "origin": np.full(len(prospects), origin.date(), dtype=object),
                "channel": prospects["channel"].astype(object).where(prospects["channel"].notna(), None).to_numpy(),
                "engaged": prospects["recent_events"].to_numpy() > 0,
                "converted": converted,
                "spend": np.where(converted, spend.to_numpy(dtype=float), np.nan),
            },
            index=prospects.index,
        ))  # fmt: skip
    if not frames:
        empty = {"origin": [], "channel": [], "engaged": np.array([], bool), "converted": np.array([], bool),
                 "spend": np.array([], float)}  # fmt: skip
        return pd.DataFrame(empty, index=pd.Index([], dtype="str", name="customer_id"))
    return pd.concat(frames)


def prospect_model(trials: pd.DataFrame, *, horizon_days: int, prior_strength: float = 10.0) -> ProspectModel | None:
    """The :class:`ProspectModel` of the trials of :func:`prospect_trials` (of a book, or stacked partitions).

    The rates are counts per cell, so the order of the trials does not matter; ``spend_if_converted``
    is the mean over the converters in the order of ``trials``. None without any trial.
    """
    if len(trials) == 0:
        return None
    cells: dict[tuple[Any, bool], list[int]] = {}
    for (channel, engaged), group in trials.groupby(["channel", "engaged"], dropna=False, sort=True):
        key = (None if pd.isna(channel) else str(channel), bool(engaged))
        counts = cells.setdefault(key, [0, 0])
        counts[0] += len(group)
        counts[1] += int(group["converted"].sum())
    spends = trials["spend"].to_numpy(dtype=float)[trials["converted"].to_numpy(dtype=bool)]
    return ProspectModel(
        horizon_days=horizon_days,
        origins=tuple(sorted(set(trials["origin"]), reverse=True)),
        prospects=sum(v[0] for v in cells.values()),
        converted=sum(v[1] for v in cells.values()),
        spend_if_converted=float(np.mean(spends)) if spends.size else 0.0,
        prior_strength=prior_strength,
        cells=tuple(
            ProspectCell(channel=ch, engaged=e, prospects=n, converted=c)
            for (ch, e), (n, c) in sorted(cells.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))
        ),
    )
