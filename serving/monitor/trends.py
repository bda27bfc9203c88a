"""Trends over the scoring dates: the book and its segments, movement between CLV tiers, segment moves.

Every function takes the customer rows of scorings (one scoring per as_of: the history's
:meth:`~serving.monitor.history.History.latest_per_day`) and returns plain frames; the report and
``summary.json`` show them as they are.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.config import MonitorConfig

__all__ = [
    "MOVE_COLUMNS",
    "TREND_COLUMNS",
    "book_trends",
    "ratio_difference_test",
    "segment_moves",
    "segment_trends",
    "tier_migration",
]

#: Columns of :func:`book_trends` and :func:`segment_trends` besides the keys.
TREND_COLUMNS = (
    "customers", "total_clv", "mean_clv", "mean_churn_probability", "total_expected_spend", "mean_expected_spend",
)  # fmt: skip
#: Columns of :func:`segment_moves`.
MOVE_COLUMNS = (
    "segment_column", "segment", "metric", "customers", "previous_total", "change", "rest_change", "difference", "z",
    "alerts",
)  # fmt: skip
#: Row and column names of customers missing from one side of :func:`tier_migration`.
NEW, GONE = "(new)", "(not scored)"


def _aggregate(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    g = rows.groupby(keys, sort=True, observed=True, dropna=False)
    return pd.DataFrame(
        {
            "customers": g.size(),
            "total_clv": g["clv"].sum(),
            "mean_clv": g["clv"].mean(),
            "mean_churn_probability": g["churn_probability"].mean(),
            "total_expected_spend": g["expected_spend"].sum(),
            "mean_expected_spend": g["expected_spend"].mean(),
        }
    ).reset_index()


def book_trends(rows: pd.DataFrame) -> pd.DataFrame:
    """Totals and means of the whole scored base per scoring date.

    Parameters
    ----------
    rows : DataFrame
        Customer rows of one scoring per ``as_of`` with ``clv``, ``churn_probability`` and
        ``expected_spend`` (currency units; probabilities 0..1).

    Returns
    -------
    DataFrame
        One row per ``as_of`` (oldest first) with :data:`TREND_COLUMNS`.
    """
    return _aggregate(rows, ["as_of"])


def segment_trends(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """:func:`book_trends` per segment of ``column`` (e.g. ``channel``, ``clv_tier``, ``rfm_segment``).

    Returns
    -------
    DataFrame
        One row per ``as_of`` and segment, with the segment in column ``segment`` (missing values
        as ``"(missing)"``) and :data:`TREND_COLUMNS`.
    """
    frame = rows.assign(segment=rows[column].astype("object").fillna("(missing)").astype(str))
    return _aggregate(frame, ["as_of", "segment"])


def tier_migration(previous: pd.DataFrame, latest: pd.DataFrame, *, column: str = "clv_tier") -> pd.DataFrame:
    """Customers by segment at the previous scoring (rows) and at the latest one (columns).

    Parameters
    ----------
    previous, latest : DataFrame
        Customer rows of two scorings, with ``customer_id`` and ``column``.
    column : str
        The segment column, CLV tier by default.

    Returns
    -------
    DataFrame of int
        Counts; row :data:`NEW` holds the customers scored only at the latest date, column
        :data:`GONE` those scored only at the previous one. Segments are ordered by the latest
        scoring's mean CLV, highest first, when ``clv`` is present, else by name.
    """
    before = previous.set_index("customer_id")[column].astype("object")
    after = latest.set_index("customer_id")[column].astype("object")
    joined = pd.concat([before.rename("previous"), after.rename("latest")], axis=1, join="outer")
    joined["previous"] = joined["previous"].fillna(NEW)
    joined["latest"] = joined["latest"].fillna(GONE)
    table = pd.crosstab(joined["previous"], joined["latest"])
    if "clv" in latest.columns:
        order = list(latest.groupby(column, observed=True)["clv"].mean().sort_values(ascending=False).index)
    else:
        order = sorted(set(before.dropna()) | set(after.dropna()))
    order += [s for s in sorted(set(before.dropna()) | set(after.dropna())) if s not in order]
    return table.reindex(index=order + [NEW], columns=order + [GONE], fill_value=0).astype(np.int64)


def ratio_difference_test(numerator, denominator, in_segment) -> tuple[float, float, float, float]:
    """Compare the ratio Σ numerator / Σ denominator of a segment with the rest's.

    With customers independent, each ratio R = Σ y / Σ x has the linearised (ratio estimator)
    variance Σ (y − R x)² / (Σ x)² (Cochran, *Sampling Techniques*, 1977, §6.3); the difference of
    the two ratios over its standard error is approximately normal.

    Parameters
    ----------
    numerator, denominator : array-like of float, shape (n,)
        Per customer, e.g. the change of expected spend and its previous value, or the actual and
        the predicted spend.
    in_segment : array-like of bool, shape (n,)

    Returns
    -------
    segment_ratio, rest_ratio, difference, z : float
        NaN where a side has no customer or a zero denominator total; ``z`` is NaN when the
        standard error is 0.
    """
    y = np.asarray(numerator, dtype=float)
    x = np.asarray(denominator, dtype=float)
    mask = np.asarray(in_segment, dtype=bool)
    parts = []
    for side in (mask, ~mask):
        total = x[side].sum()
        if not side.any() or total == 0:
            return np.nan, np.nan, np.nan, np.nan
        ratio = y[side].sum() / total
        parts.append((ratio, np.sum((y[side] - ratio * x[side]) ** 2) / total**2))
    (r_in, v_in), (r_rest, v_rest) = parts
    difference = r_in - r_rest
    se = np.sqrt(v_in + v_rest)
    return float(r_in), float(r_rest), float(difference), float(difference / se) if se > 0 else np.nan


def segment_moves(previous: pd.DataFrame, latest: pd.DataFrame, *, config: MonitorConfig) -> pd.DataFrame:
    """How each segment's value moved since the previous scoring, relative to the rest of the book.

    Over the customers scored at both dates, for each segment of ``config.segment_columns`` and
    each metric of ``config.segment_metrics``: the segment's relative change Σ(latest − previous)
    / Σ previous against the same change of all other customers (:func:`ratio_difference_test`).
    What moves the whole book (the season, the customers' ageing) cancels out; a segment alerts
    when the difference reaches ``segment_change_alert`` and ``segment_z_alert`` standard errors
    and it has ``segment_min_customers``.

    Parameters
    ----------
    previous, latest : DataFrame
        Customer rows of two consecutive scorings, with ``customer_id``, the segment columns and
        the metrics.
    config : MonitorConfig

    Returns
    -------
    DataFrame
        :data:`MOVE_COLUMNS`; ``change``, ``rest_change`` and ``difference`` are shares (−0.2 =
        a 20 % fall), ``z`` in standard errors, ``alerts`` bool.
    """
    common = previous.merge(latest, on="customer_id", suffixes=("_previous", ""), how="inner")
    rows = []
    for column in config.segment_columns:
        if column not in common.columns:
            continue
        segment = common[column].astype("object").fillna("(missing)").astype(str).to_numpy()
        for metric in config.segment_metrics:
            before = common[f"{metric}_previous"].to_numpy(dtype=float)
            change = common[metric].to_numpy(dtype=float) - before
            for name in sorted(set(segment)):
                mask = segment == name
                r_in, r_rest, difference, z = ratio_difference_test(change, before, mask)
                n = int(mask.sum())
                alerts = bool(
                    n >= config.segment_min_customers
                    and np.isfinite(z)
                    and abs(difference) >= config.segment_change_alert
                    and abs(z) >= config.segment_z_alert
                )
                rows.append({
                    "segment_column": column, "segment": name, "metric": metric, "customers": n,
                    "previous_total": float(before[mask].sum()), "change": r_in, "rest_change": r_rest,
                    "difference": difference, "z": z, "alerts": alerts,
                })  # fmt: skip
    return pd.DataFrame(rows, columns=list(MOVE_COLUMNS))
