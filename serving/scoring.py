"""Scoring: raw tables + the champion models → one CLV row per customer.

One function, :func:`score_tables`, serves both batch scoring (:func:`score`, ``clvcast score``) and
the HTTP service (``POST /clv``), so the two cannot disagree: features come from
:func:`features.build.build_features` with the champion's feature settings and BTYD parameters (the
code and settings of training), predictions from the champion's :class:`~training.models.ClvModels`,
and the CLV arithmetic from :mod:`serving.clv`.

Segments (CLV tier, RFM segment) are relative to a population. A :class:`SegmentReference` holds
the tier thresholds and RFM quintile edges of one population (a batch run's scores), so that a
single customer scored by the service lands in the same tier as in that batch run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.contract import Tables
from serving import clv as C

if TYPE_CHECKING:
    from training.config import ClvConfig
    from training.registry import Champion

#: Columns of a scores table, in order (``clvcast score`` writes them; ``serving.finance`` reads them).
SCORE_COLUMNS = (
    "customer_id", "as_of", "churn_probability", "spend_if_active", "expected_spend", "clv_horizon",
    "clv", "expected_lifetime_days", "clv_tier", "rfm_segment", "recency_days", "frequency",
    "monetary_value", "channel", "acquired_at", "acquisition_cost", "drivers",
    "churn_model_version", "spend_model_version", "feature_set_id",
)  # fmt: skip
#: Number of drivers kept per model and customer.
TOP_DRIVERS = 3


@dataclass(frozen=True)
class SegmentReference:
    """Tier thresholds and RFM quintile edges of a reference population.

    Parameters
    ----------
    clv_thresholds : tuple of float
        Lifetime CLV that opens each tier, decreasing (:func:`serving.clv.clv_tier_thresholds`).
    recency_edges : tuple of float
        Quintile edges of ``-recency_days`` (recent = high score).
    frequency_edges, monetary_edges : tuple of float
        Quintile edges of ``frequency`` and ``monetary_value``.
    top_shares : tuple of float
        Cumulative tier shares from the top that name the tiers.
    """

    clv_thresholds: tuple[float, ...]
    recency_edges: tuple[float, ...]
    frequency_edges: tuple[float, ...]
    monetary_edges: tuple[float, ...]
    top_shares: tuple[float, ...] = C.DEFAULT_TIER_TOP_SHARES

    @classmethod
    def from_scores(cls, scores, *, top_shares: tuple[float, ...] = C.DEFAULT_TIER_TOP_SHARES) -> SegmentReference:
        """Reference of a scored population.

        Parameters
        ----------
        scores : DataFrame or mapping of arrays
            With ``clv``, ``recency_days``, ``frequency`` and ``monetary_value``.
        """
        if len(scores["clv"]) == 0:
            raise ValueError("a segment reference needs at least one scored customer")

        def edges(values) -> tuple[float, ...]:
            return tuple(float(x) for x in C.quintile_edges(values))

        return cls(
            clv_thresholds=tuple(float(x) for x in C.clv_tier_thresholds(scores["clv"], top_shares=top_shares)),
            recency_edges=edges(-np.asarray(scores["recency_days"], dtype=float)),
            frequency_edges=edges(scores["frequency"]),
            monetary_edges=edges(scores["monetary_value"]),
            top_shares=tuple(top_shares),
        )

    def to_dict(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentReference:
        return cls(**{k: tuple(float(x) for x in v) for k, v in data.items()})

    def segments(self, scores) -> tuple[np.ndarray, np.ndarray]:
        """CLV tier and RFM segment of each row of ``scores`` (a DataFrame or a mapping of arrays)."""
        tier = C.clv_tier(scores["clv"], self.clv_thresholds, top_shares=self.top_shares)
        rfm = C.rfm_segment(
            C.quintile_score(-np.asarray(scores["recency_days"], dtype=float), self.recency_edges),
            C.quintile_score(scores["frequency"], self.frequency_edges),
            C.quintile_score(scores["monetary_value"], self.monetary_edges),
        )
        return tier, rfm


def champion_clv_config(champion: Champion) -> ClvConfig:
    """CLV settings of the champion's training run (``serving["config"]["clv"]``), else the defaults."""
    from training.config import ClvConfig, config_from_dict

    stored = (champion.serving.get("config") or {}).get("clv")
    return ClvConfig() if stored is None else config_from_dict({"clv": stored}).clv


def build_champion_features(tables: Tables, *, as_of: date | str | pd.Timestamp, champion: Champion) -> pd.DataFrame:
    """Feature rows as of ``as_of`` with the champion's feature settings and BTYD parameters."""
    from features.build import build_features

    return build_features(
        tables, cutoff=_day(as_of), config=champion.feature_config, btyd=_btyd_params(champion)
    )


def _btyd_params(champion: Champion):
    # A request of a few customers cannot fit a population model: always use the stored fit.
    from features.btyd import BTYDParams

    stored = champion.btyd_params
    if stored is None:
        raise ValueError(f"champion run {champion.run_id} stored no BTYD parameters: retrain it")
    return BTYDParams.model_validate(stored)


