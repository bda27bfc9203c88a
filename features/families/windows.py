"""Purchase days and net spend per look-back window, and their trends."""

from __future__ import annotations

import numpy as np

from features.config import FeatureConfig
from features.history import History, ratio
from features.spec import FeatureSpec, trend_description, window_pairs, windows

NAME = "purchase_windows"


def schema(config: FeatureConfig) -> tuple[FeatureSpec, ...]:
    """Purchase days and net spend in each look-back window, and their trends."""
    f = NAME
    specs = []
    for w in windows(config):
        specs.append(FeatureSpec(f"purchase_days_{w}d", "int64", f"purchase days in the last {w} days (cutoff day included)", f))
        specs.append(FeatureSpec(f"spend_{w}d", "float64", f"net spend in the last {w} days, refunds deducted (currency units)", f))
    for short, long in window_pairs(config):
        specs.append(FeatureSpec(f"purchase_trend_{short}d_{long}d", "float64", trend_description("purchase days", short, long), f, allow_nan=True))
        specs.append(FeatureSpec(f"spend_trend_{short}d_{long}d", "float64", trend_description("net spend", short, long), f, allow_nan=True))
    return tuple(specs)


def columns(h: History, config: FeatureConfig) -> dict:
    """Columns of :func:`schema`, aligned with ``h.ids``."""
    out = {}
    for w in windows(config):
        out[f"purchase_days_{w}d"] = np.bincount(h.p_key[h.p_ago < w], minlength=h.n)
        out[f"spend_{w}d"] = np.bincount(h.d_key, weights=np.where(h.d_ago < w, h.d_net, 0.0), minlength=h.n) + 0.0
    for short, long in window_pairs(config):
        for what in ("purchase_days", "spend"):
            name = "purchase" if what == "purchase_days" else "spend"
            out[f"{name}_trend_{short}d_{long}d"] = ratio(
                out[f"{what}_{short}d"] / short, out[f"{what}_{long}d"] / long
            )
    return out
