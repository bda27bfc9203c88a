"""Event counts per type (whole history and per window), days since the last event, and trends."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from features.config import FeatureConfig
from features.history import History, arrow_strings, day_numbers, filter_rows, lookup, ratio
from features.spec import FeatureSpec, event_types, trend_description, window_pairs, windows

NAME = "engagement"


def schema(config: FeatureConfig) -> tuple[FeatureSpec, ...]:
    """Event counts, recency and trends per configured event type."""
    f = NAME
    specs = []
    for e in event_types(config):
        specs.append(FeatureSpec(f"{e}_count", "int64", f"'{e}' events over the whole history", f))
        for w in windows(config):
            specs.append(FeatureSpec(f"{e}_count_{w}d", "int64", f"'{e}' events in the last {w} days (cutoff day included)", f))
        specs.append(FeatureSpec(f"{e}_days_since_last", "float64", f"days from the last '{e}' event to the cutoff day; NaN when there is none", f, allow_nan=True))
        for short, long in window_pairs(config):
            specs.append(FeatureSpec(f"{e}_trend_{short}d_{long}d", "float64", trend_description(f"'{e}' events", short, long), f, allow_nan=True))
    return tuple(specs)


_NO_EVENT = np.iinfo(np.int64).max


def columns(h: History, config: FeatureConfig) -> dict:
    """Columns of :func:`schema`, aligned with ``h.ids``."""
    types = event_types(config)
    wins = windows(config)
    n_types = len(types)
    size = h.n * n_types
    flat = np.zeros(0, dtype=np.int64)
    ago = np.zeros(0, dtype=np.int64)
    events = h.tables.events
    if events is not None and len(events) and {"customer_id", "timestamp", "event_type"} <= set(events.columns):
        day = day_numbers(events["timestamp"], "events.timestamp")
        type_index = lookup(arrow_strings(events["event_type"]), pa.array(types))
        keep = (day <= h.cutoff_day) & (type_index >= 0)
        key = lookup(filter_rows(arrow_strings(events["customer_id"]), keep), h.ids_arrow)
        known = key >= 0
        flat = key[known] * n_types + type_index[keep][known]
        ago = h.cutoff_day - day[keep][known]

    def counts(mask=None) -> np.ndarray:
        selected = flat if mask is None else flat[mask]
        return np.bincount(selected, minlength=size).reshape(h.n, n_types)

    total = counts()
    windowed = {w: counts(ago < w) for w in wins}
    nearest = np.full(size, _NO_EVENT, dtype=np.int64)
    np.minimum.at(nearest, flat, ago)
    since_last = np.where(nearest == _NO_EVENT, np.nan, nearest.astype(np.float64)).reshape(h.n, n_types)
    out = {}
    for j, e in enumerate(types):
        out[f"{e}_count"] = total[:, j]
        for w in wins:
            out[f"{e}_count_{w}d"] = windowed[w][:, j]
        out[f"{e}_days_since_last"] = since_last[:, j]
        for short, long in window_pairs(config):
            out[f"{e}_trend_{short}d_{long}d"] = ratio(windowed[short][:, j] / short, windowed[long][:, j] / long)
    return out
