"""Scoring: raw tables + the champion models → one CLV row per customer.

One function, :func:`score_columns`, serves both batch scoring (:func:`score_tables`, ``clvcast
score``) and the HTTP service (``POST /clv``), so the two cannot disagree: features come from
:func:`features.build.build_features` with the champion's feature settings and BTYD parameters (the
code and settings of training), predictions from the champion's :class:`~training.models.ClvModels`,
the CLV arithmetic from :mod:`serving.clv` and the segments from :mod:`serving.segments`. The
columns are declared in :mod:`serving.scores`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.build import build_features, feature_columns
from features.contract import Tables
from features.dates import parse_cutoff
from features.history import History, buyer_ids, customer_blocks, isin_ids, prepare_history
from features.io import load_tables
from features.population import KINDS, PROSPECT_KINDS, customer_population
from features.schema import feature_schema
from features.spec import assemble
from serving.contractual import ContractualModel, score_contractual
from serving.prospects import ProspectModel, fit_prospects
from serving.scores import (
    CURVE_COLUMNS, SCORE_COLUMNS, SUBSCRIPTION_COLUMNS, LeftOut, Scores, ScoresWriter, ScoringRun, file_rows, write_scores,
)  # fmt: skip
from serving.segments import PROSPECT_SEGMENT, SegmentReference, clv_tier
from training.config import ClvConfig
from training.curve import SpendCurve
from training.registry import Champion
from training.treeshap import TABLE_ROWS

__all__ = [
    "DECIDED_SEGMENTS", "TOP_DRIVERS", "WrittenScores", "build_champion_features", "champion_clv_config", "score",
    "score_columns", "score_tables", "score_to_file", "spend_curve_of",
]  # fmt: skip

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


def spend_curve_of(tables: Tables, *, as_of: date | str | pd.Timestamp, champion: Champion, clv: ClvConfig) -> tuple[pd.Index, SpendCurve]:
    """The buyers' ids and their spend curve as the scores compute them (features, the boosters, :mod:`training.curve`).

    For a caller that needs more than the score columns, e.g. the interval moments to mix the
    curves of several made-up customers (:func:`serving.lifetime.new_customer_curves`).
    """
    cutoff = pd.Timestamp(parse_cutoff(as_of))
    h, features = _history_and_features(tables, cutoff, champion)
    curve = _spend_curve(champion, h, champion.models.predict(features), horizon_days=champion.horizon_days, clv=clv)
    return pd.Index(features.index), curve


def _spend_curve(champion: Champion, h: History, predictions: pd.DataFrame, *, horizon_days: int, clv: ClvConfig) -> SpendCurve:
    """The champion's spend curve of the customers of ``h`` from the boosters' ``predictions`` (in ``h``'s order)."""
    return champion.lifetime.curve(
        h,
        churn_probability=predictions["churn_probability"].to_numpy(dtype=float),
        spend_if_active=predictions["spend_if_active"].to_numpy(dtype=float),
        horizon_days=horizon_days,
        clv=clv,
    )


def score_tables(
    tables: Tables,
    *,
    as_of: date | str | pd.Timestamp,
    champion: Champion,
    clv: ClvConfig | None = None,
    reference: SegmentReference | None = None,
    top_drivers: int = TOP_DRIVERS,
    prospects: ProspectModel | None | Literal["fit"] = "fit",
    contractual: ContractualModel | None = None,
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
    prospects : ProspectModel, None or "fit"
        The model of the customers without a purchase: ``"fit"`` fits it on these tables
        (:func:`serving.prospects.fit_prospects`); a cluster run passes the one fitted on the whole
        book's trials, since a partition's trials are only part of them. None leaves them out.
    contractual : ContractualModel, optional
        Subscription mode: the contractual model fitted on these tables
        (:func:`serving.contractual.fit_contractual`); see :func:`score_columns`. The run records it
        (``business`` ``"subscription"``, ``contractual``) and the frame gets
        :data:`serving.scores.SUBSCRIPTION_COLUMNS`.

    Returns
    -------
    Scores
        ``frame``: one row per customer known at ``as_of``: the buyers (order of the feature rows),
        then the customers without a purchase scored as prospects (:mod:`serving.prospects`, fitted
        on these tables; ``rfm_segment`` ``"prospect"``), with the columns of
        :data:`serving.scores.SCORE_COLUMNS`: money in currency units, ``expected_lifetime_days``
        and ``recency_days`` in days, ``expected_spend_curve`` and ``expected_margin_curve`` arrays
        of K values (one per lifetime horizon), ``drivers`` a dict ``{"churn": [...], "spend": [...]}`` of
        ``{"feature", "value", "contribution"}`` (SHAP values in the model's raw score);
        ``run``: the :class:`~serving.scores.ScoringRun` (as_of, horizon, versions, CLV settings,
        the population by kind, the customers left out and why, the prospect model).
    """
    if isinstance(prospects, str):
        prospects = fit_prospects(tables, as_of=as_of, horizon_days=champion.horizon_days)
    out = score_columns(
        tables, as_of=as_of, champion=champion, clv=clv, reference=reference, top_drivers=top_drivers,
        prospects=prospects, contractual=contractual,
    )  # fmt: skip
    run = _scoring_run(out, as_of=as_of, champion=champion, clv=clv, prospects=prospects, contractual=contractual)
    columns = SCORE_COLUMNS if contractual is None else SCORE_COLUMNS + SUBSCRIPTION_COLUMNS
    return Scores(frame=_frame(out, columns), run=run)


def _frame(out: dict[str, Any], columns: tuple[str, ...]) -> pd.DataFrame:
    """The columns of :func:`score_columns` as a scores frame: one object per row in the drivers, curve and version columns."""
    out = dict(out)
    out["drivers"] = np.array(out["drivers"], dtype=object)
    for name in CURVE_COLUMNS:
        column = np.empty(len(out[name]), dtype=object)
        column[:] = out[name]
        out[name] = column
    n = len(out["customer_id"])
    for name in ("churn_model_version", "spend_model_version", "feature_set_id"):
        out[name] = np.full(n, out[name], dtype=object)
    return pd.DataFrame({name: out[name] for name in columns})


def _scoring_run(out: dict[str, Any], *, as_of, champion: Champion, clv: ClvConfig | None, prospects, contractual) -> ScoringRun:
    """The :class:`~serving.scores.ScoringRun` of a scoring whose population and left-out customers ``out`` holds."""
    return ScoringRun(
        as_of=parse_cutoff(as_of),
        horizon_days=champion.horizon_days,
        churn_model_version=champion.churn_version,
        spend_model_version=champion.spend_version,
        run_id=champion.run_id,
        feature_set_id=champion.feature_set_id,
        clv=clv or champion_clv_config(champion),
        btyd=champion.btyd_params,
        interval_coverage=champion.lifetime.interval_coverage,
        population=out["population"],
        left_out=out["left_out"],
        prospects=prospects,
        business="retail" if contractual is None else "subscription",
        contractual=None if contractual is None else contractual.to_dict(),
    )


def score_columns(
    tables: Tables,
    *,
    as_of: date | str | pd.Timestamp,
    champion: Champion,
    clv: ClvConfig | None = None,
    reference: SegmentReference | None = None,
    top_drivers: int = TOP_DRIVERS,
    attributes: bool = True,
    prospects: ProspectModel | None = None,
    undated_known: bool = False,
    contractual: ContractualModel | None = None,
) -> dict[str, Any]:
    """The columns of :func:`score_tables` before they become a frame (the service's fast path).

    Same arguments and numbers as :func:`score_tables`; per-customer columns are arrays in the
    order of ``customer_id``, except ``drivers`` (a list of dicts), the curve columns (lists of
    arrays of K values) and the three version columns, which are single strings shared by every
    customer. ``attributes=False`` leaves out
    ``channel``, ``acquired_at`` and ``acquisition_cost``, which ``POST /clv`` does not return.
    ``prospects`` scores the customers without a purchase (None: they are left out);
    ``undated_known`` counts ``customers`` rows without a date or activity as customers (see
    :func:`features.population.customer_population`; the service's requests). A ValueError names
    the cutoff and the kinds when no customer is left to score. Two more
    keys: ``population`` (customers per kind of :func:`features.population.customer_population`)
    and ``left_out`` (a tuple of :class:`~serving.scores.LeftOut`).

    ``contractual`` (subscription mode): every customer with an invoice takes its churn, P(alive),
    spend, CLV, lifetime, intervals and curves from the contractual model
    (:func:`serving.contractual.score_contractual`, scoring as of ``as_of`` with the scores' horizon
    and ``clv`` arithmetic); the columns of :data:`serving.scores.SUBSCRIPTION_COLUMNS` are added;
    a customer who cancelled or churned is in the RFM segment ``cancelled`` or ``churned``. The
    drivers remain those of the champion's boosters.
    """
    clv = clv or champion_clv_config(champion)
    cutoff = pd.Timestamp(parse_cutoff(as_of))
    population = _population(tables, cutoff, champion.horizon_days, undated_known)
    has_buyers = population is None or (population["kind"].to_numpy() == "buyer").any()
    subscribers = None if contractual is None else _contractual_scores(
        contractual, tables, cutoff=cutoff, horizon_days=champion.horizon_days, clv=clv,
        interval_coverage=champion.lifetime.interval_coverage,
    )  # fmt: skip
    out, drivers = _buyer_columns(
        tables if has_buyers else None, cutoff=cutoff, champion=champion, clv=clv, top_drivers=top_drivers,
        subscribers=subscribers,
    )  # fmt: skip
    if len(out["customer_id"]):
        reference = reference or SegmentReference.from_scores(out)
        out["clv_tier"], out["rfm_segment"] = reference.segments(out)
    else:
        out["clv_tier"] = out["rfm_segment"] = np.empty(0, dtype=object)
    out, drivers, ids = _with_prospects(
        out, drivers, population, prospects, reference, cutoff, champion.horizon_days, clv,
        champion.lifetime.interval_coverage,
    )  # fmt: skip
    if subscribers is not None:
        _subscription_columns(out, subscribers, ids)
    if len(ids) == 0:
        raise _nobody_to_score(cutoff, out)
    if attributes:
        out.update(_attributes(tables, ids, cutoff))
    out["drivers"] = drivers
    out["churn_model_version"] = champion.churn_version
    out["spend_model_version"] = champion.spend_version
    out["feature_set_id"] = champion.feature_set_id
    return out


def _nobody_to_score(cutoff: pd.Timestamp, out: dict[str, Any]) -> ValueError:
    known = {k: n for k, n in out["population"].items() if n}
    return ValueError(
        f"cutoff {cutoff.date()}: no customer to score (customers by kind: {known or 'none'}; "
        + "; ".join(f"{o.customers} {o.kind} left out: {o.reason}" for o in out["left_out"])
        + ")"
    )


def _buyer_columns(
    tables: Tables | None, *, cutoff: pd.Timestamp, champion: Champion, clv: ClvConfig, top_drivers: int,
    subscribers: pd.DataFrame | None,
) -> tuple[dict[str, Any], list]:
    """The columns of the customers with a purchase by ``cutoff`` (sorted by id) before their segments, and their drivers.

    Per customer, each value depends on that customer's rows only (and on the champion): the
    buyers of a block of customers get the values they get in the whole book. ``tables`` None: no
    buyer (empty columns). ``subscribers``: the contractual scores (:func:`_contractual_scores`).
    """
    if tables is not None:
        h, features = _history_and_features(tables, cutoff, champion)
    else:  # only prospects (or nobody): the models and the spend curve have nothing to score
        h, features = None, pd.DataFrame(
            {spec.name: pd.Series([], dtype=spec.dtype) for spec in feature_schema(champion.feature_config)},
            index=pd.Index([], dtype="str", name="customer_id"),
        )
    if top_drivers > 0 and len(features):
        predictions, drivers = champion.models.predict_and_explain(features, top_k=top_drivers)
    else:
        predictions = (
            champion.models.predict(features)
            if len(features)
            else pd.DataFrame({"churn_probability": [], "spend_if_active": []}, dtype=float)
        )
        drivers = [{"churn": [], "spend": []} for _ in range(len(features))]
    horizon = champion.horizon_days
    n = len(features)
    # Columns as arrays, the frame built once: a per-request cost that shows at one customer.
    out: dict[str, Any] = {
        "customer_id": features.index.array,
        "as_of": np.full(n, cutoff.date(), dtype=object),
        "horizon_days": np.full(n, horizon, dtype=np.int64),
        **_curve_columns(champion, h, predictions, horizon_days=horizon, clv=clv),
    }
    if subscribers is not None:
        _take_contractual(out, subscribers)
    for column in ("recency_days", "frequency", "monetary_value"):
        out[column] = features[column].to_numpy(dtype=float)
    return out, drivers


def _curve_columns(
    champion: Champion, h: History | None, predictions: pd.DataFrame, *, horizon_days: int, clv: ClvConfig
) -> dict[str, Any]:
    """The prediction, CLV and interval columns of the buyers, from the spend curve (training.curve).

    The boosters forecast their label horizon; the curve gives the scores' horizon, each of the K
    lifetime horizons, lifetime CLV, P(alive) and the intervals. ``h`` None (no buyer): empty columns.
    """
    if h is None:
        empty = np.empty(0, dtype=float)
        return {**{name: empty for name in _CURVE_FLOATS}, **{name: [] for name in CURVE_COLUMNS}}
    lifetime = champion.lifetime
    curve = _spend_curve(champion, h, predictions, horizon_days=horizon_days, clv=clv)
    spend_lower, spend_upper = curve.spend_interval(lifetime.interval_level)
    clv_lower, clv_upper = curve.clv_interval(lifetime.interval_level)
    return {
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


def _contractual_scores(
    model: ContractualModel, tables: Tables, *, cutoff: pd.Timestamp, horizon_days: int, clv: ClvConfig,
    interval_coverage: float,
) -> pd.DataFrame:
    """:func:`serving.contractual.score_contractual` as of ``cutoff`` with the scores' horizon and arithmetic."""
    at = model.scoring_at(
        as_of=cutoff.date(), horizon_days=horizon_days, gross_margin=clv.gross_margin,
        cost_to_serve_per_horizon=clv.cost_to_serve, annual_discount_rate=clv.annual_discount_rate,
    )  # fmt: skip
    return score_contractual(at, tables, lifetime_horizons=clv.lifetime_horizons, interval_coverage=interval_coverage)


def _take_contractual(out: dict[str, Any], subscribers: pd.DataFrame) -> None:
    """Replace the buyers' prediction, CLV and curve columns by the contractual ones where a customer has an invoice."""
    pos = subscribers.index.get_indexer(pd.Index(out["customer_id"], dtype="str"))
    has = pos >= 0
    take = pos[has]
    for name in _CURVE_FLOATS:
        values = np.array(out[name], dtype=float, copy=True)
        values[has] = subscribers[name].to_numpy(dtype=float)[take]
        out[name] = values
    for name in CURVE_COLUMNS:
        contract = subscribers[name].to_numpy()
        out[name] = [contract[p] if p >= 0 else v for p, v in zip(pos, out[name], strict=True)]


#: ``rfm_segment`` of a subscriber whose churn is decided, by ``subscription_state``.
DECIDED_SEGMENTS = {"cancelled_paid_through": "cancelled", "churned": "churned"}


def _subscription_columns(out: dict[str, Any], subscribers: pd.DataFrame, ids: pd.Index) -> None:
    """Add :data:`serving.scores.SUBSCRIPTION_COLUMNS` for every row; decided churn renames the RFM segment."""
    found = subscribers.reindex(ids)
    state = found["state"].astype(object).to_numpy()
    out["subscription_state"] = pd.array(state, dtype="str")
    out["plan"] = pd.array(found["plan"].astype(object).to_numpy(), dtype="str")
    out["mrr"] = found["mrr"].fillna(0.0).to_numpy(dtype=float)
    out["clv_classic"] = found["clv_classic"].fillna(0.0).to_numpy(dtype=float)
    segment = np.asarray(out["rfm_segment"], dtype=object).copy()
    for decided, name in DECIDED_SEGMENTS.items():
        segment[state == decided] = name
    out["rfm_segment"] = segment


_CURVE_FLOATS = (
    "churn_probability", "p_alive", "spend_if_active", "expected_spend", "expected_spend_lower",
    "expected_spend_upper", "clv_horizon", "clv", "clv_lower", "clv_upper", "expected_lifetime_days",
)  # fmt: skip


def _with_prospects(out, drivers, population, prospects, reference, cutoff, horizon, clv, interval_level, buyers=None):
    """Append the prospects' rows to the buyers' columns; count who is left out, and why.

    ``interval_level``: the share the intervals promise to cover (exact for a prospect's two-valued
    first horizon, see :mod:`serving.prospects`). ``buyers``: the buyers of the whole scoring when
    ``out`` holds only some of them (default: ``out``'s).

    Returns the columns, the drivers and the ids of all rows, with ``out["population"]`` and
    ``out["left_out"]`` set. ``population`` None: every customer is a buyer (see :func:`_population`).
    """
    if population is None:
        n = len(out["customer_id"]) if buyers is None else buyers
        out["population"] = {k: n if k == "buyer" else 0 for k in KINDS}
        out["left_out"] = ()
        return out, drivers, pd.Index(out["customer_id"], dtype="str", name="customer_id")
    kind = population["kind"].to_numpy()
    is_prospect = np.isin(kind, PROSPECT_KINDS)
    ids = pd.Index(out["customer_id"], dtype="str", name="customer_id")
    left_out = []
    if prospects is not None and is_prospect.any():
        rows = population[is_prospect]
        channel = rows["channel"].astype(object).where(rows["channel"].notna(), None).to_numpy()
        extra = prospects.columns(channel, rows["recent_events"].to_numpy() > 0, horizon_days=horizon, clv=clv,
                                  interval_level=interval_level)
        m = len(rows)
        extra.update(
            customer_id=rows.index.array,
            as_of=np.full(m, cutoff.date(), dtype=object),
            horizon_days=np.full(m, horizon, dtype=np.int64),
            recency_days=np.full(m, np.nan), frequency=np.full(m, np.nan), monetary_value=np.full(m, np.nan),
            # Tiers relative to the reference (the buyers scored with them), or to the prospects alone.
            clv_tier=clv_tier(extra["clv"]) if reference is None else clv_tier(
                extra["clv"], reference.clv_thresholds, top_shares=reference.top_shares
            ),
            rfm_segment=np.full(m, PROSPECT_SEGMENT, dtype=object),
        )  # fmt: skip
        for name, values in extra.items():
            if name in CURVE_COLUMNS:  # lists of arrays of K values
                out[name] = list(out[name]) + list(values)
            else:
                out[name] = np.concatenate([np.asarray(out[name], dtype=object if name in _OBJECT else None), values])
        drivers = list(drivers) + [{"churn": [], "spend": []} for _ in range(m)]
        ids = ids.append(pd.Index(rows.index, dtype="str"))
    elif is_prospect.any():
        left_out += _left_out(population, PROSPECT_KINDS, "no purchase yet, and no prospect model: no customer "
                              "without a purchase was seen at an origin before the cutoff, so no first-purchase "
                              "rate could be fitted")  # fmt: skip
    left_out += _left_out(population, ("acquired_after_cutoff",), "acquired after the cutoff: not a customer yet")
    left_out += _left_out(population, ("unknown_acquisition",), "no acquired_at and no activity by the cutoff: "
                          "whether it was a customer then cannot be told")  # fmt: skip
    counts = population["kind"].value_counts()
    out["population"] = {k: int(counts.get(k, 0)) for k in KINDS}
    out["left_out"] = tuple(left_out)
    return out, drivers, ids


def _population(tables: Tables, cutoff: pd.Timestamp, horizon_days: int, undated_known: bool) -> pd.DataFrame | None:
    """:func:`features.population.customer_population`, or None when every id of every table bought.

    The check is a few array operations: a request of the service, whose customers have bought,
    does not pay for the population's frame (tens of milliseconds on one customer).
    """
    tx = tables.transactions
    end = (cutoff + pd.Timedelta(days=1)).to_datetime64()
    bought = (tx["amount"].to_numpy() >= 0) & (tx["timestamp"].to_numpy() < end)
    buyers = tx["customer_id"][bought]
    ids = [t["customer_id"] for t in (tx, tables.events, tables.customers) if t is not None]
    if all(isin_ids(values, buyers).all() for values in ids):
        return None
    return customer_population(tables, cutoff=cutoff, engagement_days=horizon_days, undated_known=undated_known)

_OBJECT = ("customer_id", "as_of", "clv_tier", "rfm_segment")


def _left_out(population: pd.DataFrame, kinds: tuple[str, ...], reason: str) -> list[LeftOut]:
    """One :class:`LeftOut` per kind of ``kinds`` that has customers."""
    out = []
    for kind in kinds:
        ids = population.index[(population["kind"] == kind).to_numpy()]
        if len(ids):
            out.append(LeftOut(kind=kind, customers=len(ids), reason=reason, first=tuple(str(i) for i in ids[:5])))
    return out


def _attributes(tables: Tables, ids: pd.Index, cutoff: pd.Timestamp) -> dict[str, Any]:
    """``channel``, ``acquired_at`` (default: first transaction, else first event) and ``acquisition_cost``."""
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
    for table in (tables.transactions, tables.events):
        missing = np.isnat(acquired)
        if not missing.any() or table is None:
            continue
        # First transaction (contract default), else first event (a prospect seen only in events),
        # per customer (numpy: a groupby costs ms on tiny frames).
        stamps = table["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64)
        owner = ids.get_indexer(table["customer_id"])
        keep = (owner >= 0) & (stamps < (cutoff + pd.Timedelta(days=1)).value)
        first = np.full(n, np.iinfo(np.int64).max)
        np.minimum.at(first, owner[keep], stamps[keep])
        found = missing & (first < np.iinfo(np.int64).max)
        acquired[found] = first[found].view("datetime64[ns]")
    return {
        "channel": pd.array(channel, dtype="str"),
        "acquired_at": pd.DatetimeIndex(acquired).normalize().to_numpy(),
        "acquisition_cost": cost,
    }


#: Inputs of :meth:`serving.segments.SegmentReference.segments` among the scores' columns.
_SEGMENT_INPUTS = ("clv", "recency_days", "frequency", "monetary_value", "p_alive", "churn_probability")


@dataclass(frozen=True)
class WrittenScores:
    """What :func:`score_to_file` wrote: the file, its run, its rows and how many of them are prospects."""

    path: Path
    run: ScoringRun
    customers: int
    prospects: int


def score_to_file(
    tables: Tables,
    out: str | Path,
    *,
    as_of: date | str | pd.Timestamp,
    champion: Champion,
    clv: ClvConfig | None = None,
    reference: SegmentReference | None = None,
    top_drivers: int = TOP_DRIVERS,
    prospects: ProspectModel | None | Literal["fit"] = "fit",
    contractual: ContractualModel | None = None,
    block_customers: int = 100_000,
) -> WrittenScores:
    """:func:`score_tables` written to a file block of customers by block, in a memory that follows the block.

    The file holds the rows :func:`write_scores` of :func:`score_tables` writes, in the same
    order, with the same values and the same run: the buyers (sorted by id) are scored
    ``block_customers`` at a time (:func:`features.history.customer_blocks`: features,
    predictions, drivers, curves and attributes of each block, then freed) into a temporary
    Parquet file beside ``out``; their segments, relative to the whole book, are cut once every
    block is scored (from four floats per buyer), as the rows are copied row group by row group into
    ``out``; the prospects follow. What stays in memory for the whole book: the tables, the
    population by kind, the segment reference's inputs.

    Parameters
    ----------
    tables, as_of, champion, clv, reference, top_drivers, prospects, contractual
        As :func:`score_tables`.
    out : str or path
        ``.parquet`` (one row group per block) or ``.csv`` file (with ``<file>.run.json``).
    block_customers : int
        Buyers per block (``scoring.block_customers`` of the configuration), at least
        :data:`training.treeshap.TABLE_ROWS` (8); a shorter last block joins the one before.

    Returns
    -------
    WrittenScores

    Raises
    ------
    ValueError
        As :func:`score_tables`; on another extension of ``out`` or fewer than 8 customers per block.
    """
    path = Path(out)
    if path.suffix not in (".parquet", ".csv"):
        raise ValueError(f"out must end in .parquet or .csv, got {str(out)!r}")
    if block_customers < TABLE_ROWS:
        raise ValueError(f"block_customers must be at least {TABLE_ROWS}, got {block_customers}")
    if isinstance(prospects, str):
        prospects = fit_prospects(tables, as_of=as_of, horizon_days=champion.horizon_days)
    clv = clv or champion_clv_config(champion)
    cutoff = pd.Timestamp(parse_cutoff(as_of))
    horizon = champion.horizon_days
    business = "retail" if contractual is None else "subscription"
    columns = SCORE_COLUMNS if contractual is None else SCORE_COLUMNS + SUBSCRIPTION_COLUMNS
    population = _population(tables, cutoff, horizon, False)
    buyers = buyer_ids(tables.transactions, cutoff)
    subscribers = None if contractual is None else _contractual_scores(
        contractual, tables, cutoff=cutoff, horizon_days=horizon, clv=clv,
        interval_coverage=champion.lifetime.interval_coverage,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    scored = path.with_name(f".{path.name}.buyers.parquet")  # the buyers' rows before their segments
    schema = None
    try:
        with contextlib.ExitStack() as stack:
            # No block of fewer than TABLE_ROWS buyers: their drivers would take the direct
            # computation of a few rows, equal to the tables' only to the last bits.
            for block in customer_blocks(tables, buyers, block_customers, min_size=TABLE_ROWS):
                rows = _block_rows(block, cutoff=cutoff, champion=champion, clv=clv, top_drivers=top_drivers,
                                   subscribers=subscribers, columns=columns, business=business)  # fmt: skip
                del block
                if schema is None:
                    schema = pa.Schema.from_pandas(rows, preserve_index=False)
                    writer = stack.enter_context(pq.ParquetWriter(scored, schema))
                writer.write_table(pa.Table.from_pandas(rows, schema=schema, preserve_index=False))
                del rows
        if reference is None and len(buyers):
            values = pq.read_table(scored, columns=list(_SEGMENT_INPUTS[:4]))
            reference = SegmentReference.from_scores({name: values[name].to_numpy() for name in values.column_names})
            del values
        empty, _ = _buyer_columns(None, cutoff=cutoff, champion=champion, clv=clv, top_drivers=0, subscribers=None)
        empty["clv_tier"] = empty["rfm_segment"] = np.empty(0, dtype=object)
        extra, drivers, ids = _with_prospects(
            empty, [], population, prospects, reference, cutoff, horizon, clv, champion.lifetime.interval_coverage,
            buyers=len(buyers),
        )  # fmt: skip
        if len(buyers) + len(ids) == 0:
            raise _nobody_to_score(cutoff, extra)
        run = _scoring_run(extra, as_of=as_of, champion=champion, clv=clv, prospects=prospects, contractual=contractual)
        with ScoresWriter(path, run, schema=schema) as writer:
            if schema is not None:
                source = pq.ParquetFile(scored)
                for i in range(source.num_row_groups):
                    writer.write_table(_with_segments(source.read_row_group(i), reference))
            if len(ids):
                if subscribers is not None:
                    _subscription_columns(extra, subscribers, ids)
                extra.update(_attributes(tables, ids, cutoff))
                extra.update(drivers=drivers, churn_model_version=champion.churn_version,
                             spend_model_version=champion.spend_version, feature_set_id=champion.feature_set_id)  # fmt: skip
                writer.write(file_rows(_frame(extra, columns), business))
    finally:
        scored.unlink(missing_ok=True)
    return WrittenScores(path=path, run=run, customers=len(buyers) + len(ids), prospects=len(ids))


def _block_rows(tables: Tables, *, cutoff, champion, clv, top_drivers, subscribers, columns, business) -> pd.DataFrame:
    """The file rows (:func:`serving.scores.file_rows`) of a block's buyers, segments left empty."""
    out, drivers = _buyer_columns(tables, cutoff=cutoff, champion=champion, clv=clv, top_drivers=top_drivers,
                                  subscribers=subscribers)  # fmt: skip
    ids = pd.Index(out["customer_id"], dtype="str", name="customer_id")
    # Cut once the whole book's reference is known (:func:`_with_segments`).
    out["clv_tier"] = out["rfm_segment"] = np.full(len(ids), "", dtype=object)
    if subscribers is not None:
        _subscription_columns(out, subscribers, ids)
    out.update(_attributes(tables, ids, cutoff))
    out.update(drivers=drivers, churn_model_version=champion.churn_version, spend_model_version=champion.spend_version,
               feature_set_id=champion.feature_set_id)  # fmt: skip
    return file_rows(_frame(out, columns), business)


def _with_segments(rows: pa.Table, reference: SegmentReference) -> pa.Table:
    """Buyers' rows of :func:`_block_rows` with their CLV tier and RFM segment (decided churn renames the segment)."""
    tier, segment = reference.segments({name: rows[name].to_numpy() for name in _SEGMENT_INPUTS})
    if "subscription_state" in rows.column_names:
        state = rows["subscription_state"].to_numpy(zero_copy_only=False)
        segment = np.asarray(segment, dtype=object).copy()
        for decided, name in DECIDED_SEGMENTS.items():
            segment[state == decided] = name
    for name, values in (("clv_tier", tier), ("rfm_segment", segment)):
        i = rows.schema.get_field_index(name)
        rows = rows.set_column(i, rows.schema.field(i), pa.array(values, type=rows.schema.field(i).type))
    return rows


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
