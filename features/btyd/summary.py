"""The BTYD summary of each customer: x, t_x, T and the mean repeat purchase-day value.

One computation, from the per-day arrays of :class:`features.history.History`, serves the BTYD
feature family, the baselines and the finance forecast, so they cannot disagree about a customer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contract import Tables
from features.dates import parse_cutoff
from features.history import History, prepare_history

__all__ = ["BTYDSummary", "btyd_summary", "summary_from_transactions"]


@dataclass(frozen=True)
class BTYDSummary:
    """BTYD summary arrays of the customers of one history, aligned with ``History.ids``.

    Attributes
    ----------
    frequency : ndarray of float
        x, repeat purchase days (distinct purchase days minus one); with ``count="orders"``, repeat
        orders (purchase transactions minus one).
    recency : ndarray of float
        t_x, first to last purchase day, in time units.
    T : ndarray of float
        First purchase day to the cutoff day (its start), in time units.
    monetary_value : ndarray of float
        Mean value of the repeat purchase days, refunds excluded; 0 when x = 0. With
        ``count="orders"``, of the repeat orders (the first purchase day's value split evenly over
        its orders, the first of them left out).
    time_unit_days : float
        Days per time unit.
    """

    frequency: np.ndarray
    recency: np.ndarray
    T: np.ndarray
    monetary_value: np.ndarray
    time_unit_days: float


def check_count(count: str) -> None:
    """Raise ValueError unless ``count`` is ``"purchase_days"`` or ``"orders"`` (what a purchase is)."""
    if count not in ("purchase_days", "orders"):
        raise ValueError(f"count: rule 'purchase_days or orders': got {count!r}")


def btyd_summary(h: History, time_unit_days: float, *, count: str = "purchase_days") -> BTYDSummary:
    """BTYD summary of every customer of ``h`` (conventions of :func:`summary_from_transactions`).

    Parameters
    ----------
    h : History
    time_unit_days : float
        Days per time unit of ``recency`` and ``T``.
    count : {"purchase_days", "orders"}
        What a purchase is: a purchase day (the convention of the published fits, same-day
        purchases merged) or each purchase transaction (a book whose orders on one day are
        separate purchases; recency and T still run between days).

    Raises
    ------
    ValueError
        If ``time_unit_days`` is not > 0, or ``count`` is neither.
    """
    if not time_unit_days > 0:
        raise ValueError(f"time_unit_days: rule '> 0': got {time_unit_days}")
    check_count(count)
    unit = float(time_unit_days)
    frequency = (h.last - h.first).astype(np.float64)
    recency = (h.p_ago[h.first] - h.p_ago[h.last]) / unit
    T = h.p_ago[h.first] / unit
    # Repeat days summed directly (not total minus first) so a large first order costs no precision.
    repeat = np.ones(h.p_key.size, dtype=bool)
    repeat[h.first] = False
    repeat_value = np.bincount(h.p_key[repeat], weights=h.p_value[repeat], minlength=h.n)
    if count == "orders":
        first_orders = h.p_orders[h.first]
        frequency = h.purchase_count - 1.0
        repeat_value = repeat_value + h.p_value[h.first] * (first_orders - 1) / first_orders
    monetary = np.divide(repeat_value, frequency, out=np.zeros(h.n), where=frequency > 0)
    return BTYDSummary(frequency, recency, T, monetary, unit)


def summary_from_transactions(transactions: pd.DataFrame, *, cutoff, time_unit_days: float = 7.0) -> pd.DataFrame:
    """One BTYD summary row per customer as of ``cutoff``.

    Conventions (those of ``lifetimes.utils.summary_data_from_transaction_data`` with ``freq="D"``,
    then divided by ``time_unit_days``; they reproduce the published CDNOW fits):

    - history is every transaction with ``timestamp`` before the end of the ``cutoff`` day;
    - a purchase is a row with ``amount >= 0``; refunds neither make a purchase day nor enter
      ``monetary_value``. Purchases on one calendar day (UTC) are one purchase day, worth their sum;
    - ``frequency`` = purchase days - 1;
    - ``recency`` = (last purchase day - first purchase day) / ``time_unit_days`` (BTYD's t_x);
    - ``T`` = (cutoff day - first purchase day) / ``time_unit_days``: measured to the *start* of the
      cutoff day, so a customer whose first purchase is on the cutoff day has T = 0. (Measuring to
      the end of the cutoff day instead moves the CDNOW fit of ``a`` by 3% off the published value.)
    - ``monetary_value`` = mean value of the repeat purchase days, the first purchase day excluded;
      0 when ``frequency == 0``.

    Customers without a purchase before the end of the cutoff day have no row.

    Parameters
    ----------
    transactions : pandas.DataFrame
        Columns ``customer_id`` (string), ``timestamp`` (datetime64, naive UTC), ``amount`` (float).
    cutoff : date-like
        Last day of history (:func:`features.dates.parse_cutoff`).
    time_unit_days : float, default 7
        Days per time unit of ``recency`` and ``T`` (7 = weeks).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id`` (string, sorted); float columns ``frequency``, ``recency``, ``T``,
        ``monetary_value``. Read T as ``frame["T"]``: ``frame.T`` is the transpose.

    Raises
    ------
    ValueError
        If the cutoff is not a date or ``time_unit_days`` is not > 0.
    """
    columns = ["frequency", "recency", "T", "monetary_value"]
    day = pd.Timestamp(parse_cutoff(cutoff))
    if not time_unit_days > 0:
        raise ValueError(f"time_unit_days: rule '> 0': got {time_unit_days}")
    has_purchase = ((transactions["timestamp"] < day + pd.Timedelta(days=1)) & (transactions["amount"] >= 0)).any()
    if not has_purchase:
        return pd.DataFrame(columns=columns, index=pd.Index([], dtype="str", name="customer_id"), dtype=float)
    h = prepare_history(Tables(transactions=transactions), day)
    s = btyd_summary(h, time_unit_days)
    return pd.DataFrame(
        {"frequency": s.frequency, "recency": s.recency, "T": s.T, "monetary_value": s.monetary_value},
        index=h.ids,
        columns=columns,
    )
