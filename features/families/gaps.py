"""Gaps between purchase days, recency relative to the usual gap, purchase and spend rates."""

from __future__ import annotations

import numpy as np

from features.config import FeatureConfig
from features.history import History, ratio
from features.spec import FeatureSpec

NAME = "purchase_gaps"


def schema(config: FeatureConfig) -> tuple[FeatureSpec, ...]:
    """Inter-purchase gaps and purchase rates."""
    f = NAME
    return (
        FeatureSpec("gap_mean_days", "float64", "mean days between consecutive purchase days; NaN with one purchase day", f, allow_nan=True),
        FeatureSpec("gap_std_days", "float64", "sample standard deviation of the gaps between purchase days (days); NaN with fewer than two gaps", f, allow_nan=True),
        FeatureSpec("gap_max_days", "float64", "longest gap between consecutive purchase days (days); NaN with one purchase day", f, allow_nan=True),
        FeatureSpec("recency_gap_ratio", "float64", "recency_days / gap_mean_days: how overdue the next purchase is (> 1 = later than usual); NaN with one purchase day", f, allow_nan=True),
        FeatureSpec("purchase_rate_per_day", "float64", "purchase days / days observed (tenure_days + 1: the first purchase day through the cutoff day)", f),
        FeatureSpec("spend_rate_per_day", "float64", "total_spend / (tenure_days + 1) (currency units per day)", f),
    )


def columns(h: History, config: FeatureConfig) -> dict:
    """Columns of :func:`schema`, aligned with ``h.ids``."""
    recency = h.p_ago[h.last]
    tenure = h.p_ago[h.first]
    frequency = h.last - h.first
    # Gaps between consecutive purchase days of one customer; p_ago falls as the date rises.
    same = h.p_key[1:] == h.p_key[:-1]
    gap = (h.p_ago[:-1] - h.p_ago[1:])[same].astype(np.float64)
    gap_key = h.p_key[1:][same]
    mean = ratio((tenure - recency).astype(np.float64), frequency)
    # Two passes (deviations from the mean) so that equal gaps give a standard deviation of exactly 0.
    deviation = gap - mean[gap_key]
    sq = np.bincount(gap_key, weights=deviation * deviation, minlength=h.n)
    std = np.sqrt(ratio(sq, np.where(frequency >= 2, frequency - 1, 0)))
    gap_max = np.zeros(h.n)
    np.maximum.at(gap_max, gap_key, gap)
    gap_max[frequency == 0] = np.nan
    days_observed = tenure + 1
    return {
        "gap_mean_days": mean,
        "gap_std_days": std,
        "gap_max_days": gap_max,
        "recency_gap_ratio": recency / mean,
        "purchase_rate_per_day": (frequency + 1) / days_observed,
        "spend_rate_per_day": np.bincount(h.d_key, weights=h.d_net, minlength=h.n) / days_observed,
    }
