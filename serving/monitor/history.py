"""The scoring history: every ``clvcast score --history`` run kept, one scoring per as_of and model pair.

A scoring is identified by :data:`HISTORY_KEY` (as_of and the two model versions). Appending a
scoring whose key is already in the history replaces it, so re-running a scoring never duplicates
it, while a scoring of the same day by another model pair (after a retrain) is kept beside it.

Each per-customer row holds the scores' columns, whatever they are (a column added to the scores
contract later is stored without a change here; older scorings read back with it missing), plus
the run's fields: ``run_id``, ``scored_at`` (UTC) and ``scoring_run``, the whole
:class:`~serving.scores.ScoringRun` as JSON (CLV settings, BTYD parameters). Columns holding
dicts or lists (``drivers``) are stored as JSON text and read back as text.

Two stores, chosen by the target:

- a directory: a Parquet dataset (pyarrow datasets) partitioned as
  ``as_of=YYYY-MM-DD/churn_model_version=V/spend_model_version=W/part-0.parquet``, hive style, so
  any Parquet reader (DuckDB, Spark, pandas) sees the key columns. Replacing a scoring deletes
  and rewrites its partition only (``existing_data_behavior="delete_matching"``);
- a SQLAlchemy URL (``sqlite:///``, ``duckdb:///``, ``postgresql://``): table
  :data:`SCORINGS_TABLE`, one row per scoring, and table :data:`ROWS_TABLE`, one row per scored
  customer, both keyed by :data:`HISTORY_KEY`. The replacement (delete the key's rows, insert the
  new ones, add any new score column) runs in one transaction: a reader sees the old scoring or
  the new one, never both or neither.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from serving.scores import SCORE_COLUMNS, Scores, ScoringRun

__all__ = [
    "HISTORY_KEY",
    "ROWS_TABLE",
    "RUN_COLUMNS",
    "SCORINGS_TABLE",
    "History",
    "HistoryWrite",
    "append_scores",
    "is_sql_url",
    "read_history",
]

#: Columns that identify one scoring in the history.
HISTORY_KEY = ("as_of", "churn_model_version", "spend_model_version")
#: The run's fields stored on every row besides the scores' columns.
RUN_COLUMNS = ("run_id", "scored_at", "scoring_run")
#: SQL table with one row per scoring.
SCORINGS_TABLE = "clvcast_scorings"
#: SQL table with one row per scored customer and scoring.
ROWS_TABLE = "clvcast_score_history"

_PARTITIONING = pa.schema(
    [("as_of", pa.date32()), ("churn_model_version", pa.string()), ("spend_model_version", pa.string())]
)
_SCORINGS_COLUMNS = (*HISTORY_KEY, "horizon_days", "run_id", "feature_set_id", "scored_at", "customers", "scoring_run")


@dataclass(frozen=True)
class HistoryWrite:
    """What :func:`append_scores` did.

    Attributes
    ----------
    target : str
        The history (directory or URL without its password).
    key : tuple
        ``(as_of, churn_model_version, spend_model_version)`` of the scoring.
    rows : int
        Customer rows written.
    replaced : int
        Customer rows of an earlier scoring with the same key that were replaced (0 for a new key).
    """

    target: str
    key: tuple[dt.date, str, str]
    rows: int
    replaced: int


@dataclass(frozen=True)
class History:
    """A scoring history as read back.

    Attributes
    ----------
    rows : DataFrame
        One row per scoring and customer: the scores' columns (those of :data:`SCORE_COLUMNS`
        first, with their contract dtypes; ``as_of`` as :class:`datetime.date`) and
        :data:`RUN_COLUMNS`, ordered by ``as_of``, ``scored_at`` and ``customer_id``.
    scorings : DataFrame
        One row per scoring, oldest first: :data:`HISTORY_KEY`, ``horizon_days``, ``run_id``,
        ``feature_set_id``, ``scored_at``, ``customers`` and ``scoring_run`` (a
        :class:`~serving.scores.ScoringRun`).
    """

    rows: pd.DataFrame
    scorings: pd.DataFrame

    def latest_per_day(self) -> pd.DataFrame:
        """``scorings`` with one row per as_of: the one scored last that day (by ``scored_at``)."""
        ordered = self.scorings.sort_values(["as_of", "scored_at"], kind="stable")
        return ordered.drop_duplicates("as_of", keep="last").reset_index(drop=True)

    def scoring(self, key) -> pd.DataFrame:
        """The customer rows of the scoring ``(as_of, churn_model_version, spend_model_version)``."""
        as_of, churn, spend = key
        mask = (
            (self.rows["as_of"] == as_of)
            & (self.rows["churn_model_version"] == churn)
            & (self.rows["spend_model_version"] == spend)
        )
        return self.rows.loc[mask].reset_index(drop=True)


def is_sql_url(target: str | os.PathLike) -> bool:
    """Whether ``target`` names a database (a SQLAlchemy URL) rather than a directory."""
    return isinstance(target, str) and "://" in target


# --------------------------------------------------------------------------- rows


def _key_of(run: ScoringRun) -> tuple[dt.date, str, str]:
    return (run.as_of, str(run.churn_model_version), str(run.spend_model_version))


def _stored_frame(scores: Scores, scored_at: dt.datetime) -> pd.DataFrame:
    """The rows to store: the scores' columns (dicts and lists as JSON text) and the run's fields."""
    frame = scores.frame
    missing = [c for c in SCORE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"scores: missing column(s) {missing}; expected the columns of `clvcast score`")
    clash = [c for c in RUN_COLUMNS if c in frame.columns]
    if clash:
        raise ValueError(f"scores: column(s) {clash} are reserved for the scoring run in the history")
    run = scores.run
    key = _key_of(run)
    for name, value in zip(HISTORY_KEY, key, strict=True):
        values = frame[name].astype(str) if name != "as_of" else frame[name]
        bad = int((values != value).sum())
        if bad:
            raise ValueError(f"scores: column {name!r} must be {value} on every row, as its scoring run says: {bad} row(s) differ")
    out = frame.copy()
    for name in out.columns:
        column = out[name]
        # Nested values (drivers, the spend and margin curves) are stored as JSON text, which every
        # store holds; arrays become JSON lists.
        if column.dtype == object and any(isinstance(v, (dict, list, np.ndarray)) for v in column.head(1000)):
            out[name] = [None if v is None else json.dumps(v.tolist() if isinstance(v, np.ndarray) else v,
                                                           separators=(",", ":")) for v in column]
    out["churn_model_version"] = out["churn_model_version"].astype(str)
    out["spend_model_version"] = out["spend_model_version"].astype(str)
    out["run_id"] = run.run_id
    stamp = pd.Timestamp(scored_at)
    out["scored_at"] = stamp if stamp.tzinfo is None else stamp.tz_convert("UTC").tz_localize(None)
    out["scoring_run"] = run.model_dump_json()
    return out


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def append_scores(scores: Scores, target: str | os.PathLike, *, scored_at: dt.datetime | None = None) -> HistoryWrite:
    """Add a scoring to the history at ``target``, replacing an earlier scoring with the same key.

    Parameters
    ----------
    scores : Scores
        From :func:`serving.scoring.score_tables` (or :func:`serving.scores.read_scores`): at least
        the columns of :data:`SCORE_COLUMNS`; extra columns are stored as they are.
    target : str or PathLike
        A directory (Parquet dataset, created if missing) or a SQLAlchemy URL (tables created if
        missing; a bare ``postgresql://`` uses the psycopg driver).
    scored_at : datetime, optional
        When the scoring was made (UTC); default now. Among scorings of one as_of the latest
        ``scored_at`` is the one trends use.

    Returns
    -------
    HistoryWrite

    Raises
    ------
    ValueError
        Scores without the contract's columns, with a column named like a run field, or whose
        key columns disagree with their run.
    """
    frame = _stored_frame(scores, scored_at or _now())
    key = _key_of(scores.run)
    if is_sql_url(target):
        return _SqlHistory(str(target)).replace(key, frame, scores.run)
    return _ParquetHistory(Path(target)).replace(key, frame)


def read_history(target: str | os.PathLike, *, until: dt.date | None = None) -> History:
    """Read the whole history at ``target`` (or the scorings up to ``until``).

    Parameters
    ----------
    target : str or PathLike
        As for :func:`append_scores`.
    until : date, optional
        Keep only the scorings with ``as_of <= until``.

    Returns
    -------
    History

    Raises
    ------
    FileNotFoundError
        No history there (a missing directory or database file, or no tables).
    ValueError
        A history holding no scoring (up to ``until``).
    """
    if is_sql_url(target):
        rows, scorings = _SqlHistory(str(target)).read(until)
    else:
        rows, scorings = _ParquetHistory(Path(target)).read(until)
    if rows.empty and scorings.empty:
        where = f" up to {until}" if until else ""
        raise ValueError(f"history {_display(target)} holds no scoring{where}: append one with `clvcast score --history`")
    rows = _restore_dtypes(rows)
    first = [c for c in SCORE_COLUMNS if c in rows.columns]
    last = [c for c in RUN_COLUMNS if c in rows.columns]
    rows = rows[first + [c for c in rows.columns if c not in first and c not in last] + last]
    rows = rows.sort_values(["as_of", "scored_at", "customer_id"], kind="stable").reset_index(drop=True)
    scorings = scorings.sort_values(["as_of", "scored_at"], kind="stable").reset_index(drop=True)
    scorings["scoring_run"] = [ScoringRun.model_validate_json(text) for text in scorings["scoring_run"]]
    return History(rows=rows, scorings=scorings)


def _restore_dtypes(rows: pd.DataFrame) -> pd.DataFrame:
    """The contract's dtypes on the columns of :data:`SCORE_COLUMNS` (the stores round-trip others as they can)."""
    rows = rows.copy()
    rows["as_of"] = pd.to_datetime(rows["as_of"]).dt.date
    for name in ("customer_id", "channel", "churn_model_version", "spend_model_version", "feature_set_id", "run_id"):
        if name in rows:
            rows[name] = rows[name].astype("str")  # missing values stay missing
    if "acquired_at" in rows:
        rows["acquired_at"] = pd.to_datetime(rows["acquired_at"])
    rows["scored_at"] = pd.to_datetime(rows["scored_at"])
    rows["horizon_days"] = rows["horizon_days"].astype(np.int64)
    return rows


def _display(target) -> str:
    if is_sql_url(target):
        import sqlalchemy as sa

        return sa.engine.make_url(str(target)).render_as_string(hide_password=True)
    return str(target)


def _scorings_of(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per scoring from the per-customer rows (the Parquet store keeps the run on every row)."""
    if rows.empty:
        return pd.DataFrame(columns=list(_SCORINGS_COLUMNS))
    g = rows.groupby(list(HISTORY_KEY), sort=False, dropna=False)
    out = g.agg(
        horizon_days=("horizon_days", "first"),
        run_id=("run_id", "first"),
        feature_set_id=("feature_set_id", "first"),
        scored_at=("scored_at", "first"),
        customers=("customer_id", "size"),
        scoring_run=("scoring_run", "first"),
    ).reset_index()
    return out[list(_SCORINGS_COLUMNS)]


# --------------------------------------------------------------------------- Parquet


class _ParquetHistory:
    """The history as a hive-partitioned Parquet dataset under one directory."""

    def __init__(self, root: Path):
        self.root = root

    def _dataset(self) -> ds.Dataset | None:
        if not self.root.is_dir():
            return None
        partitioning = ds.partitioning(_PARTITIONING, flavor="hive")
        found = ds.dataset(self.root, format="parquet", partitioning=partitioning)
        fragments = list(found.get_fragments())
        if not fragments:
            return None
        # Scorings written before a score column existed lack it: one schema over all files, the
        # missing columns read as nulls.
        schema = pa.unify_schemas(
            [f.physical_schema for f in fragments] + [_PARTITIONING], promote_options="permissive"
        )
        return ds.dataset(self.root, format="parquet", partitioning=partitioning, schema=schema)

    def _key_filter(self, key):
        as_of, churn, spend = key
        return (ds.field("as_of") == pa.scalar(as_of, pa.date32())) & (
            ds.field("churn_model_version") == churn
        ) & (ds.field("spend_model_version") == spend)

    def replace(self, key, frame: pd.DataFrame) -> HistoryWrite:
        existing = self._dataset()
        replaced = 0 if existing is None else existing.count_rows(filter=self._key_filter(key))
        table = pa.Table.from_pandas(frame, preserve_index=False)
        self.root.mkdir(parents=True, exist_ok=True)
        ds.write_dataset(
            table,
            self.root,
            format="parquet",
            partitioning=ds.partitioning(_PARTITIONING, flavor="hive"),
            # Only the partition directories written to are emptied first: that scoring's files.
            existing_data_behavior="delete_matching",
            basename_template="part-{i}.parquet",
        )
        return HistoryWrite(str(self.root), key, len(frame), int(replaced))

    def read(self, until):
        if not self.root.exists():
            raise FileNotFoundError(f"history not found: {self.root} (create it with `clvcast score --history`)")
        dataset = self._dataset()
        if dataset is None:
            return pd.DataFrame(), pd.DataFrame()
        flt = None if until is None else ds.field("as_of") <= pa.scalar(until, pa.date32())
        rows = dataset.to_table(filter=flt).to_pandas()
        return rows, _scorings_of(rows)


# --------------------------------------------------------------------------- SQL


class _SqlHistory:
    """The history as two tables of a SQL database, written and read through SQLAlchemy."""

    def __init__(self, url: str):
        # Imported here: SQLAlchemy takes a second to import and most histories are directories.
        import sqlalchemy as sa

        self.sa = sa
        parsed = sa.engine.make_url(url)
        if parsed.drivername == "postgresql":
            # The project's PostgreSQL driver is psycopg 3; SQLAlchemy's default would be psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.url = parsed
        self.display = parsed.render_as_string(hide_password=True)

    def _engine(self, *, must_exist: bool):
        backend = self.url.get_backend_name()
        database = self.url.database
        if must_exist and backend in ("sqlite", "duckdb") and database not in (None, "", ":memory:"):
            if not Path(database).exists():
                raise FileNotFoundError(f"history database not found: {database}")
        return self.sa.create_engine(self.url)

    def _column_type(self, series: pd.Series):
        sa = self.sa
        if series.name == "as_of":
            return sa.Date()
        if pd.api.types.is_bool_dtype(series):
            return sa.Boolean()
        if pd.api.types.is_integer_dtype(series):
            return sa.BigInteger()
        if pd.api.types.is_float_dtype(series):
            return sa.Float(53)  # double precision everywhere
        if pd.api.types.is_datetime64_any_dtype(series):
            return sa.DateTime()
        return sa.Text()

    def _key(self):
        sa = self.sa
        return [sa.Column("as_of", sa.Date(), nullable=False),
                sa.Column("churn_model_version", sa.Text(), nullable=False),
                sa.Column("spend_model_version", sa.Text(), nullable=False)]  # fmt: skip

    def _existing_columns(self, conn, table: str) -> list[str]:
        # Names from an empty result rather than SQLAlchemy's reflection, which duckdb-engine
        # cannot do (it queries PostgreSQL catalog tables that DuckDB lacks).
        quoted = conn.dialect.identifier_preparer.quote(table)
        return list(conn.execute(self.sa.text(f"SELECT * FROM {quoted} WHERE 1 = 0")).keys())

    def _tables(self, metadata, frame: pd.DataFrame | None, conn):
        """The two tables: declared from their existing columns, else created from ``frame``'s.

        Columns of ``frame`` get the SQL type of their dtype (so values are bound as such); other
        existing columns are declared without a type and read back as the driver returns them.
        """
        sa = self.sa
        inspector = sa.inspect(conn)
        if inspector.has_table(SCORINGS_TABLE) and inspector.has_table(ROWS_TABLE):
            tables = []
            for name in (SCORINGS_TABLE, ROWS_TABLE):
                columns = [
                    sa.Column(c, self._column_type(frame[c]) if frame is not None and c in frame else sa.types.NullType())
                    for c in self._existing_columns(conn, name)
                    if c not in HISTORY_KEY
                ]
                tables.append(sa.Table(name, metadata, *self._key(), *columns))
            return tuple(tables)
        if frame is None:
            raise FileNotFoundError(f"history {self.display} has no {SCORINGS_TABLE} and {ROWS_TABLE} tables")
        key = self._key
        scorings = sa.Table(
            SCORINGS_TABLE, metadata, *key(),
            sa.Column("horizon_days", sa.BigInteger(), nullable=False),
            sa.Column("run_id", sa.Text(), nullable=False),
            sa.Column("feature_set_id", sa.Text(), nullable=False),
            sa.Column("scored_at", sa.DateTime(), nullable=False),
            sa.Column("customers", sa.BigInteger(), nullable=False),
            sa.Column("scoring_run", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint(*HISTORY_KEY),
        )  # fmt: skip
        columns = [sa.Column(name, self._column_type(frame[name])) for name in frame.columns if name not in HISTORY_KEY]
        rows = sa.Table(
            ROWS_TABLE, metadata, *key(), *columns,
            sa.Index(f"ix_{ROWS_TABLE}_key", *HISTORY_KEY),
        )  # fmt: skip
        metadata.create_all(conn)
        return scorings, rows

    def _add_new_columns(self, conn, rows, frame: pd.DataFrame):
        """``ALTER TABLE ... ADD COLUMN`` for score columns the table does not have yet."""
        sa = self.sa
        new = [name for name in frame.columns if name not in rows.c]
        if not new:
            return rows
        preparer = conn.dialect.identifier_preparer
        for name in new:
            type_sql = self._column_type(frame[name]).compile(dialect=conn.dialect)
            conn.execute(sa.text(
                f"ALTER TABLE {preparer.quote(ROWS_TABLE)} ADD COLUMN {preparer.quote(name)} {type_sql}"
            ))  # fmt: skip
        return self._tables(sa.MetaData(), frame, conn)[1]

    def replace(self, key, frame: pd.DataFrame, run: ScoringRun) -> HistoryWrite:
        sa = self.sa
        engine = self._engine(must_exist=False)
        # The run's JSON goes once into the scorings table, not on every customer row.
        frame, scored_at = frame.drop(columns=["scoring_run"]), frame["scored_at"]
        try:
            with engine.begin() as conn:  # one transaction: the old scoring or the new one
                scorings, rows = self._tables(sa.MetaData(), frame, conn)
                rows = self._add_new_columns(conn, rows, frame)
                where_rows = sa.and_(*(rows.c[k] == v for k, v in zip(HISTORY_KEY, key, strict=True)))
                where_scorings = sa.and_(*(scorings.c[k] == v for k, v in zip(HISTORY_KEY, key, strict=True)))
                replaced = conn.execute(sa.select(sa.func.count()).select_from(rows).where(where_rows)).scalar_one()
                conn.execute(rows.delete().where(where_rows))
                conn.execute(scorings.delete().where(where_scorings))
                conn.execute(scorings.insert(), [{
                    "as_of": key[0], "churn_model_version": key[1], "spend_model_version": key[2],
                    "horizon_days": int(run.horizon_days), "run_id": run.run_id, "feature_set_id": run.feature_set_id,
                    "scored_at": scored_at.iloc[0].to_pydatetime() if len(frame) else _now(),
                    "customers": len(frame), "scoring_run": run.model_dump_json(),
                }])  # fmt: skip
                if len(frame):
                    conn.execute(rows.insert(), _records(frame))
        finally:
            engine.dispose()
        return HistoryWrite(self.display, key, len(frame), int(replaced))

    def read(self, until):
        sa = self.sa
        engine = self._engine(must_exist=True)
        try:
            with engine.connect() as conn:
                scorings, rows = self._tables(sa.MetaData(), None, conn)
                select_s, select_r = sa.select(scorings), sa.select(rows)
                if until is not None:
                    select_s = select_s.where(scorings.c.as_of <= until)
                    select_r = select_r.where(rows.c.as_of <= until)
                scoring_frame = pd.read_sql(select_s, conn)
                row_frame = pd.read_sql(select_r, conn)
        finally:
            engine.dispose()
        # The run's JSON is kept once per scoring in SQL; every row carries it as in Parquet.
        runs = scoring_frame.assign(as_of=pd.to_datetime(scoring_frame["as_of"]).dt.date)
        row_frame["as_of"] = pd.to_datetime(row_frame["as_of"]).dt.date
        row_frame = row_frame.merge(runs[[*HISTORY_KEY, "scoring_run"]], on=list(HISTORY_KEY), how="left")
        runs["scored_at"] = pd.to_datetime(runs["scored_at"])
        return row_frame, runs[list(_SCORINGS_COLUMNS)]


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts of plain Python values, missing values as None (SQL NULL)."""
    out = frame.astype(object).where(frame.notna(), None)
    records = out.to_dict("records")
    for record in records:
        for name, value in record.items():
            if isinstance(value, pd.Timestamp):
                record[name] = value.to_pydatetime()
            elif isinstance(value, np.generic):
                record[name] = value.item()
    return records
