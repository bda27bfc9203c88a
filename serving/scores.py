"""The scores contract: the columns of a scoring run, and the run itself, declared once.

``clvcast score`` writes one row per scored customer; everything downstream (``clvcast budget``, the
service's segments, tests) reads the same declaration. A scores file also carries the run that
produced it (:class:`ScoringRun`: as_of, horizon, model versions, the CLV settings and the BTYD
parameters of the champion), so nothing downstream guesses the horizon or the CLV settings from a
default: in Parquet as schema metadata, beside a CSV file as ``<file>.run.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from features.btyd import BTYDParams
from serving.prospects import ProspectModel
from training.config import ClvConfig

__all__ = [
    "CURVE_COLUMNS",
    "SCORE_COLUMNS",
    "SCORE_SCHEMA",
    "SUBSCRIPTION_COLUMNS",
    "SUBSCRIPTION_SCHEMA",
    "LeftOut",
    "ScoreColumn",
    "Scores",
    "ScoresWriter",
    "ScoringRun",
    "file_rows",
    "read_scores",
    "write_scores",
]


@dataclass(frozen=True)
class ScoreColumn:
    """One column of a scores table: name, pandas dtype and meaning (with units)."""

    name: str
    dtype: str
    description: str


SCORE_SCHEMA: tuple[ScoreColumn, ...] = (
    ScoreColumn("customer_id", "str", "customer identifier"),
    ScoreColumn("as_of", "object", "scoring date (datetime.date): history is everything before the end of this day"),
    ScoreColumn("horizon_days", "int64", "H of churn_probability and expected_spend, days"),
    ScoreColumn("churn_probability", "float64", "P(no purchase in the next horizon_days), 0..1"),
    ScoreColumn("p_alive", "float64", "probability that the customer is still a customer (has not dropped out), as the lifetime CLV uses it, 0..1; 0 for a prospect (not a customer until a first purchase)"),
    ScoreColumn("spend_if_active", "float64", "expected spend over the horizon if the customer buys, at least one order, currency units"),
    ScoreColumn("expected_spend", "float64", "(1 - churn_probability) * spend_if_active over the horizon, currency units"),
    ScoreColumn("expected_spend_lower", "float64", "lower bound of the interval of the spend over the horizon (run.interval_coverage of customers), currency units"),
    ScoreColumn("expected_spend_upper", "float64", "upper bound of the interval of the spend over the horizon, currency units"),
    ScoreColumn("clv_horizon", "float64", "margin over the next horizon after cost to serve, (1 - p)(m s - c), currency units"),
    ScoreColumn("clv", "float64", "lifetime CLV: discounted expected margin of the spend curve over the lifetime cap of K horizons, currency units"),
    ScoreColumn("clv_lower", "float64", "lower bound of the interval of the lifetime CLV, currency units"),
    ScoreColumn("clv_upper", "float64", "upper bound of the interval of the lifetime CLV, currency units"),
    ScoreColumn("expected_lifetime_days", "float64", "expected remaining lifetime up to the cap of K horizons, days (dropout process)"),
    ScoreColumn("expected_spend_curve", "object", "expected spend in each horizon k = 1..K (days (k-1)H+1 .. kH after as_of), list of K floats, currency units"),
    ScoreColumn("expected_margin_curve", "object", "m * expected spend - c * P(a purchase) in each horizon k = 1..K, undiscounted, list of K floats, currency units"),
    ScoreColumn("clv_tier", "object", "CLV tier, e.g. 'top 10%'"),
    ScoreColumn("rfm_segment", "object", "RFM segment, e.g. 'champions'"),
    ScoreColumn("recency_days", "float64", "days from the last purchase to as_of; NaN for a prospect (no purchase)"),
    ScoreColumn("frequency", "float64", "repeat purchase days; NaN for a prospect"),
    ScoreColumn("monetary_value", "float64", "mean spend per purchase day, currency units; NaN for a prospect"),
    ScoreColumn("channel", "str", "acquisition channel; missing when unknown"),
    ScoreColumn("acquired_at", "datetime64[ns]", "acquisition date (default: first transaction)"),
    ScoreColumn("acquisition_cost", "float64", "CAC paid for this customer, currency units; NaN when unknown"),
    ScoreColumn("drivers", "object", "top drivers per model: {'churn': [...], 'spend': [...]}"),
    ScoreColumn("churn_model_version", "object", "version of clvcast-churn"),
    ScoreColumn("spend_model_version", "object", "version of clvcast-spend"),
    ScoreColumn("feature_set_id", "object", "feature set of both models"),
)  # fmt: skip
#: Column names of a scores table, in order.
SCORE_COLUMNS: tuple[str, ...] = tuple(c.name for c in SCORE_SCHEMA)
#: Columns a subscription scoring (``run.business == "subscription"``) adds after :data:`SCORE_SCHEMA`;
#: there ``churn_probability``, ``p_alive``, ``spend_if_active``, ``expected_spend``, the ``clv``
#: columns, ``expected_lifetime_days`` and the curves are the contractual model's
#: (:func:`serving.contractual.score_contractual`): P(cancel in the next horizon_days), lifetime CLV
#: over the whole survival curve (no cap: the curves show K horizons, the CLV sums every invoice).
SUBSCRIPTION_SCHEMA: tuple[ScoreColumn, ...] = (
    ScoreColumn("subscription_state", "str", "active, reactivated, cancelled_paid_through (churn decided: churn_probability 1, no revenue beyond the paid period), churned, or missing for a customer without an invoice"),
    ScoreColumn("plan", "str", "plan of the running subscription, or last billed; missing without an invoice"),
    ScoreColumn("mrr", "float64", "monthly recurring revenue at as_of, currency units per month; 0 unless subscribed"),
    ScoreColumn("clv_classic", "float64", "classic cross-check: gross margin x MRR / monthly logo churn of the customer's segment over the last 12 months, undiscounted, currency units; 0 unless subscribed"),
)  # fmt: skip
SUBSCRIPTION_COLUMNS: tuple[str, ...] = tuple(c.name for c in SUBSCRIPTION_SCHEMA)
#: Columns holding one value per horizon k = 1..K (K = run.clv.lifetime_horizons): float arrays in a
#: frame, lists in Parquet, JSON text in CSV.
CURVE_COLUMNS: tuple[str, ...] = ("expected_spend_curve", "expected_margin_curve")

_METADATA_KEY = b"clvcast.scoring_run"


class LeftOut(BaseModel):
    """Customers of one kind that the tables know but the scores do not hold, and why.

    Attributes
    ----------
    kind : str
        A kind of :func:`features.population.customer_population` (e.g. ``acquired_after_cutoff``).
    customers : int
        How many.
    reason : str
        Why they are not scored.
    first : tuple of str
        The first few ids (sorted), to look them up.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    customers: int = Field(ge=1)
    reason: str
    first: tuple[str, ...] = ()


