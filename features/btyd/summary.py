"""The BTYD summary of each customer: x, t_x, T and the mean repeat purchase-day value."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["summary_from_transactions"]


def summary_from_transactions(
    transactions: pd.DataFrame, *, cutoff, time_unit_days: float = 7.0
) -> pd.DataFrame:
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
        Last day of history.
    time_unit_days : float, default 7
        Days per time unit of ``recency`` and ``T`` (7 = weeks).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id``; float columns ``frequency``, ``recency``, ``T``, ``monetary_value``.
        Read T as ``frame["T"]``: ``frame.T`` is the transpose.
    """
    if time_unit_days <= 0:
        raise ValueError(f"time_unit_days: rule '> 0': got {time_unit_days}")
    cutoff_day = pd.Timestamp(cutoff)
    if cutoff_day != cutoff_day.normalize():
        raise ValueError(f"cutoff: rule 'a date, not a time of day': got {cutoff!r}")
    columns = ["frequency", "recency", "T", "monetary_value"]
    in_history = (transactions["timestamp"] < cutoff_day + pd.Timedelta(days=1)) & (transactions["amount"] >= 0)
    history = transactions.loc[in_history, ["customer_id", "timestamp", "amount"]]
    days = (
        # Positional (to_numpy) so that a caller's non-unique index cannot misalign the days.
        history.assign(day=history["timestamp"].dt.floor("D").to_numpy())
        .groupby(["customer_id", "day"], sort=True, observed=True)["amount"]
        .sum()
        .reset_index()
    )
    # Days are sorted within each customer: the first row of a customer is the first purchase day,
    # whose value is left out of monetary_value (summed separately rather than subtracted from the
    # total, which would lose precision when the first order is large).
    is_repeat = days["customer_id"].duplicated()
    days["repeat_amount"] = days["amount"].where(is_repeat, 0.0)
    per = days.groupby("customer_id", sort=True, observed=True).agg(
        first=("day", "first"),
        last=("day", "last"),
        n_days=("day", "size"),
        repeat_total=("repeat_amount", "sum"),
    )
    unit = pd.Timedelta(days=time_unit_days)
    frequency = (per["n_days"] - 1).astype(float)
    repeat_value = per["repeat_total"].to_numpy(float)
    freq = frequency.to_numpy()
    monetary = np.divide(repeat_value, freq, out=np.zeros_like(repeat_value), where=freq > 0)
    out = pd.DataFrame(
        {
            "frequency": frequency.to_numpy(),
            "recency": ((per["last"] - per["first"]) / unit).to_numpy(float),
            "T": ((cutoff_day - per["first"]) / unit).to_numpy(float),
            "monetary_value": monetary,
        },
        index=per.index.rename("customer_id"),
        columns=columns,
    )
    return out
