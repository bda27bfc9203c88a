"""Recency, frequency, tenure, monetary value and refunds over the whole history."""

from __future__ import annotations

import numpy as np

from features.config import FeatureConfig
from features.history import History, ratio
from features.spec import FeatureSpec

NAME = "rfm"


def schema(config: FeatureConfig) -> tuple[FeatureSpec, ...]:
    """Recency, frequency, monetary value and refunds over the whole history."""
    f = NAME
    return (
        FeatureSpec("recency_days", "int64", "days from the last purchase day to the cutoff day (0 = bought on the cutoff day)", f),
        FeatureSpec("frequency", "int64", "repeat purchase days: distinct purchase days minus one (BTYD's x)", f),
        FeatureSpec("tenure_days", "int64", "days from the first purchase day to the cutoff day (BTYD's T, in days)", f),
        FeatureSpec("purchase_count", "int64", "purchase transactions (amount >= 0), same-day ones counted separately", f),
        FeatureSpec("total_spend", "float64", "net spend over the history, refunds deducted (currency units)", f),
        FeatureSpec("monetary_value", "float64", "net spend per purchase day: total_spend / (frequency + 1) (currency units)", f),
        FeatureSpec("first_order_value", "float64", "purchases on the first purchase day, refunds excluded (currency units)", f),
        FeatureSpec("last_order_value", "float64", "purchases on the last purchase day, refunds excluded (currency units)", f),
        FeatureSpec("max_order_value", "float64", "largest purchase-day value, refunds excluded (currency units)", f),
        FeatureSpec("refund_count", "int64", "refund transactions (amount < 0)", f),
        FeatureSpec("refund_amount", "float64", "refunded amount over the history, as a positive number (currency units)", f),
        FeatureSpec("refund_share", "float64", "refund_amount / purchases before refunds (0..1 for ordinary data); NaN when all purchases are 0", f, allow_nan=True),
    )


def columns(h: History, config: FeatureConfig) -> dict:
    """Columns of :func:`schema`, aligned with ``h.ids``."""
    recency = h.p_ago[h.last]
    tenure = h.p_ago[h.first]
    frequency = h.last - h.first
    total_spend = np.bincount(h.d_key, weights=h.d_net, minlength=h.n)
    gross = np.bincount(h.p_key, weights=h.p_value, minlength=h.n)
    return {
        "recency_days": recency,
        "frequency": frequency,
        "tenure_days": tenure,
        "purchase_count": h.purchase_count,
        "total_spend": total_spend,
        "monetary_value": total_spend / (frequency + 1),
        "first_order_value": h.p_value[h.first],
        "last_order_value": h.p_value[h.last],
        "max_order_value": np.maximum.reduceat(h.p_value, h.first),
        "refund_count": h.refund_count,
        "refund_amount": h.refund_amount,
        "refund_share": ratio(h.refund_amount, gross),
    }