class ScoringRun(BaseModel):
    """The run behind a scores table: what its numbers mean.

    Attributes
    ----------
    as_of : date
    horizon_days : int
    churn_model_version, spend_model_version : str
    run_id : str
        MLflow training run of the champion pair.
    feature_set_id : str
    clv : ClvConfig
        Margin, cost to serve, discount rate and lifetime cap the ``clv`` column was computed with.
    btyd : BTYDParams
        The champion's BTYD parameters (and their time unit).
    interval_coverage : float
        Share of customers the ``*_lower`` / ``*_upper`` intervals are calibrated to cover.
    population : dict of str to int
        Customers of each kind of :func:`features.population.customer_population` in the tables
        at ``as_of`` (empty in files written before it was recorded).
    left_out : tuple of LeftOut
        The kinds not in the rows, with how many and why: the population minus the rows.
    prospects : ProspectModel or None
        The model that scored the customers without a purchase (``rfm_segment`` ``"prospect"``);
        None when there was no evidence to fit one (those customers are then in ``left_out``).
    business : {"retail", "subscription"}
        ``subscription``: the subscribers' churn, spend and CLV columns are the contractual model's
        and the rows carry :data:`SUBSCRIPTION_COLUMNS` (files written before it: ``retail``).
    contractual : dict or None
        The fitted contractual model of a subscription scoring
        (:meth:`serving.contractual.ContractualModel.to_dict`): the service scores requests with it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    as_of: date
    horizon_days: int = Field(ge=1)
    churn_model_version: str
    spend_model_version: str
    run_id: str
    feature_set_id: str
    clv: ClvConfig
    btyd: BTYDParams
    interval_coverage: float = Field(0.8, gt=0, lt=1)
    population: dict[str, int] = Field(default_factory=dict)
    left_out: tuple[LeftOut, ...] = ()
    prospects: ProspectModel | None = None
    business: Literal["retail", "subscription"] = "retail"
    contractual: dict[str, Any] | None = None


@dataclass(frozen=True)
class Scores:
    """A scores table and the run that produced it."""

    frame: pd.DataFrame
    run: ScoringRun


def write_scores(scores: Scores, out: str | Path) -> Path:
    """Write scores to ``.parquet`` or ``.csv`` (with ``<file>.run.json``); ``drivers`` as JSON text.

    Raises
    ------
    ValueError
        On another file extension, or a frame without the columns of :data:`SCORE_COLUMNS`.
    """
    with ScoresWriter(out, scores.run) as writer:
        writer.write(file_rows(scores.frame, scores.run.business))
    return writer.path


def file_rows(frame: pd.DataFrame, business: str = "retail") -> pd.DataFrame:
    """The rows of a scores frame as a file holds them: the contract's columns in order, ``drivers``
    as JSON text, the curves as lists of floats (what :class:`ScoresWriter` writes).

    Raises
    ------
    ValueError
        On a frame without the columns of :data:`SCORE_COLUMNS` (and of :data:`SUBSCRIPTION_COLUMNS`
        for a subscription scoring).
    """
    missing = [c for c in SCORE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"scores: missing column(s) {missing}")
    columns = list(SCORE_COLUMNS)
    if business == "subscription":
        missing = [c for c in SUBSCRIPTION_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"scores: a subscription scoring misses column(s) {missing}")
        columns += SUBSCRIPTION_COLUMNS
    rows = frame[columns].copy()
    rows["drivers"] = [json.dumps(d, separators=(",", ":")) for d in rows["drivers"]]
    for name in CURVE_COLUMNS:
        rows[name] = [np.asarray(v, dtype=float).tolist() for v in rows[name]]
    return rows


class ScoresWriter:
    """Appends blocks of rows to one scores file: Parquet row groups, or CSV lines (and ``<file>.run.json``).

    Blocks of rows written one after the other make the file :func:`write_scores` makes of all of
    them at once; every Parquet row group has one schema, the first block's unless given. The run is
    known before the first row (it goes in the Parquet schema). Use as a context manager.

    Parameters
    ----------
    out : str or path
        ``.parquet`` or ``.csv`` file; parent directories are created.
    run : ScoringRun
        The run of every row written.
    schema : pyarrow.Schema, optional
        Arrow schema of the rows (Parquet).
    """

    def __init__(self, out: str | Path, run: ScoringRun, *, schema: pa.Schema | None = None) -> None:
        self.path = Path(out)
        if self.path.suffix not in (".parquet", ".csv"):
            raise ValueError(f"out must end in .parquet or .csv, got {str(out)!r}")
        self.run = run
        self.rows = 0
        self._schema = schema
        self._parquet: pq.ParquetWriter | None = None
        self._started = False

    def __enter__(self) -> ScoresWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self

    def write(self, rows: pd.DataFrame) -> None:
        """Append ``rows`` (as :func:`file_rows` makes them)."""
        if self.path.suffix == ".parquet":
            self.write_table(pa.Table.from_pandas(rows, schema=self._schema, preserve_index=False))
            return
        rows = rows.copy()
        for name in CURVE_COLUMNS:
            rows[name] = [json.dumps(np.asarray(v, dtype=float).tolist()) for v in rows[name]]
        rows.to_csv(self.path, index=False, mode="a" if self._started else "w", header=not self._started)
        self._started = True
        self.rows += len(rows)

    def write_table(self, rows: pa.Table) -> None:
        """Append ``rows`` given as an Arrow table of the file's columns."""
        if self.path.suffix == ".csv":
            self.write(rows.to_pandas())
            return
        if self._parquet is None:
            self._schema = self._schema or rows.schema
            run_json = self.run.model_dump_json().encode()
            schema = self._schema.with_metadata({**(self._schema.metadata or {}), _METADATA_KEY: run_json})
            self._parquet = pq.ParquetWriter(self.path, schema)
        self._parquet.write_table(rows)
        self._started = True
        self.rows += rows.num_rows

    def __exit__(self, *exc) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self.path.suffix == ".csv" and exc[0] is None:
            _run_sidecar(self.path).write_bytes(self.run.model_dump_json().encode())