def score_tables(
    tables: Tables,
    *,
    as_of: date | str | pd.Timestamp,
    champion: Champion,
    clv: ClvConfig | None = None,
    reference: SegmentReference | None = None,
    top_drivers: int = TOP_DRIVERS,
) -> pd.DataFrame:
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
    DataFrame
        One row per customer (order of the feature rows) with the columns :data:`SCORE_COLUMNS`:
        money in currency units, ``expected_lifetime_days`` and ``recency_days`` in days,
        ``drivers`` a dict ``{"churn": [...], "spend": [...]}`` of ``{"feature", "value",
        "contribution"}`` (SHAP values in the model's raw score).
    """
    out = score_columns(
        tables, as_of=as_of, champion=champion, clv=clv, reference=reference, top_drivers=top_drivers
    )
    out["drivers"] = np.array(out["drivers"], dtype=object)
    n = len(out["customer_id"])
    for name in ("churn_model_version", "spend_model_version", "feature_set_id"):
        out[name] = np.full(n, out[name], dtype=object)
    return pd.DataFrame({name: out[name] for name in SCORE_COLUMNS})


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
    order of ``customer_id``, except ``drivers`` (a list of dicts) and the three version columns,
    which are single strings shared by every customer. ``attributes=False`` leaves out
    ``channel``, ``acquired_at`` and ``acquisition_cost``, which ``POST /clv`` does not return.
    """
    clv = clv or champion_clv_config(champion)
    cutoff = _day(as_of)
    features = build_champion_features(tables, as_of=cutoff, champion=champion)
    if top_drivers > 0 and len(features):
        predictions, drivers = champion.models.predict_and_explain(features, top_k=top_drivers)
    else:
        predictions = champion.models.predict(features)
        drivers = [{"churn": [], "spend": []} for _ in range(len(features))]
    p = predictions["churn_probability"].to_numpy(dtype=float)
    s = predictions["spend_if_active"].to_numpy(dtype=float)
    horizon = champion.horizon_days
    n = len(features)

    # Columns as arrays, the frame built once: a per-request cost that shows at one customer.
    out: dict[str, Any] = {
        "customer_id": features.index.array,
        "as_of": np.full(n, cutoff.date(), dtype=object),
        "churn_probability": p,
        "spend_if_active": s,
        "expected_spend": C.expected_spend(p, s),
        "clv_horizon": C.horizon_clv(p, s, margin=clv.gross_margin, cost_to_serve=clv.cost_to_serve),
        "clv": C.lifetime_clv(
            p,
            s,
            horizon_days=horizon,
            margin=clv.gross_margin,
            cost_to_serve=clv.cost_to_serve,
            annual_discount_rate=clv.annual_discount_rate,
            lifetime_horizons=clv.lifetime_horizons,
        ),
        "expected_lifetime_days": C.expected_lifetime_days(
            p, horizon_days=horizon, lifetime_horizons=clv.lifetime_horizons
        ),
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
    champion: Champion | None = None,
    clv: ClvConfig | None = None,
    reference: SegmentReference | None = None,
    **load_options: Any,
) -> pd.DataFrame:
    """Batch CLV of every customer of a data source, written to Parquet or CSV by extension.

    Parameters
    ----------
    source : str or path
        Directory of contract tables or a SQLAlchemy URL (:func:`features.io.load_tables`).
    cutoff : date
        Score as of the end of this day.
    out : str or path
        ``.parquet`` or ``.csv`` file; parent directories are created.
    champion : Champion, optional
        Default: :func:`training.registry.load_champion`.
    clv, reference
        See :func:`score_tables`.
    **load_options
        Passed to :func:`features.io.load_tables` (``column_map``, ``on_invalid``, ...).

    Returns
    -------
    DataFrame
        The scores as written (:func:`score_tables`).
    """
    from features.io import load_tables

    path = Path(out)
    if path.suffix not in (".parquet", ".csv"):
        raise ValueError(f"out must end in .parquet or .csv, got {str(out)!r}")
    if champion is None:
        from training.registry import load_champion

        champion = load_champion()
    tables = load_tables(source, **load_options).tables
    scores = score_tables(tables, as_of=cutoff, champion=champion, clv=clv, reference=reference)
    write_scores(scores, path)
    return scores


def write_scores(scores: pd.DataFrame, out: str | Path) -> None:
    """Write scores to ``.parquet`` or ``.csv``; ``drivers`` becomes JSON text, the same in both."""
    path = Path(out)
    frame = scores.copy()
    frame["drivers"] = [json.dumps(d, separators=(",", ":")) for d in frame["drivers"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        raise ValueError(f"out must end in .parquet or .csv, got {str(out)!r}")


def read_scores(path: str | Path) -> pd.DataFrame:
    """Read a file written by :func:`write_scores` with the dtypes of :func:`score_tables`."""
    path = Path(path)
    if path.suffix == ".csv":
        frame = pd.read_csv(
            path,
            dtype={"customer_id": "str", "channel": "str", "churn_model_version": "str", "spend_model_version": "str"},
            parse_dates=["acquired_at"],
        )
        frame["as_of"] = pd.to_datetime(frame["as_of"]).dt.date
    else:
        frame = pd.read_parquet(path)
    frame["drivers"] = [json.loads(d) for d in frame["drivers"]]
    return frame


def _day(value: date | str | pd.Timestamp) -> pd.Timestamp:
    return pd.Timestamp(value).normalize()
