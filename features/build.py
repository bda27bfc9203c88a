"""Point-in-time features: one row per customer known at a cutoff, computed from history only.

Definitions
-----------
- ``cutoff`` is a date, the last day of history: a row is history when its ``timestamp`` is before
  the end of that day (``timestamp < cutoff + 1 day``). Rows after it never influence a feature.
- A customer is *known* at the cutoff when they have at least one purchase in the history. Only
  known customers get a row; customers with only refunds, only events or only a ``customers`` row
  are left out (there is nothing to forecast from).
- A purchase is a transaction with ``amount >= 0``; a refund (``amount < 0``) nets against spend
  but does not make a purchase day. Purchases on one calendar day (UTC) form one *purchase day*,
  whose *value* is the sum of those purchases.
- All day counts are whole calendar days between dates (an event's date and the cutoff date), so
  features are integers where they can be and do not depend on the time of day of the cutoff.

Each feature family is a pure function of ``(tables, *, cutoff, config)`` returning a frame indexed
by ``customer_id`` with the columns declared in :mod:`features.schema`; :func:`build_features`
joins them. The only population-level state is the BG/NBD + Gamma-Gamma parameters
(:class:`BTYDParams`), fitted on the history by :func:`fit_btyd` or passed in by the caller.

How it computes
---------------
Customer ids are hashed into integer positions (pyarrow ``unique`` / ``index_in``), then every
family is a handful of vectorised numpy reductions (``bincount``) over rows sorted by customer and
day. The same code serves a million customers in a batch and one customer in an HTTP request: no
per-customer Python loop, no database connection to open per call, and a customer's features do not
depend on which other customers share the batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features import schema as fs
from features.btyd import (
    BGNBDParams,
    GammaGammaParams,
    bgnbd_expected_purchases,
    bgnbd_probability_alive,
    bgnbd_probability_no_purchase,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_expected_value,
)
from features.config import FeatureConfig
from features.contract import Tables

__all__ = [
    "BTYDParams",
    "parse_cutoff",
    "build_features",
    "fit_btyd",
    "rfm_features",
    "purchase_window_features",
    "purchase_gap_features",
    "engagement_features",
    "attribute_features",
    "btyd_features",
]

_NO_EVENT = np.iinfo(np.int64).max


# --------------------------------------------------------------------------------------------------
# cutoff and population-level parameters


def parse_cutoff(cutoff) -> dt.date:
    """Normalise a cutoff to a :class:`datetime.date`.

    Parameters
    ----------
    cutoff : date, str, datetime, Timestamp or numpy.datetime64
        A calendar date. A datetime is accepted only at midnight (an aware one is read in UTC).

    Returns
    -------
    datetime.date

    Raises
    ------
    ValueError
        If the value is not a date or carries a time of day.
    """
    if isinstance(cutoff, dt.date) and not isinstance(cutoff, dt.datetime):
        return cutoff
    try:
        ts = pd.Timestamp(cutoff)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cutoff: rule 'a date, YYYY-MM-DD': got {cutoff!r}") from exc
    if pd.isna(ts):
        raise ValueError(f"cutoff: rule 'a date, YYYY-MM-DD': got {cutoff!r}")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    if ts != ts.normalize():
        raise ValueError(f"cutoff: rule 'a date, not a time of day': got {cutoff!r}")
    return ts.date()


@dataclass(frozen=True)
class BTYDParams:
    """BG/NBD and Gamma-Gamma parameters fitted on the history up to one cutoff.

    Training stores them beside the models; serving passes them back to :func:`build_features`,
    since a request for a few customers cannot fit a population model.

    Parameters
    ----------
    bgnbd : BGNBDParams
    gamma_gamma : GammaGammaParams
    time_unit_days : float
        Days per time unit of the fit (``alpha`` is per unit); must match the feature config.
    """

    bgnbd: BGNBDParams
    gamma_gamma: GammaGammaParams
    time_unit_days: float

    def to_dict(self) -> dict:
        """Plain-JSON form: ``{"bgnbd": {...}, "gamma_gamma": {...}, "time_unit_days": ...}``."""
        return {
            "bgnbd": asdict(self.bgnbd),
            "gamma_gamma": asdict(self.gamma_gamma),
            "time_unit_days": float(self.time_unit_days),
        }

    @classmethod
    def from_dict(cls, data: dict) -> BTYDParams:
        """Inverse of :meth:`to_dict`."""
        return cls(
            bgnbd=BGNBDParams(**{k: float(v) for k, v in data["bgnbd"].items()}),
            gamma_gamma=GammaGammaParams(**{k: float(v) for k, v in data["gamma_gamma"].items()}),
            time_unit_days=float(data["time_unit_days"]),
        )


# --------------------------------------------------------------------------------------------------
# history: rows before the end of the cutoff day, keyed by customer position


def _day_numbers(values: pd.Series, where: str) -> np.ndarray:
    """Calendar day (days since 1970-01-01, UTC) of each timestamp; NaT gives a huge negative day."""
    dtype = values.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    elif not pd.api.types.is_datetime64_dtype(dtype):
        raise TypeError(
            f"{where}: rule 'datetime64, naive UTC': got dtype {dtype}; "
            "read tables through features.io.load_tables"
        )
    raw = values.to_numpy()
    unit, count = np.datetime_data(raw.dtype)
    per_day = np.timedelta64(1, "D") // np.timedelta64(count, unit)
    # Integer floor division: a time of day (also before 1970) maps to its own date, and it is
    # twenty times faster than numpy's datetime64[D] cast.
    return raw.view(np.int64) // per_day


def _day_number(day: dt.date) -> int:
    return int(np.datetime64(day, "D").astype(np.int64))


def _arrow_strings(values) -> pa.Array | pa.ChunkedArray:
    """Arrow view of a string column (zero-copy for the pandas ``str`` dtype)."""
    if isinstance(values, (pd.Series, pd.Index)):
        values = values.array
    arr = pa.array(values)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.large_string())
    return arr


def _filter(arr: pa.Array | pa.ChunkedArray, mask: np.ndarray) -> pa.Array | pa.ChunkedArray:
    return arr if mask.all() else pc.filter(arr, pa.array(mask))


def _lookup(values: pa.Array | pa.ChunkedArray, value_set: pa.Array) -> np.ndarray:
    """Position in ``value_set`` of each value, -1 where absent (one hash probe per value)."""
    found = pc.index_in(values, value_set=value_set.cast(values.type))
    return np.asarray(pc.fill_null(found, -1), dtype=np.int64)


@dataclass(frozen=True, eq=False)
class _History:
    """Transactions of the known customers before the end of the cutoff day, reduced to days.

    ``p_*`` arrays describe purchase days sorted by customer then date; ``first``/``last`` index a
    customer's first and last purchase day in them. ``d_*`` arrays describe every history day of a
    customer (purchase days and refund-only days). ``key`` values are positions in ``ids``.
    """

    tables: Tables
    cutoff: dt.date
    cutoff_day: int
    ids: pd.Index
    ids_arrow: pa.Array
    p_key: np.ndarray
    p_ago: np.ndarray
    p_value: np.ndarray
    first: np.ndarray
    last: np.ndarray
    d_key: np.ndarray
    d_ago: np.ndarray
    d_net: np.ndarray
    purchase_count: np.ndarray
    refund_count: np.ndarray
    refund_amount: np.ndarray

    @property
    def n(self) -> int:
        return len(self.ids)


def _known_customers(customer_id: pa.Array | pa.ChunkedArray, is_purchase: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Sorted ids of the customers with a purchase among the rows, and each row's position (-1: none)."""
    unique = pc.unique(_filter(customer_id, is_purchase))
    if isinstance(unique, pa.ChunkedArray):
        unique = unique.combine_chunks()
    ids = unique.take(pc.sort_indices(unique))
    return ids, _lookup(customer_id, ids)


