"""The classic BTYD diagnostics: what users of lifetimes and pymc-marketing look for beside the metrics.

Pure functions of the fitted BG/NBD parameters and the history; the figures are in
:mod:`training.plots`, and a training run logs both (tables and plots) as MLflow artifacts.

- :func:`frequency_recency_matrix`: expected purchases in the next t, or P(alive), over a grid of
  frequency x recency for customers observed for T (Fader, Hardie and Lee 2005, the "iso-value"
  view; lifetimes' ``plot_frequency_recency_matrix`` / ``plot_probability_alive_matrix``);
- :func:`calibration_holdout_table`: mean predicted vs actual purchases in a holdout window per
  calibration frequency (lifetimes' ``plot_calibration_purchases_vs_holdout_purchases``);
- :func:`transaction_tracking`: the population's actual vs expected repeat purchase days per period,
  incremental and cumulative, over calibration and holdout (Fader, Hardie and Lee 2005, fig. 3 and 4;
  lifetimes' ``plot_cumulative_transactions`` / ``plot_incremental_transactions``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.btyd import (
    BGNBDParams,
    bgnbd_expected_purchases,
    bgnbd_expected_purchases_new,
    bgnbd_probability_alive,
)
from features.dates import parse_cutoff
from features.history import isin_ids

__all__ = ["TABLES", "calibration_holdout_table", "frequency_recency_matrix", "read_table", "transaction_tracking"]

#: The diagnostic tables a training run logs as ``tables/<name>.csv`` (:func:`training.pipeline.train`):
#: the frequency x recency matrices of expected purchase days and of P(alive), the calibration vs
#: holdout table and the tracking table.
TABLES = (
    "btyd_frequency_recency_expected",
    "btyd_frequency_recency_alive",
    "btyd_calibration_holdout",
    "btyd_tracking",
)


def read_table(name: str, path) -> pd.DataFrame:
    """One of :data:`TABLES` read back from its CSV, with the index and column types it was written with.

    Parameters
    ----------
    name : str
        One of :data:`TABLES`.
    path : path-like
        The CSV (written with its index).

    Returns
    -------
    DataFrame
        Frequency x recency matrices: index ``frequency`` (int), columns recency (float, time
        units); the calibration table: index ``calibration_frequency`` (str); tracking: one row per
        period, ``period_start`` a date and ``holdout`` bool.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`TABLES`.
    """
    if name not in TABLES:
        raise ValueError(f"read_table: name must be one of {TABLES}, got {name!r}")
    frame = pd.read_csv(path, index_col=0)
    if name.startswith("btyd_frequency_recency"):
        frame.columns = pd.Index(frame.columns.astype(float), name="recency")
    elif name == "btyd_calibration_holdout":
        frame.index = frame.index.astype(str)
    else:
        frame["period_start"] = pd.to_datetime(frame["period_start"]).dt.date
        frame["holdout"] = frame["holdout"].astype(bool)
    return frame


def frequency_recency_matrix(
    params: BGNBDParams, *, T: float, max_frequency: int, t: float | None = None, n_recency: int = 21
) -> pd.DataFrame:
    """Expected purchases in the next ``t`` (or P(alive) when ``t`` is None) over a frequency x recency grid.

    Parameters
    ----------
    params : BGNBDParams
    T : float
        Age of the customers of the grid (first purchase to cutoff), in the time unit of ``params``.
    max_frequency : int
        Rows are frequency x = 0..max_frequency (repeat purchase days).
    t : float, optional
        Horizon of the expected purchases, in time units; ``None`` gives P(alive).
    n_recency : int
        Columns: recency t_x from 0 to T in ``n_recency`` steps (t_x is 0 for x = 0: that row is
        constant).

    Returns
    -------
    DataFrame
        Shape (max_frequency + 1, n_recency), index ``frequency``, columns ``recency`` (time units).

    Raises
    ------
    ValueError
        If ``T`` is not > 0 or ``max_frequency`` < 0.
    """
    if not T > 0 or max_frequency < 0:
        raise ValueError(f"frequency_recency_matrix: rule 'T > 0 and max_frequency >= 0': got T={T}, {max_frequency}")
    frequency = np.arange(max_frequency + 1, dtype=float)
    recency = np.linspace(0.0, T, n_recency)
    x, tx = np.meshgrid(frequency, recency, indexing="ij")
    tx = np.where(x == 0, 0.0, tx)  # no repeat purchase: t_x is 0 by definition
    big_t = np.full(x.size, float(T))
    if t is None:
        values = bgnbd_probability_alive(params, x.ravel(), tx.ravel(), big_t)
    else:
        values = bgnbd_expected_purchases(params, t, x.ravel(), tx.ravel(), big_t)
    return pd.DataFrame(
        values.reshape(x.shape),
        index=pd.Index(frequency.astype(int), name="frequency"),
        columns=pd.Index(np.round(recency, 2), name="recency"),
    )


def calibration_holdout_table(
    summary: pd.DataFrame, holdout_purchase_days: pd.Series, params: BGNBDParams, *, t: float, max_frequency: int = 7
) -> pd.DataFrame:
    """Mean actual and predicted purchase days in the holdout per calibration frequency.

    Parameters
    ----------
    summary : DataFrame
        BTYD summary at the cutoff (:func:`features.btyd.summary_from_transactions`), indexed by
        ``customer_id``, columns ``frequency``, ``recency``, ``T`` in the time unit of ``params``.
    holdout_purchase_days : Series
        Purchase days of each customer in the holdout window (the ``purchase_days`` label), same index.
    params : BGNBDParams
    t : float
        Length of the holdout window, in time units.
    max_frequency : int
        Calibration frequencies above it are pooled in the last row (``"7+"`` by default).

    Returns
    -------
    DataFrame
        Indexed by ``calibration_frequency`` (``"0"`` .. ``"7+"``), columns ``customers``, ``actual``
        (mean holdout purchase days), ``predicted`` (mean BG/NBD expectation).

    Raises
    ------
    ValueError
        If the two inputs do not cover the same customers.
    """
    if not summary.index.equals(holdout_purchase_days.index):
        raise ValueError("calibration_holdout_table: summary and holdout purchase days must share one customer index")
    predicted = bgnbd_expected_purchases(params, t, summary["frequency"], summary["recency"], summary["T"])
    bucket = np.minimum(summary["frequency"].to_numpy(dtype=int), max_frequency)
    labels = [str(k) for k in range(max_frequency)] + [f"{max_frequency}+"]
    frame = pd.DataFrame(
        {"bucket": bucket, "actual": holdout_purchase_days.to_numpy(float), "predicted": predicted}
    ).groupby("bucket")
    out = pd.DataFrame({"customers": frame.size(), "actual": frame["actual"].mean(), "predicted": frame["predicted"].mean()})
    out = out.reindex(range(max_frequency + 1))
    out["customers"] = out["customers"].fillna(0).astype(np.int64)
    out.index = pd.Index(labels, name="calibration_frequency")
    return out


def transaction_tracking(
    transactions: pd.DataFrame,
    params: BGNBDParams,
    *,
    cutoff,
    end,
    time_unit_days: float,
    period_days: int = 7,
) -> pd.DataFrame:
    """Actual vs expected repeat purchase days of the whole population per period, through calibration and holdout.

    A customer whose first purchase is on day s_i contributes E[X(t − s_i)] expected repeat purchase
    days by day t (eq. 9 of Fader, Hardie and Lee 2005, the unconditional expectation of a new
    customer, :func:`features.btyd.bgnbd_expected_purchases_new`); the expectation uses only
    ``params`` (fitted up to the cutoff) and the first-purchase days, so after the cutoff it is a
    forecast of the population's repeat purchases, including those of customers who had not yet
    bought by then (lifetimes' tracking plots do the same). Only customers whose first purchase is
    on or before the cutoff are counted.

    Parameters
    ----------
    transactions : DataFrame
        ``customer_id``, ``timestamp`` (naive UTC), ``amount``; purchases are ``amount >= 0``.
    params : BGNBDParams
        Fitted on the history up to ``cutoff``, in ``time_unit_days`` units.
    cutoff, end : date-like
        Last day of calibration; last day tracked.
    time_unit_days : float
        Days per time unit of ``params``.
    period_days : int
        Length of a period (7 = weeks).

    Returns
    -------
    DataFrame
        One row per period from the first purchase day: ``period_start`` (date), ``actual`` and
        ``expected`` repeat purchase days in the period, ``actual_cumulative``,
        ``expected_cumulative``, and ``holdout`` (True for periods after the cutoff).
    """
    cutoff_day = pd.Timestamp(parse_cutoff(cutoff))
    end_day = pd.Timestamp(parse_cutoff(end))
    purchases = transactions.loc[transactions["amount"] >= 0, ["customer_id", "timestamp"]]
    days = purchases.assign(day=purchases["timestamp"].dt.normalize()).drop_duplicates(["customer_id", "day"])
    first = days.groupby("customer_id")["day"].min()
    first = first[first <= cutoff_day]
    days = days[isin_ids(days["customer_id"], first.index) & (days["day"] <= end_day).to_numpy()]
    start = first.min()
    n_periods = int((end_day - start).days // period_days) + 1
    bounds = start + pd.to_timedelta(np.arange(n_periods + 1) * period_days, unit="D")
    # Actual repeat purchase days: every purchase day but each customer's first.
    repeat_days = days.loc[days["day"] > days["customer_id"].map(first), "day"]
    period = ((repeat_days - start).dt.days // period_days).to_numpy()
    actual = np.bincount(period[period < n_periods], minlength=n_periods).astype(float)
    # Expected: sum over first-purchase days (customers grouped by that day) of E[X(age)] at each bound.
    cohort = first.value_counts()
    ages = ((bounds.to_numpy()[None, :] - cohort.index.to_numpy()[:, None]) / pd.Timedelta(days=1)).astype(float)
    ages = np.clip(ages, 0.0, None) / time_unit_days
    expected_at = (bgnbd_expected_purchases_new(params, ages) * cohort.to_numpy()[:, None]).sum(axis=0)
    expected = np.diff(expected_at)
    return pd.DataFrame(
        {
            "period_start": bounds[:-1].date,
            "actual": actual,
            "expected": expected,
            "actual_cumulative": np.cumsum(actual),
            "expected_cumulative": np.cumsum(expected),
            "holdout": bounds[:-1] > cutoff_day,
        }
    )
