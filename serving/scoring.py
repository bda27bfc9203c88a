"""Scoring: raw tables + the champion models → one CLV row per customer.

One function, :func:`score_columns`, serves both batch scoring (:func:`score_tables`, ``clvcast
score``) and the HTTP service (``POST /clv``), so the two cannot disagree: features come from
:func:`features.build.build_features` with the champion's feature settings and BTYD parameters (the
code and settings of training), predictions from the champion's :class:`~training.models.ClvModels`,
the CLV arithmetic from :mod:`serving.clv` and the segments from :mod:`serving.segments`. The
columns are declared in :mod:`serving.scores`.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.build import build_features, feature_columns
from features.contract import Tables
from features.dates import parse_cutoff
from features.history import History, prepare_history
from features.io import load_tables
from features.schema import feature_schema
from features.spec import assemble
from serving.scores import CURVE_COLUMNS, SCORE_COLUMNS, Scores, ScoringRun, write_scores
from serving.segments import SegmentReference
from training.config import ClvConfig
from training.registry import Champion

__all__ = ["TOP_DRIVERS", "build_champion_features", "champion_clv_config", "score", "score_columns", "score_tables"]

#: Number of drivers kept per model and customer.
TOP_DRIVERS = 3


def champion_clv_config(champion: Champion) -> ClvConfig:
    """CLV settings of the champion's training run (its configuration's ``clv`` section)."""
    return champion.serving.config.clv


def build_champion_features(tables: Tables, *, as_of: date | str | pd.Timestamp, champion: Champion) -> pd.DataFrame:
    """Feature rows as of ``as_of`` with the champion's feature settings and BTYD parameters.

    A request of a few customers cannot fit a population model: the BTYD parameters are always the
    ones stored at training time.
    """
    return build_features(tables, cutoff=as_of, config=champion.feature_config, btyd=champion.btyd_params)


def _history_and_features(tables: Tables, cutoff: pd.Timestamp, champion: Champion) -> tuple[History, pd.DataFrame]:
    """The history as of ``cutoff`` and its feature rows (:func:`build_champion_features`, prepared once)."""
    h = prepare_history(tables, cutoff)
    columns, _ = feature_columns(h, champion.feature_config, champion.btyd_params)
    return h, assemble(h.ids, feature_schema(champion.feature_config), columns)


def score_tables(
    tables: Tables,
    *,
    as_of: date | str | pd.Timestamp,
    champion: Champion,
    clv: ClvConfig | None = None,
    reference: SegmentReference | None = None,
    top_drivers: int = TOP_DRIVERS,
) -> Scores:
    """Score every customer known at ``as_of``: predictions, CLV, segments, drivers, versions.

    Parameters
    ----------
    tables : Tables
        Contract tables (normalised dtypes); rows after ``as_of`` are ignored by the feature code.
    as_of : date
        Cutoff: history is everything before the end of this day.
    champion : training.registry.Champion
        Loaded champion models and their serving metadata.
    clv : ClvConfig, optional
        Margin, cost to serve, discount rate and lifetime cap; default: the champion's stored CLV
        settings, else the documented defaults.
    reference : SegmentReference, optional
        Population that tiers and RFM scores are relative to; default: the scored customers
        themselves (a whole book in batch; the service passes the reference of a batch run).
    top_drivers : int
        Drivers kept per model and customer; 0 skips the explanations (empty lists).

    Returns
    -------
    Scores
        ``frame``: one row per customer (order of the feature rows) with the columns of
        :data:`serving.scores.SCORE_COLUMNS`: money in currency units, ``expected_lifetime_days``
        and ``recency_days`` in days, ``expected_spend_curve`` and ``expected_margin_curve`` arrays
        of K values (one per lifetime horizon), ``drivers`` a dict ``{"churn": [...], "spend": [...]}`` of
        ``{"feature", "value", "contribution"}`` (SHAP values in the model's raw score);
        ``run``: the :class:`~serving.scores.ScoringRun` (as_of, horizon, versions, CLV settings).
    """
    out = score_columns(
        tables, as_of=as_of, champion=champion, clv=clv, reference=reference, top_drivers=top_drivers
    )
    out["drivers"] = np.array(out["drivers"], dtype=object)
    for name in CURVE_COLUMNS:
        column = np.empty(len(out[name]), dtype=object)
        column[:] = out[name]
        out[name] = column
    n = len(out["customer_id"])
    for name in ("churn_model_version", "spend_model_version", "feature_set_id"):
        out[name] = np.full(n, out[name], dtype=object)
    run = ScoringRun(
        as_of=parse_cutoff(as_of),
        horizon_days=champion.horizon_days,
        churn_model_version=champion.churn_version,
        spend_model_version=champion.spend_version,
        run_id=champion.run_id,
        feature_set_id=champion.feature_set_id,
        clv=clv or champion_clv_config(champion),
        btyd=champion.btyd_params,
        interval_coverage=champion.lifetime.interval_coverage,
    )
    return Scores(frame=pd.DataFrame({name: out[name] for name in SCORE_COLUMNS}), run=run)


def score_columns(
    tables: Tables,
    *,
    as_of: date | str | pd.Timestamp,
    champion: Champion,
    clv: ClvConfig | None = None,
    reference: SegmentReference | None = None,
    top_drivers: int = TOP_DRIVERS,
    attributes: bool = True,
) -> dict[str, Any]:
    """The columns of :func:`score_tables` before they become a frame (the service's fast path).

    Same arguments and numbers as :func:`score_tables`; per-customer columns are arrays in the
    order of ``customer_id``, except ``drivers`` (a list of dicts), the curve columns (lists of
    arrays of K values) and the three version columns, which are single strings shared by every
    customer. ``attributes=False`` leaves out
    ``channel``, ``acquired_at`` and ``acquisition_cost``, which ``POST /clv`` does not return.
    """
    clv = clv or champion_clv_config(champion)
    cutoff = pd.Timestamp(parse_cutoff(as_of))
    h, features = _history_and_features(tables, cutoff, champion)
    if top_drivers > 0 and len(features):
        predictions, drivers = champion.models.predict_and_explain(features, top_k=top_drivers)
    else:
        predictions = champion.models.predict(features)
        drivers = [{"churn": [], "spend": []} for _ in range(len(features))]
    horizon = champion.horizon_days
    n = len(features)
    # The boosters forecast their label horizon; the spend curve (training.curve) gives the scores'
    # horizon, each of the K lifetime horizons, lifetime CLV, P(alive) and the intervals.
    lifetime = champion.lifetime
    curve = lifetime.curve(
        h,
        churn_probability=predictions["churn_probability"].to_numpy(dtype=float),
        spend_if_active=predictions["spend_if_active"].to_numpy(dtype=float),
        horizon_days=horizon,
        clv=clv,
    )
    spend_lower, spend_upper = curve.spend_interval(lifetime.interval_level)
    clv_lower, clv_upper = curve.clv_interval(lifetime.interval_level)

    # Columns as arrays, the frame built once: a per-request cost that shows at one customer.
    out: dict[str, Any] = {
        "customer_id": features.index.array,
        "as_of": np.full(n, cutoff.date(), dtype=object),
        "horizon_days": np.full(n, horizon, dtype=np.int64),
        "churn_probability": curve.churn_probability,
        "p_alive": curve.p_alive,
        "spend_if_active": curve.spend_if_active,
        "expected_spend": curve.expected_spend[:, 0],
        "expected_spend_lower": spend_lower,
        "expected_spend_upper": spend_upper,
        "clv_horizon": curve.expected_margin[:, 0],
        "clv": curve.clv,
        "clv_lower": clv_lower,
        "clv_upper": clv_upper,
        "expected_lifetime_days": curve.expected_lifetime_days,
        "expected_spend_curve": list(curve.expected_spend),
        "expected_margin_curve": list(curve.expected_margin),
    }
    for column in ("recency_days", "frequency", "monetary_value"):
        out[column] = features[column].to_numpy(dtype=float)
    if n:
        reference = reference or SegmentReference.from_scores(out)
        out["clv_tier"], out["rfm_segment"] = reference.segments(out)
    else:
        out["clv_tier"] = out["rfm_segment"] = np.empty(0, dtype=object)
    if attributes:
        out.update(_attributes(tables, features.index, cutoff))
    out["drivers"] = drivers
    out["churn_model_version"] = champion.churn_version
    out["spend_model_version"] = champion.spend_version
    out["feature_set_id"] = champion.feature_set_id
    return out


def _attributes(tables: Tables, ids: pd.Index, cutoff: pd.Timestamp) -> dict[str, Any]:
    """``channel``, ``acquired_at`` (default: first transaction) and ``acquisition_cost`` per customer."""
    n = len(ids)
    channel = np.full(n, None, dtype=object)
    acquired = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    cost = np.full(n, np.nan)
    customers = tables.customers
    if customers is not None and len(customers):
        pos = pd.Index(customers["customer_id"]).get_indexer(ids)
        found = pos >= 0
        take = pos[found]
        if "channel" in customers.columns:
            channel[found] = customers["channel"].to_numpy(dtype=object, na_value=None)[take]
        if "acquired_at" in customers.columns:
            acquired[found] = customers["acquired_at"].to_numpy(dtype="datetime64[ns]")[take]
        if "acquisition_cost" in customers.columns:
            cost[found] = customers["acquisition_cost"].to_numpy(dtype=float, na_value=np.nan)[take]
    missing = np.isnat(acquired)
    if missing.any():
        # First transaction in the history, per customer (numpy: a groupby costs ms on tiny frames).
        tx = tables.transactions
        stamps = tx["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64)
        owner = ids.get_indexer(tx["customer_id"])
        keep = (owner >= 0) & (stamps < (cutoff + pd.Timedelta(days=1)).value)
        first = np.full(n, np.iinfo(np.int64).max)
        np.minimum.at(first, owner[keep], stamps[keep])
        acquired[missing] = first[missing].view("datetime64[ns]")
    return {
        "channel": pd.array(channel, dtype="str"),
        "acquired_at": pd.DatetimeIndex(acquired).normalize().to_numpy(),
        "acquisition_cost": cost,
    }


def score(
    source: str | Path,
    *,
    cutoff: date | str | pd.Timestamp,
    out: str | Path,
    champion: Champion,
    clv: ClvConfig | None = None,
    reference: SegmentReference | None = None,
    **load_options: Any,
) -> Scores:
    """Batch CLV of every customer of a data source, written to Parquet or CSV by extension.

    Parameters
    ----------
    source : str or path
        Directory of contract tables or a SQLAlchemy URL (:func:`features.io.load_tables`).
    cutoff : date
        Score as of the end of this day.
    out : str or path
        ``.parquet`` or ``.csv`` file (:func:`serving.scores.write_scores`); parent directories are
        created.
    champion : Champion
        From :func:`training.registry.load_champion`.
    clv, reference
        See :func:`score_tables`.
    **load_options
        Passed to :func:`features.io.load_tables` (``column_map``, ``on_invalid``, ...).

    Returns
    -------
    Scores
        As written.
    """
    if Path(out).suffix not in (".parquet", ".csv"):
        raise ValueError(f"out must end in .parquet or .csv, got {str(out)!r}")
    tables = load_tables(source, **load_options).tables
    scores = score_tables(tables, as_of=cutoff, champion=champion, clv=clv, reference=reference)
    write_scores(scores, out)
    return scores