def _no_customer_error(transactions: pd.DataFrame, cutoff: dt.date) -> ValueError:
    purchases = transactions.loc[transactions["amount"] >= 0, "timestamp"]
    first = f"the first purchase is on {purchases.min().date()}" if len(purchases) else "there is no purchase at all"
    return ValueError(f"cutoff {cutoff}: no customer has a purchase on or before the cutoff day; {first}")


def _prepare(tables: Tables, cutoff) -> _History:
    cutoff = parse_cutoff(cutoff)
    cutoff_day = _day_number(cutoff)
    tx = tables.transactions
    if tx is None or len(tx) == 0:
        raise ValueError("transactions: rule 'at least one row': the table is empty")
    day = _day_numbers(tx["timestamp"], "transactions.timestamp")
    amount = tx["amount"].to_numpy(dtype=np.float64)
    customer_id = _arrow_strings(tx["customer_id"])
    in_history = day <= cutoff_day
    if not in_history.all():
        customer_id = _filter(customer_id, in_history)
        day, amount = day[in_history], amount[in_history]
    ids_arrow, key = _known_customers(customer_id, amount >= 0)
    if len(ids_arrow) == 0:
        raise _no_customer_error(tx, cutoff)
    n = len(ids_arrow)
    ids = pd.Index(pd.array(ids_arrow, dtype="str"), name="customer_id")
    known = key >= 0
    if not known.all():
        key, day, amount = key[known], day[known], amount[known]

    # Sort by (customer, day) through one int64 key. Stable, so the rows of a day keep their input
    # order and a customer's sums come out bit-identical whatever else is in the batch.
    day_min = int(day.min())
    span = int(day.max()) - day_min + 1
    if n * span < 2**62:
        composite = key * span + (day - day_min)
        order = np.argsort(composite, kind="stable")
        composite = composite[order]
        is_start = np.r_[True, composite[1:] != composite[:-1]]
        day_start = composite[is_start]
        d_key, d_day = day_start // span, day_start % span + day_min
        del composite, day_start
    else:  # a span of centuries over many customers: slower, but cannot overflow
        order = np.lexsort((day, key))
        key_s, day_s = key[order], day[order]
        is_start = np.r_[True, (key_s[1:] != key_s[:-1]) | (day_s[1:] != day_s[:-1])]
        d_key, d_day = key_s[is_start], day_s[is_start]
    amount_s = amount[order]
    del order
    # Row -> day index; bincount sums each day's rows in order (much faster than reduceat when most
    # days hold one row).
    day_index = np.cumsum(is_start) - 1
    n_days = d_key.size
    is_purchase_s = amount_s >= 0
    d_net = np.bincount(day_index, weights=amount_s, minlength=n_days)
    d_value = np.bincount(day_index, weights=np.where(is_purchase_s, amount_s, 0.0), minlength=n_days)
    d_purchases = np.bincount(day_index[is_purchase_s], minlength=n_days)
    del day_index, amount_s, is_purchase_s

    is_refund = amount < 0
    is_pday = d_purchases > 0
    p_key = d_key[is_pday]
    # Every known customer has at least one purchase day, so the runs of p_key are exactly 0..n-1.
    first = np.flatnonzero(np.r_[True, p_key[1:] != p_key[:-1]])
    last = np.r_[first[1:] - 1, p_key.size - 1]
    return _History(
        tables=tables,
        cutoff=cutoff,
        cutoff_day=cutoff_day,
        ids=ids,
        ids_arrow=ids_arrow,
        p_key=p_key,
        p_ago=cutoff_day - d_day[is_pday],
        p_value=d_value[is_pday],
        first=first,
        last=last,
        d_key=d_key,
        d_ago=cutoff_day - d_day,
        d_net=d_net,
        purchase_count=np.bincount(d_key, weights=d_purchases, minlength=n).astype(np.int64),
        refund_count=np.bincount(key[is_refund], minlength=n).astype(np.int64),
        refund_amount=-np.bincount(key[is_refund], weights=amount[is_refund], minlength=n) + 0.0,
    )


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0."""
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _frame(ids: pd.Index, specs: tuple[fs.FeatureSpec, ...], columns: dict) -> pd.DataFrame:
    """Assemble declared columns, in declared order and dtype, on the customer index."""
    data = {}
    for spec in specs:
        values = columns[spec.name]
        if spec.dtype == "str":
            data[spec.name] = values if isinstance(values.dtype, pd.StringDtype) else pd.array(values, dtype="str")
        else:
            data[spec.name] = np.asarray(values, dtype=spec.dtype)
    return pd.DataFrame(data, index=ids, columns=[s.name for s in specs], copy=False)


# --------------------------------------------------------------------------------------------------
# feature families: each maps a _History to {column: values aligned with history.ids}


def _rfm(h: _History, config: FeatureConfig) -> dict:
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
        "refund_share": _ratio(h.refund_amount, gross),
    }


def _purchase_windows(h: _History, config: FeatureConfig) -> dict:
    out = {}
    for w in fs.windows(config):
        out[f"purchase_days_{w}d"] = np.bincount(h.p_key[h.p_ago < w], minlength=h.n)
        out[f"spend_{w}d"] = np.bincount(h.d_key, weights=np.where(h.d_ago < w, h.d_net, 0.0), minlength=h.n) + 0.0
    for short, long in fs.window_pairs(config):
        for what in ("purchase_days", "spend"):
            name = "purchase" if what == "purchase_days" else "spend"
            out[f"{name}_trend_{short}d_{long}d"] = _ratio(
                out[f"{what}_{short}d"] / short, out[f"{what}_{long}d"] / long
            )
    return out


def _purchase_gaps(h: _History, config: FeatureConfig) -> dict:
    recency = h.p_ago[h.last]
    tenure = h.p_ago[h.first]
    frequency = h.last - h.first
    # Gaps between consecutive purchase days of one customer; p_ago falls as the date rises.
    same = h.p_key[1:] == h.p_key[:-1]
    gap = (h.p_ago[:-1] - h.p_ago[1:])[same].astype(np.float64)
    gap_key = h.p_key[1:][same]
    mean = _ratio((tenure - recency).astype(np.float64), frequency)
    # Two passes (deviations from the mean) so that equal gaps give a standard deviation of exactly 0.
    deviation = gap - mean[gap_key]
    sq = np.bincount(gap_key, weights=deviation * deviation, minlength=h.n)
    std = np.sqrt(_ratio(sq, np.where(frequency >= 2, frequency - 1, 0)))
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


def _engagement(h: _History, config: FeatureConfig) -> dict:
    types = fs.event_types(config)
    wins = fs.windows(config)
    n_types = len(types)
    size = h.n * n_types
    flat = np.zeros(0, dtype=np.int64)
    ago = np.zeros(0, dtype=np.int64)
    events = h.tables.events
    if events is not None and len(events) and {"customer_id", "timestamp", "event_type"} <= set(events.columns):
        day = _day_numbers(events["timestamp"], "events.timestamp")
        type_index = _lookup(_arrow_strings(events["event_type"]), pa.array(types))
        keep = (day <= h.cutoff_day) & (type_index >= 0)
        key = _lookup(_filter(_arrow_strings(events["customer_id"]), keep), h.ids_arrow)
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
        for short, long in fs.window_pairs(config):
            out[f"{e}_trend_{short}d_{long}d"] = _ratio(windowed[short][:, j] / short, windowed[long][:, j] / long)
    return out


def _take_float(column: pd.Series, pos: np.ndarray, name: str) -> np.ndarray:
    """Values of ``column`` at ``pos`` as float64, NaN where ``pos`` is -1."""
    if not (pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype)):
        try:
            column = pd.to_numeric(column, errors="raise")
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"customers.{name}: rule 'numeric' (list it in categorical_covariates if it is categorical): {exc}"
            ) from exc
    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(pos >= 0, values[pos], np.nan) if values.size else np.full(pos.size, np.nan)


def _take_str(column: pd.Series, pos: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """Values of ``column`` at ``pos`` as pandas strings, NaN where ``pos`` is -1."""
    if str(column.dtype) != "str":
        column = column.astype("str")
    return column.array.take(pos, allow_fill=True)


def _attributes(h: _History, config: FeatureConfig) -> dict:
    categorical = fs.categorical_covariates(config)
    tenure = h.p_ago[h.first]
    missing_str = pd.array(np.full(h.n, np.nan, dtype=object), dtype="str")
    missing_float = np.full(h.n, np.nan)
    out = {
        "channel": missing_str,
        "days_since_acquisition": tenure,
        "acquisition_cost": missing_float,
        "is_referred": missing_float,
    }
    for c in config.covariates:
        out[c] = missing_str if c in categorical else missing_float
    customers = h.tables.customers
    if customers is None or len(customers) == 0 or "customer_id" not in customers.columns:
        return out
    customer_ids = _arrow_strings(customers["customer_id"])
    if len(pc.unique(customer_ids)) != len(customer_ids):
        dup = customers["customer_id"][customers["customer_id"].duplicated()]
        raise ValueError(
            f"customers.customer_id: rule 'unique': {dup.size} duplicated row(s), first: {list(dup[:5])}"
        )
    pos = _lookup(h.ids_arrow, customer_ids)
    found = pos >= 0
    if "channel" in customers.columns:
        out["channel"] = _take_str(customers["channel"], pos)
    if "acquired_at" in customers.columns:
        acquired = _day_numbers(customers["acquired_at"], "customers.acquired_at")[pos]
        unknown = customers["acquired_at"].isna().to_numpy()[pos]
        usable = found & ~unknown & (acquired <= h.cutoff_day)
        out["days_since_acquisition"] = np.where(usable, h.cutoff_day - acquired, tenure)
    if "acquisition_cost" in customers.columns:
        out["acquisition_cost"] = _take_float(customers["acquisition_cost"], pos, "acquisition_cost")
    if "referred_by" in customers.columns:
        referred = customers["referred_by"].notna().to_numpy()[pos].astype(np.float64)
        out["is_referred"] = np.where(found, referred, np.nan)
    for c in config.covariates:
        if c in customers.columns:
            out[c] = _take_str(customers[c], pos) if c in categorical else _take_float(customers[c], pos, c)
    return out


def _btyd_inputs(h: _History, unit: float) -> tuple[np.ndarray, ...]:
    """BTYD summary (x, t_x, T in units, mean repeat purchase-day value) of every known customer."""
    frequency = (h.last - h.first).astype(np.float64)
    recency = (h.p_ago[h.first] - h.p_ago[h.last]) / unit
    T = h.p_ago[h.first] / unit
    # Repeat days summed directly (not total minus first) so a large first order costs no precision.
    repeat = np.ones(h.p_key.size, dtype=bool)
    repeat[h.first] = False
    repeat_value = np.bincount(h.p_key[repeat], weights=h.p_value[repeat], minlength=h.n)
    monetary = np.divide(repeat_value, frequency, out=np.zeros(h.n), where=frequency > 0)
    return frequency, recency, T, monetary


def _fit_btyd(h: _History, config: FeatureConfig) -> BTYDParams:
    unit = float(config.btyd_time_unit_days)
    x, t_x, T, m = _btyd_inputs(h, unit)
    try:
        bgnbd = fit_bgnbd(x, t_x, T)
        gamma_gamma = fit_gamma_gamma(x, m)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"cutoff {h.cutoff}: cannot fit BG/NBD + Gamma-Gamma on {h.n} customers: {exc}") from exc
    return BTYDParams(bgnbd=bgnbd, gamma_gamma=gamma_gamma, time_unit_days=unit)


def _btyd(h: _History, config: FeatureConfig, params: BTYDParams) -> dict:
    unit = float(config.btyd_time_unit_days)
    if float(params.time_unit_days) != unit:
        raise ValueError(
            f"btyd: rule 'time_unit_days equals config.btyd_time_unit_days': params use "
            f"{params.time_unit_days} days, the config {unit}"
        )
    x, t_x, T, m = _btyd_inputs(h, unit)
    horizon = config.btyd_horizon_days / unit
    purchases = bgnbd_expected_purchases(params.bgnbd, horizon, x, t_x, T)
    order_value = gamma_gamma_expected_value(params.gamma_gamma, x, m)
    return {
        "btyd_expected_purchases": purchases,
        "btyd_p_alive": bgnbd_probability_alive(params.bgnbd, x, t_x, T),
        "btyd_p_no_purchase": bgnbd_probability_no_purchase(params.bgnbd, horizon, x, t_x, T),
        "btyd_expected_order_value": order_value,
        "btyd_expected_spend": purchases * order_value,
    }


_FAMILY_FUNCTIONS: dict[str, Callable[[_History, FeatureConfig], dict]] = {
    "rfm": _rfm,
    "purchase_windows": _purchase_windows,
    "purchase_gaps": _purchase_gaps,
    "engagement": _engagement,
    "attributes": _attributes,
}


def _feature_columns(h: _History, config: FeatureConfig, params: BTYDParams) -> dict:
    """Every feature column of ``config`` for the customers of ``h``."""
    columns: dict = {}
    for compute in _FAMILY_FUNCTIONS.values():
        columns.update(compute(h, config))
    columns.update(_btyd(h, config, params))
    return columns


def _family(name: str, tables: Tables, cutoff, config: FeatureConfig) -> pd.DataFrame:
    h = _prepare(tables, cutoff)
    return _frame(h.ids, fs.FAMILIES[name](config), _FAMILY_FUNCTIONS[name](h, config))


# --------------------------------------------------------------------------------------------------
# public API


def rfm_features(tables: Tables, *, cutoff, config: FeatureConfig = FeatureConfig()) -> pd.DataFrame:
    """Recency, frequency, tenure, monetary value and refunds (columns of :func:`~features.schema.rfm_schema`).

    Parameters
    ----------
    tables : Tables
        Normalised input tables (only ``transactions`` is read).
    cutoff : date-like
        Last day of history.
    config : FeatureConfig

    Returns
    -------
    pandas.DataFrame
        One row per customer known at the cutoff, indexed by ``customer_id`` (sorted).
    """
    return _family("rfm", tables, cutoff, config)


def purchase_window_features(tables: Tables, *, cutoff, config: FeatureConfig = FeatureConfig()) -> pd.DataFrame:
    """Purchase days and net spend per look-back window, and their trends.

    A window of ``w`` days holds the ``w`` dates that end on the cutoff day. A trend is the
    per-day rate in the shorter window over the per-day rate in the next longer one. Parameters
    and return as :func:`rfm_features`.
    """
    return _family("purchase_windows", tables, cutoff, config)


def purchase_gap_features(tables: Tables, *, cutoff, config: FeatureConfig = FeatureConfig()) -> pd.DataFrame:
    """Gaps between purchase days, recency relative to the usual gap, purchase and spend rates.

    Parameters and return as :func:`rfm_features`.
    """
    return _family("purchase_gaps", tables, cutoff, config)


def engagement_features(tables: Tables, *, cutoff, config: FeatureConfig = FeatureConfig()) -> pd.DataFrame:
    """Event counts (whole history and per window), days since the last event, and trends.

    One set per type in ``config.event_types``; other event types are ignored. Without an
    ``events`` table every count is 0 and every ``days_since_last`` NaN. Parameters and return as
    :func:`rfm_features`.
    """
    return _family("engagement", tables, cutoff, config)


def attribute_features(tables: Tables, *, cutoff, config: FeatureConfig = FeatureConfig()) -> pd.DataFrame:
    """Channel, days since acquisition, acquisition cost, referral flag and ``config.covariates``.

    Attributes come from the ``customers`` table, a snapshot without history: an ``acquired_at``
    after the cutoff is ignored (the first purchase day stands in), the rest is used as given.
    A missing table, column or customer row gives NaN. Parameters and return as :func:`rfm_features`.
    """
    return _family("attributes", tables, cutoff, config)


def btyd_features(
    tables: Tables, *, cutoff, config: FeatureConfig = FeatureConfig(), btyd: BTYDParams | None = None
) -> pd.DataFrame:
    """BG/NBD expected purchase days and P(alive), Gamma-Gamma expected purchase-day value.

    Parameters
    ----------
    tables, cutoff, config
        As :func:`rfm_features`.
    btyd : BTYDParams, optional
        Population parameters; fitted on this history by :func:`fit_btyd` when omitted.

    Returns
    -------
    pandas.DataFrame
        Columns of :func:`~features.schema.btyd_schema`, one row per known customer.
    """
    h = _prepare(tables, cutoff)
    params = btyd if btyd is not None else _fit_btyd(h, config)
    return _frame(h.ids, fs.btyd_schema(config), _btyd(h, config, params))


def fit_btyd(tables: Tables, *, cutoff, config: FeatureConfig = FeatureConfig()) -> BTYDParams:
    """Fit BG/NBD and Gamma-Gamma on the history up to the end of the cutoff day.

    The BTYD summary follows :func:`features.btyd.summary_from_transactions`: x = repeat purchase
    days, t_x and T in units of ``config.btyd_time_unit_days``, monetary value = mean value of the
    repeat purchase days (refunds excluded).

    Parameters
    ----------
    tables : Tables
    cutoff : date-like
    config : FeatureConfig

    Returns
    -------
    BTYDParams

    Raises
    ------
    ValueError
        If no customer is known at the cutoff or the models cannot be fitted (e.g. no repeat buyer).
    """
    return _fit_btyd(_prepare(tables, cutoff), config)


def build_features(
    tables: Tables, *, cutoff, config: FeatureConfig = FeatureConfig(), btyd: BTYDParams | None = None
) -> pd.DataFrame:
    """All features of every customer known at ``cutoff``, from the history up to that day only.

    Parameters
    ----------
    tables : Tables
        Normalised input tables (:mod:`features.contract`); ``events`` and ``customers`` optional.
    cutoff : date, str or Timestamp
        Last day of history: rows with ``timestamp < cutoff + 1 day`` are used, nothing later.
    config : FeatureConfig
        Decides the columns (see :func:`features.schema.feature_schema`).
    btyd : BTYDParams, optional
        BG/NBD + Gamma-Gamma parameters. When omitted they are fitted on this history, which needs
        a population; serving passes the parameters stored at training time instead.

    Returns
    -------
    pandas.DataFrame
        One row per customer with at least one purchase (amount >= 0) on or before the cutoff day,
        indexed by ``customer_id`` (string, sorted), with exactly the columns and dtypes of
        ``feature_schema(config)`` in that order.

    Raises
    ------
    ValueError
        If the cutoff precedes every purchase, or the BTYD fit fails.
    """
    specs = fs.feature_schema(config)
    h = _prepare(tables, cutoff)
    params = btyd if btyd is not None else _fit_btyd(h, config)
    return _frame(h.ids, specs, _feature_columns(h, config, params))
