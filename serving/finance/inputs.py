"""What the finance budget reads from the raw tables: per-customer rows and a few aggregates.

:func:`serving.finance.budget.compute_budget` never reads a transaction itself: it reads a
:class:`BudgetInputs`, which :func:`budget_inputs` builds from the tables by pure per-customer
functions (and aggregates that add up). The tables of a part of the book that holds whole customers
(a customer partition on a Dask cluster, :mod:`serving.cluster`) give that part's rows, and
:meth:`BudgetInputs.combine` makes the book's: per-customer rows concatenated in ``customer_id``
order, aggregates summed. So a budget of a book too large for one machine reads its tables on the
workers and only the reductions come back, a few numbers per customer.

What the budget needs, and where it goes:

- the acquisition day of every customer of the budget (the scores', else the first transaction,
  else the scoring date) and the customers acquired by the scoring date that the scores do not
  hold (:func:`features.population.customer_population`), with their channel and CAC: the rows of
  the prepared scores;
- the realised margin per customer and month since acquisition (:func:`serving.finance.ltv.realised_margin`):
  LTV, payback and cohort curves;
- the BTYD summary (x, t_x, T in the scores' time unit) of every customer with a purchase: the
  forecast's BG/NBD fit and each customer's decay;
- the revenue per day of the history (:func:`serving.finance.forecast.revenue_by_day`): the
  seasonality;
- the count of transactions dated before their customer's acquisition: reported, not lost;
- ``customers.referred_by``: the referral credit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.btyd import summary_from_transactions
from features.contract import Tables
from features.dates import parse_cutoff
from features.history import isin_ids
from features.population import KNOWN_KINDS, customer_population
from serving.finance.forecast import revenue_by_day
from serving.finance.ltv import realised_margin

__all__ = ["BudgetInputs", "budget_inputs"]

#: BTYD summary columns the forecast reads (in the scores' time unit).
SUMMARY_COLUMNS = ("frequency", "recency", "T")


@dataclass(frozen=True)
class BudgetInputs:
    """The raw tables as the budget of one scoring reads them (:func:`budget_inputs`).

    Attributes
    ----------
    as_of : date
        Scoring date.
    horizon_days : float
        H, days (the scoring run's): the cost-to-serve windows and the population's engagement window.
    gross_margin, cost_to_serve : float
        m and c of the realised margin (the scoring run's).
    time_unit_days : float
        Days per time unit of ``summary`` (the scoring run's BTYD unit).
    customers : DataFrame
        Indexed by ``customer_id`` (str, sorted): every customer of the budget, those of the scores
        and those acquired by the scoring date that the scores do not hold. Columns ``scored``
        (bool), ``acquired_at`` (``datetime64[ns]``, midnight: the scores' or the population's,
        else the first transaction, else the scoring date), and for the customers not scored
        ``channel`` (str, missing when unknown) and ``acquisition_cost`` (float, NaN when unknown).
    realised : DataFrame
        :func:`serving.finance.ltv.realised_margin` of those customers: ``customer_id``, ``month``,
        ``margin``, sorted by customer and month.
    summary : DataFrame
        ``frequency``, ``recency``, ``T`` (:func:`features.btyd.summary_from_transactions` at the
        scoring date) of every customer with a purchase by then, indexed by ``customer_id`` (sorted).
    revenue : Series
        :func:`serving.finance.forecast.revenue_by_day` of the history.
    before_acquisition : int
        Transactions up to the scoring date dated before their customer's acquisition day.
    referred_by : Series or None
        ``customers.referred_by`` where given, indexed by the referred ``customer_id`` (sorted);
        None when the customers table has no such column.
    """

    as_of: object
    horizon_days: float
    gross_margin: float
    cost_to_serve: float
    time_unit_days: float
    customers: pd.DataFrame
    realised: pd.DataFrame
    summary: pd.DataFrame
    revenue: pd.Series
    before_acquisition: int
    referred_by: pd.Series | None

    @property
    def basis(self) -> tuple:
        """What the inputs depend on beside the tables: scoring date, H, m, c and the BTYD time unit."""
        return (self.as_of, self.horizon_days, self.gross_margin, self.cost_to_serve, self.time_unit_days)

    @classmethod
    def combine(cls, parts: Sequence[BudgetInputs]) -> BudgetInputs:
        """The inputs of the whole book from those of parts that hold whole customers each (no customer in two).

        Per-customer rows are concatenated in ``customer_id`` order, so that they are those of
        :func:`budget_inputs` on the whole book; the revenue per day and the count are summed (the
        revenue in another order than on the whole book: equal up to rounding).

        Raises
        ------
        ValueError
            Without parts, or parts built for other scorings (another :attr:`basis`).
        """
        if not parts:
            raise ValueError("BudgetInputs.combine: no parts")
        first = parts[0]
        other = [p.basis for p in parts if p.basis != first.basis]
        if other:
            raise ValueError(f"BudgetInputs.combine: parts of other scorings: {first.basis} and {other[0]}")
        referred = [p.referred_by for p in parts if p.referred_by is not None]
        revenue = pd.concat([p.revenue for p in parts])
        revenue = revenue.groupby(level=0, sort=True).sum().rename("revenue")
        revenue.index = pd.DatetimeIndex(revenue.index, name="day").as_unit("ns")
        return cls(
            as_of=first.as_of, horizon_days=first.horizon_days, gross_margin=first.gross_margin,
            cost_to_serve=first.cost_to_serve, time_unit_days=first.time_unit_days,
            customers=pd.concat([p.customers for p in parts]).sort_index(kind="stable"),
            realised=pd.concat([p.realised for p in parts], ignore_index=True).sort_values(
                ["customer_id", "month"], kind="stable", ignore_index=True),
            summary=pd.concat([p.summary for p in parts]).sort_index(kind="stable"),
            revenue=revenue,
            before_acquisition=sum(int(p.before_acquisition) for p in parts),
            referred_by=pd.concat(referred).sort_index(kind="stable") if referred else None,
        )  # fmt: skip


def budget_inputs(tables: Tables, scored: pd.DataFrame, run) -> BudgetInputs:
    """The reductions of ``tables`` that the budget of a scoring reads.

    Parameters
    ----------
    tables : Tables
        Raw tables (normalised); the whole book, or a part of it that holds whole customers.
    scored : DataFrame
        ``customer_id`` and ``acquired_at`` of the scores (of the same customers as ``tables``
        when a part: a customer of ``scored`` absent from ``tables`` has no transaction).
    run : serving.scores.ScoringRun
        The scoring's run: ``as_of``, ``horizon_days``, ``clv`` (m and c), ``btyd.time_unit_days``.

    Returns
    -------
    BudgetInputs
    """
    as_of = parse_cutoff(run.as_of)
    day = pd.Timestamp(as_of)
    tx = tables.transactions

    # The customers of the budget: the scored ones, then those known at the scoring date that the scores lack.
    scored_ids = pd.Index(scored["customer_id"].astype("str").to_numpy(), dtype="str", name="customer_id")
    population = customer_population(tables, cutoff=as_of, engagement_days=run.horizon_days)
    known = population[population["kind"].isin(KNOWN_KINDS).to_numpy()]
    missing = known.loc[~isin_ids(known.index, scored_ids)]
    cost = np.full(len(missing), np.nan)
    customers = tables.customers
    if customers is not None and "acquisition_cost" in customers.columns and len(missing):
        by_id = customers.drop_duplicates("customer_id").set_index("customer_id")["acquisition_cost"]
        cost = by_id.reindex(missing.index).to_numpy(dtype=float, na_value=np.nan)
    ids = scored_ids.append(pd.Index(missing.index.astype("str"), dtype="str", name="customer_id"))
    given = np.concatenate([_days(scored["acquired_at"]), _days(missing["acquired_at"])])
    # Contract default: acquisition = first transaction (any, as the scores' own acquired_at); then the scoring date.
    first_tx = tx.groupby(tx["customer_id"].astype("str"), observed=True)["timestamp"].min()
    first = pd.Series(_days(first_tx), index=pd.Index(first_tx.index, dtype="str"))
    acquired = np.where(np.isnat(given), first.reindex(ids).to_numpy(dtype="datetime64[ns]"), given)
    acquired = np.where(np.isnat(acquired), day.to_datetime64(), acquired).astype("datetime64[ns]")
    n_scored = len(scored_ids)
    frame = pd.DataFrame(
        {
            "scored": np.arange(len(ids)) < n_scored,
            "acquired_at": acquired,
            "channel": pd.array([None] * n_scored + list(missing["channel"].to_numpy()), dtype="str"),
            "acquisition_cost": np.concatenate([np.full(n_scored, np.nan), cost]),
        },
        index=ids,
    ).sort_index(kind="stable")

    summary = summary_from_transactions(tx, cutoff=as_of, time_unit_days=run.btyd.time_unit_days)
    summary = summary[list(SUMMARY_COLUMNS)].astype(float)
    summary.index = pd.Index(summary.index.astype("str"), dtype="str", name="customer_id")
    referred_by = None
    if customers is not None and "referred_by" in customers.columns:
        referred_by = customers.set_index(pd.Index(customers["customer_id"].astype("str"), dtype="str", name="customer_id"))
        referred_by = referred_by["referred_by"].dropna().astype("str").sort_index(kind="stable")
    return BudgetInputs(
        as_of=as_of, horizon_days=run.horizon_days, gross_margin=float(run.clv.gross_margin),
        cost_to_serve=float(run.clv.cost_to_serve), time_unit_days=float(run.btyd.time_unit_days),
        customers=frame,
        realised=realised_margin(tx, frame["acquired_at"], day, horizon_days=run.horizon_days, clv=run.clv),
        summary=summary,
        revenue=revenue_by_day(tx, day),
        before_acquisition=_before_acquisition(tx, frame["acquired_at"], day),
        referred_by=referred_by,
    )  # fmt: skip


def _days(values) -> np.ndarray:
    """Dates or datetimes as midnights, ``datetime64[ns]`` (NaT kept)."""
    return pd.to_datetime(pd.Series(values)).dt.normalize().to_numpy(dtype="datetime64[ns]")


def _before_acquisition(transactions: pd.DataFrame, acquired_at: pd.Series, as_of: pd.Timestamp) -> int:
    """Transactions up to the scoring date of the customers of ``acquired_at`` dated before their acquisition day."""
    at = acquired_at.reindex(pd.Index(transactions["customer_id"].astype("str"))).to_numpy(dtype="datetime64[ns]")
    stamps = transactions["timestamp"].to_numpy(dtype="datetime64[ns]")
    end = (as_of + pd.Timedelta(days=1)).to_datetime64()
    return int(((stamps < at) & (stamps < end)).sum())