#: The scoring run of a Parquet dataset of scores (``clvcast score --cluster``), beside its part files.
DATASET_RUN = "_scoring_run.json"


def write_dataset_run(run: ScoringRun, directory: str | Path) -> Path:
    """Write the run of a whole scoring beside the part files of its Parquet dataset (:data:`DATASET_RUN`)."""
    path = Path(directory) / DATASET_RUN
    path.write_bytes(run.model_dump_json().encode())
    return path


def read_scores(path: str | Path) -> Scores:
    """Read a file written by :func:`write_scores`, with the dtypes of :data:`SCORE_SCHEMA` and its run.

    ``path`` may also be the directory of a Parquet dataset of scores (one file per partition, as
    ``clvcast score --cluster`` writes) with its :data:`DATASET_RUN`.

    Raises
    ------
    FileNotFoundError
        No such file, a CSV without its ``.run.json`` or a dataset without its run.
    ValueError
        A file that is not a clvcast scores file (missing columns or run), or whose rows disagree
        with its run (another as_of or horizon).
    """
    path = Path(path)
    if path.is_dir():
        sidecar = path / DATASET_RUN
        if not sidecar.is_file():
            raise FileNotFoundError(f"{path}: not a clvcast scores dataset (no {DATASET_RUN}, written by clvcast score --cluster)")
        # Files whose name starts with "_" (the run) are not data to pyarrow's dataset reader.
        frame = pq.read_table(path).to_pandas()
        run_json = sidecar.read_bytes()
    elif not path.is_file():
        raise FileNotFoundError(f"scores file not found: {path}")
    elif path.suffix == ".csv":
        frame = pd.read_csv(
            path,
            dtype={"customer_id": "str", "channel": "str", "churn_model_version": "str", "spend_model_version": "str",
                   "subscription_state": "str", "plan": "str"},
            parse_dates=["acquired_at"],
        )
        if "as_of" in frame:
            frame["as_of"] = pd.to_datetime(frame["as_of"]).dt.date
        sidecar = _run_sidecar(path)
        if not sidecar.is_file():
            raise FileNotFoundError(f"{path}: its scoring run {sidecar.name} is missing (written beside it by clvcast score)")
        run_json = sidecar.read_bytes()
    elif path.suffix == ".parquet":
        table = pq.read_table(path)
        run_json = (table.schema.metadata or {}).get(_METADATA_KEY)
        if run_json is None:
            raise ValueError(f"{path}: not a clvcast scores file (no scoring run in its metadata); rewrite it with clvcast score")
        frame = table.to_pandas()
    else:
        raise ValueError(f"scores must be a .parquet or .csv file, got {path}")
    missing = [c for c in SCORE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected the columns of `clvcast score`")
    run = ScoringRun.model_validate_json(run_json)
    if len(frame) and not (frame["as_of"] == run.as_of).all():
        raise ValueError(f"{path}: column 'as_of' must be {run.as_of} on every row, as its scoring run says")
    if len(frame) and not (frame["horizon_days"].to_numpy() == run.horizon_days).all():
        raise ValueError(f"{path}: column 'horizon_days' must be {run.horizon_days} on every row, as its scoring run says")
    frame["drivers"] = [json.loads(d) for d in frame["drivers"]]
    for name in CURVE_COLUMNS:
        frame[name] = [np.asarray(json.loads(v) if isinstance(v, str) else v, dtype=float) for v in frame[name]]
    frame["horizon_days"] = frame["horizon_days"].astype(np.int64)
    return Scores(frame=frame, run=run)


def _run_sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".run.json")
