"""Customer attributes from the ``customers`` table (a snapshot without history) and configured covariates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from features.config import FeatureConfig
from features.history import History, arrow_strings, day_numbers, lookup
from features.spec import FeatureSpec, categorical_covariates

NAME = "attributes"


def schema(config: FeatureConfig) -> tuple[FeatureSpec, ...]:
    """Customer attributes from the ``customers`` table, and the configured covariates."""
    f = NAME
    specs = [
        FeatureSpec("channel", "str", "acquisition channel (categorical); NaN when unknown", f),
        FeatureSpec("days_since_acquisition", "int64", "days from acquired_at (default, or when later than the cutoff: the first purchase day) to the cutoff day", f),
        FeatureSpec("acquisition_cost", "float64", "CAC paid for this customer (currency units); NaN when unknown", f, allow_nan=True),
        FeatureSpec("is_referred", "float64", "1 when referred_by names a referrer, 0 when it is empty; NaN when the customers table or column is missing", f, allow_nan=True),
    ]
    categorical = categorical_covariates(config)
    for c in config.covariates:
        if c in categorical:
            specs.append(FeatureSpec(c, "str", f"customers.{c} (categorical covariate); NaN when missing", f))
        else:
            specs.append(FeatureSpec(c, "float64", f"customers.{c} (numeric covariate, units of the source); NaN when missing", f, allow_nan=True))
    return tuple(specs)


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


def columns(h: History, config: FeatureConfig) -> dict:
    """Columns of :func:`schema`, aligned with ``h.ids``."""
    categorical = categorical_covariates(config)
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
    customer_ids = arrow_strings(customers["customer_id"])
    if len(pc.unique(customer_ids)) != len(customer_ids):
        dup = customers["customer_id"][customers["customer_id"].duplicated()]
        raise ValueError(
            f"customers.customer_id: rule 'unique': {dup.size} duplicated row(s), first: {list(dup[:5])}"
        )
    pos = lookup(h.ids_arrow, customer_ids)
    found = pos >= 0
    if "channel" in customers.columns:
        out["channel"] = _take_str(customers["channel"], pos)
    if "acquired_at" in customers.columns:
        acquired = day_numbers(customers["acquired_at"], "customers.acquired_at")[pos]
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
