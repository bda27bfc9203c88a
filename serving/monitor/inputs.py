"""What the monitor reads from the raw tables: per-customer reductions and the last day of the data.

:func:`serving.monitor.compute.compute_monitor` never reads a transaction itself. It asks for a
:class:`MonitorInputs` by a :class:`MonitorRequest`, and :func:`monitor_inputs` builds it from the
tables with pure per-customer functions (and a maximum). The tables of a part of the book that
holds whole customers (a customer partition on a Dask cluster, :mod:`serving.cluster`) give that
part's rows, and :meth:`MonitorInputs.combine` makes the book's: per-customer rows concatenated in
``customer_id`` order, the last day the latest of the parts'. So a monitor of a book too large for
one machine reads its tables on the workers and only per-customer values come back.

What the monitor reads, and where it goes:

- the last day with a transaction (the data end, up to the monitor's ``as_of``): which scorings
  have matured;
- the features of every customer with a purchase at the latest scoring date, computed with the
  feature settings and BTYD parameters of the models that made it
  (:func:`features.build.build_features`), only the columns the drift reference holds: feature drift;
- per matured scoring, the realised spend and churn of every customer known at its date over its
  horizon (:func:`training.labels.build_labels`, as the models were trained): realised performance.

The data end decides which scorings are matured, so a monitor asks twice: first for the data end
and the features, then for the outcomes of the matured scorings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from features.btyd import BTYDParams
from features.build import build_features
from features.config import FeatureConfig
from features.contract import Tables
from features.dates import history_until
from features.population import has_buyer
from features.schema import feature_schema
from training.labels import CHURN_DEFINITIONS, build_labels

__all__ = ["FeatureRequest", "MonitorInputs", "MonitorReader", "MonitorRequest", "OutcomeRequest", "monitor_inputs"]

#: Columns of :attr:`MonitorInputs.outcomes` frames.
OUTCOME_COLUMNS = ("actual_spend", "churned")


@dataclass(frozen=True)
class FeatureRequest:
    """The features of the latest scoring, as its models computed them.

    Attributes
    ----------
    cutoff : date
        The scoring date.
    config : FeatureConfig
        The models' feature settings (:attr:`training.artifact.ServingArtifact.feature_config`).
    btyd : BTYDParams
        The models' BTYD parameters: no fit on the data, so each customer's features are its own.
    columns : tuple of str
        The columns wanted (those of the drift reference); others are not returned.
    """

    cutoff: dt.date
    config: FeatureConfig
    btyd: BTYDParams
    columns: tuple[str, ...]


@dataclass(frozen=True)
class OutcomeRequest:
    """The realised outcomes of one scoring: its date, horizon H in days and the models' churn definition."""

    as_of: dt.date
    horizon_days: int
    churn_definition: str = "purchase"


@dataclass(frozen=True)
class MonitorRequest:
    """What one read of the tables is for.

    Attributes
    ----------
    until : date or None
        Cut the tables at the end of this day first (:func:`features.dates.history_until`): a
        monitor as of a past day. ``None``: all the data.
    features : FeatureRequest or None
    outcomes : tuple of OutcomeRequest
    """

    until: dt.date | None = None
    features: FeatureRequest | None = None
    outcomes: tuple[OutcomeRequest, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class MonitorInputs:
    """The raw tables as one :class:`MonitorRequest` reads them (:func:`monitor_inputs`).

    Attributes
    ----------
    request : MonitorRequest
    data_end : date or None
        Last day with a transaction (up to ``request.until``); ``None`` without any transaction.
    features : DataFrame or None
        With a feature request: indexed by ``customer_id`` (str, sorted), one row per customer with
        a purchase by its cutoff, the requested columns that the feature schema has, with their
        dtypes (``n_customers × n_columns``); ``None`` without one.
    outcomes : dict of OutcomeRequest to DataFrame
        Per requested scoring: indexed by ``customer_id`` (str, sorted), one row per customer with
        a purchase by its date, ``actual_spend`` (net spend over the horizon, currency units) and
        ``churned`` (0.0 or 1.0).
    """

    request: MonitorRequest
    data_end: dt.date | None
    features: pd.DataFrame | None
    outcomes: dict[OutcomeRequest, pd.DataFrame]

    @classmethod
    def combine(cls, parts: Sequence[MonitorInputs]) -> MonitorInputs:
        """The inputs of the whole book from those of parts that hold whole customers each (no customer in two).

        Per-customer rows are concatenated in ``customer_id`` order, so that they are those of
        :func:`monitor_inputs` on the whole book; the data end is the latest of the parts'.

        Raises
        ------
        ValueError
            Without parts, or parts read for other requests.
        """
        if not parts:
            raise ValueError("MonitorInputs.combine: no parts")
        request = parts[0].request
        other = [p.request for p in parts if p.request != request]
        if other:
            raise ValueError(f"MonitorInputs.combine: parts of other requests: {request} and {other[0]}")
        ends = [p.data_end for p in parts if p.data_end is not None]
        features = None
        if request.features is not None:
            features = pd.concat([p.features for p in parts]).sort_index(kind="stable")
        outcomes = {
            wanted: pd.concat([p.outcomes[wanted] for p in parts]).sort_index(kind="stable") for wanted in request.outcomes
        }
        return cls(request=request, data_end=max(ends) if ends else None, features=features, outcomes=outcomes)


#: How :func:`~serving.monitor.compute.compute_monitor` reads the tables: a request in, the inputs out.
MonitorReader = Callable[[MonitorRequest], MonitorInputs]


def monitor_inputs(tables: Tables, request: MonitorRequest) -> MonitorInputs:
    """The reductions of ``tables`` that ``request`` asks for.

    Parameters
    ----------
    tables : Tables
        Raw tables (normalised); the whole book, or a part of it that holds whole customers.
    request : MonitorRequest

    Returns
    -------
    MonitorInputs
        A part without a customer who bought by a cutoff gives no rows for it.

    Raises
    ------
    ValueError
        An outcome request with an unknown churn definition, or ``"cancel"`` without an events
        table (:func:`training.labels.build_labels`).
    """
    for wanted in request.outcomes:  # checked here too, not only where a part has a buyer
        if wanted.churn_definition not in CHURN_DEFINITIONS:
            raise ValueError(f"churn_definition: rule 'one of {CHURN_DEFINITIONS}': got {wanted.churn_definition!r}")
    if request.until is not None:
        tables = history_until(tables, request.until)
    tx = tables.transactions
    data_end = tx["timestamp"].max().normalize().date() if len(tx) else None
    features = None
    if request.features is not None:
        wanted = request.features
        specs = [s for s in feature_schema(wanted.config) if s.name in set(wanted.columns)]
        if has_buyer(tables, wanted.cutoff):
            frame = build_features(tables, cutoff=wanted.cutoff, config=wanted.config, btyd=wanted.btyd)
            features = frame[[s.name for s in specs]]
        else:
            features = pd.DataFrame(
                {s.name: pd.Series([], dtype=s.dtype) for s in specs}, index=pd.Index([], dtype="str", name="customer_id")
            )
    outcomes = {}
    for wanted in request.outcomes:
        if has_buyer(tables, wanted.as_of):
            labels = build_labels(
                tables, cutoff=wanted.as_of, horizon_days=int(wanted.horizon_days), churn_definition=wanted.churn_definition
            )
            outcomes[wanted] = pd.DataFrame(
                {"actual_spend": labels["spend"].astype(float), "churned": labels["churn"].astype(float)}, index=labels.index
            )
        else:
            outcomes[wanted] = pd.DataFrame(
                {c: pd.Series([], dtype=float) for c in OUTCOME_COLUMNS}, index=pd.Index([], dtype="str", name="customer_id")
            )
    return MonitorInputs(request=request, data_end=data_end, features=features, outcomes=outcomes)

