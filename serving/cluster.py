"""clvcast on a Dask cluster: the one module that talks to Dask.

Nothing here computes a feature, a label or a score. The pure per-customer functions of the
in-process path (:func:`features.build.build_features`, :func:`training.labels.build_labels`,
:func:`features.btyd.btyd_summary`, :func:`serving.scoring.score_tables`,
:func:`serving.prospects.prospect_trials`) run unchanged on partitions that hold whole customers;
this module only reads, partitions, wires and gathers.

- **Where**: :func:`connect` opens a client on a ``dask.distributed.LocalCluster`` (``"local"``: one
  single-threaded worker process per core, loopback only) or on a running scheduler
  (``tcp://HOST:PORT``; also ``CLVCAST_DASK_SCHEDULER``).
- **Partitions**: :func:`read_tables` reads each table as a Dask dataframe (a Parquet file,
  directory or glob; CSV; anything fsspec reads, e.g. ``s3://`` with s3fs), validates and normalises
  each input partition with the loader's own rules (:func:`features.io.validate.validate_table`),
  and moves each row to the partition ``hash(customer_id) mod P``
  (:func:`customer_bucket`): partition *i* of every table holds the same customers, all of their
  rows, in the order of the files. :func:`read_sql_tables` does the same for a PostgreSQL database
  or a SQLite or DuckDB file: each worker reads ranges of the customer key (see below), the client
  only the key buckets. :func:`scatter_tables` does the same for tables already in memory (another
  database, or an in-memory one).
- **Databases by hand-written partitions**: :func:`read_sql_tables` builds its partitions as
  ``dask.delayed`` reads rather than with ``dask.dataframe.read_sql_query`` (Dask 2026.8), which
  would not give the in-process tables: it reads through a SQLAlchemy engine and ``pandas.read_sql``
  only (PostgreSQL's in-process load goes through ADBC with its casts, DuckDB's through DuckDB's
  own Arrow); it casts every partition to the dtypes of the first rows it reads (measured on
  SQLite: a partition with a NULL in an integer column that had none in those rows fails with
  ``IntCastingNaNError``, and a column NULL in those rows becomes text in every partition); and its
  ranges are closed at the first and last division and never hold a NULL key, so rows that break
  the contract, or keys outside the divisions, would vanish instead of failing. Each partition
  here is the loader's own reader (:class:`features.io.sources.SqlReader`) on one key range, the
  first and last open-ended, plus one partition for NULL keys.
- **Population parameters**: the BTYD models are fitted on the client on the gathered per-customer
  summary (four floats per customer, sorted by ``customer_id`` as in-process, so the fit is the
  same to the last bit) and sent back to the partitions with the task.
- **Training sample**: :func:`sample_on_cluster` counts the book's customers partition by partition,
  cuts every partition to the sample of ``training.sample_customers`` (:mod:`features.sample`, the
  same hash as the partitions) and gathers only the sample into the client, for ``train`` and
  ``backtest`` with a book too large for one machine.
- **Boosters**: :func:`fit_boosters` trains the churn classifier and the spend regressor with
  ``lightgbm.dask`` on the partitioned training rows, with the parameters of
  :func:`training.models.lightgbm_params`; the result is an ordinary :class:`ClvModels`.
- **Scores**: :func:`score_to_dataset` scores partition by partition with the book's segment
  reference and prospect model (both from gathered per-customer values) and writes one Parquet file
  per partition.
- **Finance budget**: :func:`budget_inputs_on_cluster` reduces the tables partition by partition to
  what :func:`serving.finance.compute_budget` reads (:func:`serving.finance.inputs.budget_inputs`:
  per-customer rows and aggregates that add up); the forecast's BG/NBD fit and the simulation run
  on the client on the gathered rows.
- **Monitor**: :func:`monitor_inputs_on_cluster` reduces the tables partition by partition to what
  :func:`serving.monitor.compute.compute_monitor` reads (:func:`serving.monitor.inputs.monitor_inputs`:
  the last day of the data, the latest scoring's features and the matured scorings' realised
  outcomes, per customer); drift, performance, trends and alerts are computed on the client.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from features.btyd import BTYDParams, btyd_summary
from features.btyd.params import fit_btyd_params
from features.btyd.summary import BTYDSummary
from features.build import build_features, feature_columns
from features.config import FeatureConfig
from features.contract import TABLE_SPECS, DataValidationError, Tables
from features.dates import history_until, parse_cutoff
from features.history import prepare_history
from features.population import PROSPECT_KINDS, customer_population, has_buyer
from features.sample import CustomerSample, book_customer_count, customer_hash, in_sample, sample_threshold
from features.io.column_map import parse_column_map
from features.io.sources import KeyRange, RawTable
from features.io.validate import validate_table
from features.schema import feature_names, feature_schema
from features.spec import FeatureSpec, assemble
from training.config import BTYD_OFFSET_FEATURES, Config, TrainingConfig
from training.labels import LABEL_SCHEMA, build_labels
from training.models import ClvModels, FeatureEncoder, TrainingDataError, btyd_offsets, lightgbm_params
from training.training_set import degenerate_origins, training_set_schema

log = logging.getLogger(__name__)

#: Environment variable naming the scheduler when ``--cluster`` is not given.
SCHEDULER_ENV = "CLVCAST_DASK_SCHEDULER"
#: Table names of the contract, in reading order.
TABLE_NAMES = ("transactions", "events", "customers")

# Helper columns of the partitioned tables: the customer's partition, and the row's place in the
# input (input partition, row in it), which restores the file order inside a partition.
_BUCKET, _PART, _ROW = "_clvcast_bucket", "_clvcast_part", "_clvcast_row"
_HELPERS = [_PART, _ROW]


class ClusterUnavailable(ConnectionError):
    """The Dask scheduler named by ``--cluster`` or ``CLVCAST_DASK_SCHEDULER`` cannot be reached."""


# --------------------------------------------------------------------------- the client


def scheduler_address(option: str | None) -> str | None:
    """``--cluster`` if given, else ``CLVCAST_DASK_SCHEDULER``, else None (the in-process path)."""
    return option or os.environ.get(SCHEDULER_ENV) or None


@contextlib.contextmanager
def connect(
    address: str, *, n_workers: int | None = None, processes: bool = True, timeout_seconds: float = 10.0
) -> Iterator[Any]:
    """A ``dask.distributed.Client`` on ``address`` until the block ends (a local cluster is then stopped).

    Parameters
    ----------
    address : str
        ``"local"``: a ``LocalCluster`` on 127.0.0.1 with ``n_workers`` single-threaded workers
        (default: one per core, each with its share of the memory); else a scheduler address
        such as ``tcp://10.0.0.5:8786``.
    n_workers : int, optional
        Workers of a local cluster.
    processes : bool
        Local workers as processes (default) or threads of this process (tests).
    timeout_seconds : float
        How long to try to reach a remote scheduler.

    Raises
    ------
    ClusterUnavailable
        When the scheduler does not answer within ``timeout_seconds``.
    """
    from dask.distributed import Client, LocalCluster  # deferred: only the cluster path needs Dask

    # The scheduler announces each shuffle it starts and ends at WARNING: noise between the steps.
    logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)
    cluster = None
    if address == "local":
        workers = n_workers or os.cpu_count() or 1
        # A task's error reaches the client, which says it in one line; the workers' own logs of it
        # (a "Compute Failed" block, the cancelled tasks that follow) only with --debug.
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=processes, host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.WARNING if log.isEnabledFor(logging.DEBUG) else logging.CRITICAL,
        )  # fmt: skip
        client = Client(cluster)
        # The local workers' stdout is the command's, where its result goes; their only output there
        # is LightGBM's network set-up, printed by C++ threads that bypass Python's logging: to
        # stderr with --debug, else nowhere.
        if processes:  # never this process's own stdout
            client.run(_stdout_away, to_stderr=log.isEnabledFor(logging.DEBUG))
    else:
        if "://" not in address:
            raise ClusterUnavailable(f"--cluster must be 'local' or a scheduler address like tcp://HOST:8786, got {address!r}")
        try:
            client = Client(address, timeout=f"{timeout_seconds}s")
        except (OSError, TimeoutError) as exc:
            raise ClusterUnavailable(
                f"cannot reach the Dask scheduler at {address} within {timeout_seconds:.0f} s ({exc}); start one "
                f"with `dask scheduler` and workers with `dask worker {address}`, or use --cluster local"
            ) from None
    try:
        info = client.scheduler_info()
        threads = sum(w.get("nthreads", 0) for w in info.get("workers", {}).values())
        log.info("Dask cluster at %s: %d worker(s), %d thread(s); dashboard %s",
                 client.scheduler.address, len(info.get("workers", {})), threads, client.dashboard_link)  # fmt: skip
        yield client
    finally:
        client.close()
        if cluster is not None:
            # A busy worker may take more than the nanny's 4 s to exit, which it reports as a warning.
            logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
            cluster.close()


def _stdout_away(to_stderr: bool) -> None:
    """Point this (worker) process's stdout, file descriptor 1, at stderr or at /dev/null."""
    import sys

    sys.stdout.flush()
    if to_stderr:
        os.dup2(2, 1)
    else:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)


# --------------------------------------------------------------------------- partitioning


def customer_bucket(customer_id: pd.Series, npartitions: int) -> np.ndarray:
    """Partition of each customer: a stable hash of its canonical id modulo ``npartitions``.

    The hash is :func:`features.sample.customer_hash` (pandas' object hash, fixed key), the one the
    training sample cuts, so the same id lands in the same partition in every table, every process
    and every run.
    """
    return (customer_hash(customer_id) % np.uint64(npartitions)).astype(np.int64)


@dataclass(frozen=True)
class ClusterTables:
    """The contract tables as Dask dataframes partitioned by customer (partition *i* of each holds the same customers).

    Attributes
    ----------
    transactions, events, customers : dask.dataframe.DataFrame or None
        Indexed by the partition number; normalised columns as :class:`features.contract.Tables`,
        plus two helper columns that keep the input order.
    npartitions : int
    """

    transactions: Any
    events: Any = None
    customers: Any = None
    npartitions: int = 1

    def frames(self) -> list:
        return [self.transactions, self.events, self.customers]

    def persist(self) -> ClusterTables:
        """The same tables kept in the workers' memory (spilled to their disk past their limit).

        Every pass over the tables otherwise reads and shuffles them again: a command that makes
        several (BTYD summaries, then features; reference values, then scores) persists them once.
        """
        import dask

        frames = dask.persist(*[f for f in self.frames() if f is not None])
        it = iter(frames)
        return ClusterTables(*[None if f is None else next(it) for f in self.frames()], npartitions=self.npartitions)


def _partition_tables(tx: pd.DataFrame, ev: pd.DataFrame | None, cu: pd.DataFrame | None, until=None) -> Tables:
    """One partition's rows as contract tables, in input order (``until``: cut at that day, :func:`history_until`)."""

    def clean(frame):
        if frame is None:
            return None
        return frame.sort_values(_HELPERS, kind="stable").drop(columns=_HELPERS).reset_index(drop=True)

    tables = Tables(clean(tx), clean(ev), clean(cu))
    return tables if until is None else history_until(tables, until)


def _with_bucket(frame: pd.DataFrame, npartitions: int, partition_info=None) -> pd.DataFrame:
    part = 0 if partition_info is None else int(partition_info["number"])
    return frame.assign(
        **{_BUCKET: customer_bucket(frame["customer_id"], npartitions), _PART: np.full(len(frame), part, dtype=np.int64),
           _ROW: np.arange(len(frame), dtype=np.int64)}
    )  # fmt: skip


def _by_customer(frame, npartitions: int):
    """Every row to the partition of its customer: partition *i* holds bucket *i*, in every table."""
    return frame.set_index(_BUCKET, divisions=tuple(range(npartitions + 1)))


def _normalised(part: pd.DataFrame, *, table: str, source: str, renames: dict, npartitions: int, partition_info=None):
    """Validate and normalise one input partition with the loader's rules, then tag its customers' bucket."""
    number = None if partition_info is None else partition_info["number"]
    raw = RawTable(
        name=table, source=source if number is None else f"{source} (partition {number})",
        data=pa.Table.from_pandas(part.rename(columns=renames), preserve_index=False), is_csv=source.endswith((".csv", ".csv.gz")),
    )  # fmt: skip
    return _checked(raw, renames=renames, npartitions=npartitions, partition_info=partition_info)


def _checked(raw: RawTable, *, renames: dict, npartitions: int, partition_info=None) -> pd.DataFrame:
    """One input partition as read (columns renamed), validated and normalised, its customers' bucket tagged.

    Raises
    ------
    features.contract.DataValidationError
        When the partition breaks a rule of the contract (named with ``raw.source``).
    """
    checked = validate_table(TABLE_SPECS[raw.name], raw, renames)
    if checked.fatal or checked.violations:
        raise DataValidationError(checked.fatal + checked.violations)
    return _with_bucket(checked.clean_frame(), npartitions, partition_info)


def _table_path(source: str, name: str) -> str | None:
    """The file, directory or glob of table ``name`` under ``source`` (local or any fsspec URL), or None."""
    import fsspec  # a dependency of dask

    fs, root = fsspec.core.url_to_fs(source)
    protocol = source.split("://", 1)[0] + "://" if "://" in source else ""
    for candidate in (f"{name}.parquet", name, f"{name}-*.parquet", f"{name}.csv", f"{name}.csv.gz", f"{name}-*.csv"):
        path = f"{root.rstrip('/')}/{candidate}"
        if fs.glob(path) if "*" in candidate else fs.exists(path):
            return protocol + path
    return None


def read_tables(source: str, *, npartitions: int | None = None, min_partitions: int = 1, column_map=None) -> ClusterTables:
    """Read a directory (local or an fsspec URL such as ``s3://bucket/book``) as partitioned Dask dataframes.

    Each table is ``<name>.parquet``, a Parquet dataset directory ``<name>/``, files
    ``<name>-*.parquet``, or ``<name>.csv`` / ``.csv.gz`` / ``<name>-*.csv``; the workers read them,
    so the path must be one every worker sees (shared storage or an object store).

    Parameters
    ----------
    source : str
        Data directory or URL.
    npartitions : int, optional
        Customer partitions P (default: the input partitions of ``transactions``, at least
        ``min_partitions``). A Parquet input partition is a row group, or row groups merged up to
        about 32 MiB, and a CSV one 64 MB of text, so by default a partition's size follows the
        input's, not the book's: at 20 purchases per customer, about 50,000 customers each.
    min_partitions : int
        Floor of the default P (e.g. two per worker thread, so that every worker has work).
    column_map : optional
        As :func:`features.io.load_tables`.

    Raises
    ------
    FileNotFoundError
        Without a transactions table.
    features.contract.DataValidationError
        When a partition breaks a rule of the contract (raised when the partition is computed).
    """
    import dask.dataframe as dd  # deferred: only the cluster path needs Dask

    renames = parse_column_map(column_map)
    paths = {name: _table_path(str(source), name) for name in TABLE_NAMES}
    if paths["transactions"] is None:
        raise FileNotFoundError(f"{source}: no transactions table (transactions.parquet, transactions/ or transactions.csv)")
    raw = {}
    for name, path in paths.items():
        if path is None:
            continue
        if ".csv" in path:
            # Text as read: the loader's rules parse ids, times and amounts (an id "00001" stays "00001").
            raw[name] = dd.read_csv(path, dtype=str, blocksize=None if path.endswith(".gz") else "64MB")
        else:
            # One input partition per row group (small ones merged): a single file is not one
            # partition, whatever the size of the book.
            raw[name] = dd.read_parquet(path, split_row_groups="adaptive", blocksize="32MiB")
    P = npartitions or max(raw["transactions"].npartitions, min_partitions, 1)
    frames = {}
    for name, frame in raw.items():
        kwargs = dict(table=name, source=paths[name], renames=dict(renames.get(name, {})), npartitions=P)
        meta = _normalised(frame._meta, **kwargs)
        frames[name] = _by_customer(frame.map_partitions(_normalised, **kwargs, meta=meta), P)
    log.info("reading %s: %s, in %d partitions by customer", source, ", ".join(frames), P)
    return ClusterTables(frames["transactions"], frames.get("events"), frames.get("customers"), P)


#: Database backends the workers read by partitions (:func:`read_sql_tables`).
SQL_PARTITIONED = ("postgresql", "sqlite", "duckdb")
#: Rows of a database table per input partition (the count comes from the database, see :func:`read_sql_tables`).
SQL_ROWS_PER_PARTITION = 1_000_000
# Buckets of the key-order query: the finest cut of a table into input partitions.
_SQL_BUCKETS = 1024


def sql_partitioned(source: str) -> str | None:
    """None when :func:`read_sql_tables` reads the database ``source`` by partitions, else why it cannot.

    PostgreSQL, and SQLite and DuckDB files, are read by partitions: each worker process opens its
    own connection (DuckDB files read-only: several processes may hold one; a process that holds
    it open for writing locks out the workers, as it locks out the in-process loader). An
    in-memory database lives in one process; other databases are not tested by partitions.
    """
    import sqlalchemy as sa

    url = sa.engine.make_url(source)
    backend = url.get_backend_name()
    if backend not in SQL_PARTITIONED:
        return f"partitioned reads are tested on {', '.join(SQL_PARTITIONED)} only, not on {backend}"
    if backend in ("sqlite", "duckdb") and (not url.database or url.database == ":memory:"):
        return f"an in-memory {backend} database lives in one process"
    return None


def _sql_partition(url: str, table: str, keys: KeyRange, *, renames: dict, npartitions: int, number: int) -> pd.DataFrame:
    """One input partition of a database table, read on a worker: the rows of ``keys``, checked and bucketed."""
    from dataclasses import replace

    from features.io.sources import SqlReader

    reader = SqlReader(url)
    try:
        raw = reader.read(table, renames, keys)
    finally:
        reader.close()
    raw = replace(raw, source=f"{raw.source} (partition {number})")
    return _checked(raw, renames=renames, npartitions=npartitions, partition_info={"number": number})


def _key_ranges(bounds: list[tuple[object, int]], parts: int, column: str) -> list[KeyRange]:
    """About ``parts`` ranges of equal rows from the buckets of :meth:`SqlReader.key_bounds`, then the NULL keys.

    The first range is open below and the last open above, so every non-NULL key is in exactly one
    range, also keys written after the buckets were counted.
    """
    cuts: list = []
    if bounds:
        rows = np.cumsum([n for _, n in bounds])
        last = -1
        for i in range(1, parts):
            j = int(np.searchsorted(rows, rows[-1] * i / parts))
            key = bounds[j][0]
            if last < j < len(bounds) - 1 and (not cuts or key != cuts[-1]):
                cuts.append(key)
                last = j
    edges = [None, *cuts, None]
    return [KeyRange(column, lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)] + [KeyRange(column, null=True)]


def read_sql_tables(
    source: str, *, npartitions: int | None = None, min_partitions: int = 1, column_map=None,
    rows_per_partition: int = SQL_ROWS_PER_PARTITION,
) -> ClusterTables:  # fmt: skip
    """Read the tables of a database as partitioned Dask dataframes: each worker reads its key ranges.

    Each table is cut by its customer key (the column the column map names ``customer_id``) into
    ranges of about ``rows_per_partition`` rows, from one query the database answers with at most
    1,024 (key, rows) pairs (:meth:`features.io.sources.SqlReader.key_bounds`); each input partition
    is then one query ``WHERE key > lower AND key <= upper`` (plus one for NULL keys, which break
    the contract as in-process) run on a worker through the loader's own reader
    (:class:`features.io.sources.SqlReader`: PostgreSQL by ADBC with the same casts, DuckDB natively,
    SQLite through SQLAlchemy), so its rows are typed as the in-process load types them. Then, as
    for files: validated and normalised (:func:`_checked`) and moved to the partition of their
    customer's bucket. The client reads only the key buckets and the first rows of each table.

    A customer's rows are all in one range, in the order the database returns them (the order of
    a whole-table read for a sequential scan; the key index's for an index scan, which is the
    table's order among one key's rows). Every partition is its own query and transaction: a
    database written to during the read may be seen at different moments by different partitions,
    where the in-process PostgreSQL read takes one snapshot. Without an index on the key, each
    range query scans the table on the server.

    Parameters
    ----------
    source : str
        SQLAlchemy URL of a PostgreSQL database or of a SQLite or DuckDB file (see
        :func:`sql_partitioned`); a relative file path is made absolute here, and must be one that
        every worker sees.
    npartitions : int, optional
        Customer partitions P (default: the input partitions of ``transactions``, at least
        ``min_partitions``).
    min_partitions : int
        Floor of the input partitions of each table and of the default P.
    column_map : optional
        As :func:`features.io.load_tables`.
    rows_per_partition : int
        Rows of an input partition (until a table has 1,024 of them).

    Returns
    -------
    ClusterTables
        Lazy: nothing but the key buckets and the first rows has been read when it returns.

    Raises
    ------
    ValueError
        When the database cannot be read by partitions (:func:`sql_partitioned`), has no
        transactions table, or a table name is ambiguous.
    FileNotFoundError
        A SQLite or DuckDB file does not exist.
    ConnectionError
        The PostgreSQL server cannot be reached.
    features.contract.DataValidationError
        A table lacks a required column (raised here), or a partition breaks a rule of the contract
        (raised when the partition is computed).
    """
    import dask
    import dask.dataframe as dd  # deferred: only the cluster path needs Dask
    import sqlalchemy as sa

    from features.io.sources import SqlReader

    url = sa.engine.make_url(source)
    why = sql_partitioned(source)
    if why is not None:
        raise ValueError(f"cannot read {url.render_as_string(hide_password=True)} by partitions: {why}")
    if url.get_backend_name() in ("sqlite", "duckdb"):
        url = url.set(database=str(Path(url.database).expanduser().absolute()))
    renames = parse_column_map(column_map)
    reader = SqlReader(url.render_as_string(hide_password=False))
    metas, ranges = {}, {}
    try:
        for name in reader.table_names:
            table_renames = dict(renames.get(name, {}))
            # The columns, types and rules on the client from the first rows: a missing column fails here.
            first = reader.read(name, table_renames, limit=100)
            metas[name] = _checked(first, renames=table_renames, npartitions=1).iloc[:0]
            key = next((s for s, t in table_renames.items() if t == "customer_id"), "customer_id")
            bounds = reader.key_bounds(name, key, _SQL_BUCKETS)
            rows = sum(n for _, n in bounds)
            parts = max(min_partitions, npartitions or 1, -(-rows // max(1, rows_per_partition)))
            ranges[name] = _key_ranges(bounds, parts, key)
            log.debug("%s: %d rows with a key, in %d key ranges", first.source, rows, len(ranges[name]) - 1)
    finally:
        reader.close()
    P = npartitions or max(len(ranges["transactions"]) - 1, min_partitions, 1)
    address = url.render_as_string(hide_password=False)
    frames = {}
    for name, keys in ranges.items():
        table_renames = dict(renames.get(name, {}))
        parts = [
            dask.delayed(_sql_partition, pure=False)(address, name, k, renames=table_renames, npartitions=P, number=i)
            for i, k in enumerate(keys)
        ]  # fmt: skip
        frames[name] = _by_customer(dd.from_delayed(parts, meta=metas[name], verify_meta=False), P)
    log.info("reading %s by key ranges on the workers: %s, in %d partitions by customer", reader.display,
             ", ".join(f"{n} ({len(k) - 1} ranges)" for n, k in ranges.items()), P)  # fmt: skip
    return ClusterTables(frames["transactions"], frames.get("events"), frames.get("customers"), P)


def scatter_tables(tables: Tables, *, npartitions: int, client=None) -> ClusterTables:
    """Tables already in memory (the training tables; a database that :func:`read_sql_tables` does not read), partitioned by customer on the cluster.

    With ``client`` the rows are sent to the workers in ``npartitions`` chunks first, rather than
    inside the task graph.
    """
    import dask.dataframe as dd  # deferred: only the cluster path needs Dask

    def partitioned(frame):
        if frame is None:
            return None
        frame = frame.reset_index(drop=True)
        meta = _with_bucket(frame.iloc[:0], npartitions)
        if client is None:
            spread = dd.from_pandas(frame, npartitions=max(1, min(npartitions, len(frame))), sort=False)
        else:
            edges = np.linspace(0, len(frame), npartitions + 1).astype(int)
            chunks = client.scatter([frame.iloc[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)])
            spread = dd.from_delayed(chunks, meta=frame.iloc[:0], verify_meta=False)
        return _by_customer(spread.map_partitions(_with_bucket, npartitions, meta=meta), npartitions)

    return ClusterTables(
        partitioned(tables.transactions), partitioned(tables.events), partitioned(tables.customers), npartitions
    )


def _per_partition(func, tables: ClusterTables, *, meta, **kwargs):
    """``func(transactions, events, customers, **kwargs)`` on each customer partition (a Dask dataframe)."""
    import dask.dataframe as dd  # deferred: only the cluster path needs Dask

    return dd.map_partitions(func, *tables.frames(), meta=meta, align_dataframes=False, **kwargs)


def _empty(specs: tuple[FeatureSpec, ...]) -> pd.DataFrame:
    return pd.DataFrame(
        {s.name: pd.Series([], dtype=s.dtype) for s in specs}, index=pd.Index([], dtype="str", name="customer_id")
    )


# --------------------------------------------------------------------------- a sample of the customers


def partition_book_customers(tx, ev, cu, *, end) -> int:
    """:func:`features.sample.book_customer_count` of one partition, with the book's last day ``end``."""
    return book_customer_count(Tables(tx, ev, cu), end=end)


def _sample_partition(part: pd.DataFrame, threshold: int | None) -> pd.DataFrame:
    """The rows of one partition whose customer is in the sample (helper columns and index kept)."""
    return part[in_sample(part["customer_id"], threshold)]


def _gathered(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """Gathered partitions as the in-process table: rows back in input order, helper columns dropped."""
    if frame is None:
        return None
    return frame.sort_values(_HELPERS, kind="stable").drop(columns=_HELPERS).reset_index(drop=True)


def sample_on_cluster(client, tables: ClusterTables, requested: int) -> tuple[Tables, CustomerSample]:
    """The sample of :func:`features.sample.sample_customers`, taken on the workers; only it reaches the client.

    The workers count the book's customers partition by partition (a partition holds whole
    customers, so the counts add up), the client turns the total into the hash bound, the workers
    keep their partitions' rows of the sampled customers, and those rows are gathered into
    in-memory tables. The client holds the sample, never the book.

    Parameters
    ----------
    client : dask.distributed.Client
    tables : ClusterTables
        The book partitioned by customer (:func:`read_tables`, :func:`scatter_tables`), best persisted:
        it is read twice (count, then cut).
    requested : int
        ``training.sample_customers``: N, ``>= 1``.

    Returns
    -------
    (Tables, CustomerSample)
        Equal to :func:`features.sample.sample_customers` of the whole book: the same customers, the
        same rows in the same (input) order and dtypes.

    Raises
    ------
    ValueError
        When ``requested < 1``.
    features.contract.DataValidationError
        When a partition breaks a rule of the contract (raised when it is read).
    """
    import dask

    if requested < 1:
        raise ValueError(f"sample_customers must be >= 1, got {requested}")
    started = time.perf_counter()
    last = tables.transactions["timestamp"].max().compute()
    end = None if pd.isna(last) else pd.Timestamp(last).normalize()
    parts = [f.to_delayed() if f is not None else [None] * tables.npartitions for f in tables.frames()]
    counts = dask.compute(*[dask.delayed(partition_book_customers)(t, e, c, end=end) for t, e, c in zip(*parts, strict=True)])
    in_book = int(sum(counts))
    threshold = sample_threshold(requested, in_book)
    kept = [None if f is None else f.map_partitions(_sample_partition, threshold, meta=f._meta) for f in tables.frames()]
    gathered = dask.compute(*[f for f in kept if f is not None])
    it = iter(gathered)
    sample = Tables(*[None if f is None else _gathered(next(it)) for f in kept])
    count = book_customer_count(sample, end=end)
    log.info("sampled %d of %d customers on the cluster, %d transactions gathered (%.1f s)", count, in_book,
             len(sample.transactions), time.perf_counter() - started)  # fmt: skip
    return sample, CustomerSample(requested=int(requested), in_book=in_book, sampled=count, threshold=threshold)


# --------------------------------------------------------------------------- per-partition functions
# Plain pandas in, plain pandas out: each calls the in-process functions on one partition's tables.


def partition_summaries(tx, ev, cu, *, cutoffs: tuple, time_unit_days: float, until=None) -> pd.DataFrame:
    """BTYD summary (frequency, recency, T, monetary_value) of each customer of the partition at each cutoff."""
    tables = _partition_tables(tx, ev, cu, until)
    frames = []
    for cutoff in cutoffs:
        if not has_buyer(tables, cutoff):
            continue
        h = prepare_history(tables, cutoff)
        s = btyd_summary(h, time_unit_days)
        frames.append(pd.DataFrame(
            {"cutoff": np.full(h.n, np.datetime64(parse_cutoff(cutoff), "D").astype("datetime64[ns]")),
             "frequency": s.frequency, "recency": s.recency, "T": s.T, "monetary_value": s.monetary_value},
            index=h.ids,
        ))  # fmt: skip
    return pd.concat(frames) if frames else _SUMMARY_META


_SUMMARY_META = pd.DataFrame(
    {"cutoff": pd.Series([], dtype="datetime64[ns]"), **{c: pd.Series([], dtype=float) for c in ("frequency", "recency", "T", "monetary_value")}},
    index=pd.Index([], dtype="str", name="customer_id"),
)  # fmt: skip


def partition_features(tx, ev, cu, *, cutoff, config: FeatureConfig, btyd: BTYDParams) -> pd.DataFrame:
    """:func:`features.build.build_features` of one partition with the book's BTYD parameters."""
    tables = _partition_tables(tx, ev, cu)
    if not has_buyer(tables, cutoff):
        return _empty(feature_schema(config))
    return build_features(tables, cutoff=cutoff, config=config, btyd=btyd)


def partition_labels(tx, ev, cu, *, cutoff, horizon_days: int, churn_definition: str = "purchase") -> pd.DataFrame:
    """:func:`training.labels.build_labels` of one partition."""
    tables = _partition_tables(tx, ev, cu)
    if not has_buyer(tables, cutoff):
        return _empty(LABEL_SCHEMA)
    return build_labels(tables, cutoff=cutoff, horizon_days=horizon_days, churn_definition=churn_definition)


def partition_training_rows(
    tx, ev, cu, *, origins: tuple, horizon_days: int, config: FeatureConfig, churn_definition: str,
    btyd: dict, until=None,
) -> pd.DataFrame:  # fmt: skip
    """The rows of :func:`training.training_set.build_training_set` for one partition's customers.

    Features at each origin with that origin's book-wide BTYD parameters, joined with the labels of
    its window and the ``cutoff`` column; origin by origin, customers sorted.
    """
    tables = _partition_tables(tx, ev, cu, until)
    specs = training_set_schema(config)
    frames = []
    for origin in origins:
        if not has_buyer(tables, origin):
            continue
        h = prepare_history(tables, origin)
        columns, _ = feature_columns(h, config, btyd[origin])
        labels = build_labels(tables, cutoff=origin, horizon_days=horizon_days, churn_definition=churn_definition)
        columns.update({c: labels[c].to_numpy() for c in labels.columns})
        columns["cutoff"] = np.full(h.n, np.datetime64(origin, "D").astype("datetime64[ns]"))
        frames.append(assemble(h.ids, specs, columns))
    return pd.concat(frames) if frames else _empty(specs)


# --------------------------------------------------------------------------- features and labels


def fit_btyd_on_cluster(tables: ClusterTables, *, cutoffs, config: FeatureConfig, until=None) -> dict:
    """BTYD parameters at each cutoff, fitted on the client on the gathered per-customer summaries.

    Returns
    -------
    dict of date to BTYDParams

    Raises
    ------
    ValueError
        As :func:`features.build.fit_btyd`, naming the cutoff.
    """
    cutoffs = tuple(parse_cutoff(c) for c in cutoffs)
    gathered = _per_partition(
        partition_summaries, tables, meta=_SUMMARY_META, cutoffs=cutoffs, time_unit_days=config.btyd_time_unit_days,
        until=until,
    ).compute()  # fmt: skip
    fitted = {}
    for cutoff in cutoffs:
        rows = gathered[gathered["cutoff"].to_numpy() == np.datetime64(cutoff, "D")].sort_index(kind="stable")
        summary = BTYDSummary(
            rows["frequency"].to_numpy(float), rows["recency"].to_numpy(float), rows["T"].to_numpy(float),
            rows["monetary_value"].to_numpy(float), float(config.btyd_time_unit_days),
        )  # fmt: skip
        try:
            fitted[cutoff] = fit_btyd_params(summary, pareto=config.btyd_model == "pareto")
        except ValueError as exc:
            raise ValueError(f"cutoff {cutoff}: {exc}") from exc
    return fitted


def features_on_cluster(tables: ClusterTables, *, cutoff, config: FeatureConfig = FeatureConfig(), btyd=None):
    """The feature rows of :func:`features.build.build_features` as a Dask dataframe (one partition per customer partition).

    ``btyd`` omitted: fitted on the gathered summaries at ``cutoff`` (:func:`fit_btyd_on_cluster`).
    Rows are sorted by ``customer_id`` within a partition, not across partitions.
    """
    cutoff = parse_cutoff(cutoff)
    params = btyd or fit_btyd_on_cluster(tables, cutoffs=[cutoff], config=config)[cutoff]
    return _per_partition(partition_features, tables, meta=_empty(feature_schema(config)), cutoff=cutoff, config=config,
                          btyd=params)  # fmt: skip


def labels_on_cluster(tables: ClusterTables, *, cutoff, horizon_days: int, churn_definition: str = "purchase"):
    """The label rows of :func:`training.labels.build_labels` as a Dask dataframe."""
    return _per_partition(
        partition_labels, tables, meta=_empty(LABEL_SCHEMA), cutoff=parse_cutoff(cutoff), horizon_days=horizon_days,
        churn_definition=churn_definition,
    )  # fmt: skip


def write_dataset(frame, out: str | os.PathLike) -> str:
    """Write a Dask dataframe of per-customer rows as a Parquet dataset (one file per partition, ``customer_id`` kept)."""
    frame.to_parquet(str(out), write_index=True, overwrite=False)
    return str(out)


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class Boosters:
    """What :func:`training.pipeline.evaluate` needs of a fit: the models, the rows per origin and in all."""

    models: ClvModels
    origin_rows: np.ndarray
    n_rows: int


class ClusterTrainer:
    """Builds the training set and fits the boosters on a cluster; the ``trainer`` of :func:`training.pipeline.evaluate`.

    Parameters
    ----------
    client : dask.distributed.Client
    npartitions : int
        Customer partitions the in-memory tables are spread over.
    """

    def __init__(self, client, *, npartitions: int):
        self.client = client
        self.npartitions = npartitions

    def __call__(self, tables: Tables, *, origins, horizon_days: int, config: Config) -> Boosters:
        spread = scatter_tables(tables, npartitions=self.npartitions, client=self.client).persist()
        origins = tuple(parse_cutoff(o) for o in origins)
        started = time.perf_counter()
        btyd = fit_btyd_on_cluster(spread, cutoffs=origins, config=config.features)
        rows = _per_partition(
            partition_training_rows, spread, meta=_empty(training_set_schema(config.features)), origins=origins,
            horizon_days=horizon_days, config=config.features, churn_definition=config.training.churn_definition,
            btyd=btyd,
        ).persist()  # fmt: skip
        log.info("training set on the cluster: %d origins in %d partitions (%.1f s)", len(origins), rows.npartitions,
                 time.perf_counter() - started)  # fmt: skip
        return fit_boosters(self.client, rows, config=config, btyd=btyd, origins=origins)


def _drop_degenerate(rows, *, cfg: TrainingConfig, btyd: dict, needed: int):
    """:func:`training.training_set.drop_degenerate_origins` with the share of bad rows per origin as a reduction.

    The rule and its warnings are :func:`training.training_set.degenerate_origins`.
    """
    finite = rows.map_partitions(
        lambda f: pd.Series(np.isfinite(f[list(BTYD_OFFSET_FEATURES)].to_numpy(dtype=float)).all(axis=1), index=f.index),
        meta=pd.Series([], dtype=bool),
    )  # fmt: skip
    rows = rows.assign(_finite=finite)
    share_bad = (1.0 - rows.groupby("cutoff")["_finite"].mean()).compute().sort_index()
    degenerate = degenerate_origins(share_bad, needed=needed, btyd=btyd if cfg.drop_unidentified_origins else None)
    if len(degenerate):
        rows = rows[~rows["cutoff"].isin(list(degenerate))]
    return rows[rows["_finite"]].drop(columns=["_finite"])


# Names of the model-input helper columns beside the encoded features.
_Y_CHURN, _Y_SPEND, _OFF_CHURN, _OFF_SPEND, _VALID = "__churned", "__spend", "__churn_offset", "__spend_offset", "__valid"


def _model_rows(part: pd.DataFrame, *, encoder: FeatureEncoder, btyd_offset: bool, valid_origins, spend_floor) -> pd.DataFrame:
    """One partition of training rows as the boosters see them: encoded features, targets, offsets, slice."""
    if len(part) == 0:  # the encoder wants rows
        return _model_rows_meta(encoder)
    X = encoder.transform(part).reset_index(drop=True)
    churn_offset, spend_offset = btyd_offsets(part) if btyd_offset else (np.zeros(len(part)), np.zeros(len(part)))
    y = np.maximum(part["spend"].to_numpy(float), 0.0)
    if spend_floor is not None:  # gamma: y > 0 (the smallest positive spend of all rows, as in-process)
        y = np.where(y > 0, y, spend_floor)
    return X.assign(**{
        _Y_CHURN: part["churn"].to_numpy(int), _Y_SPEND: y, _OFF_CHURN: churn_offset, _OFF_SPEND: spend_offset,
        _VALID: np.isin(part["cutoff"].to_numpy(), valid_origins),
    })  # fmt: skip


def _model_rows_meta(encoder: FeatureEncoder) -> pd.DataFrame:
    helpers = {_Y_CHURN: "int64", _Y_SPEND: "float64", _OFF_CHURN: "float64", _OFF_SPEND: "float64", _VALID: "bool"}
    return pd.DataFrame({**{c: pd.Series([], dtype="float64") for c in encoder.columns},
                         **{c: pd.Series([], dtype=t) for c, t in helpers.items()}})  # fmt: skip


def _stopped_at(evals_result: dict, patience: int) -> int:
    """The iteration early stopping would keep (1-based) on the first metric of the first validation set.

    ``lightgbm.dask`` has no early stopping: it records the validation metric of every round, and
    this replays LightGBM's rule on that record (stop when the best is ``patience`` rounds old).
    """
    (metrics,) = list(evals_result.values())[:1]
    name, values = next(iter(metrics.items()))
    sign = -1.0 if name in ("auc", "average_precision", "ndcg", "map") else 1.0
    best, best_at = np.inf, 0
    for i, value in enumerate(values):
        if sign * value < best:
            best, best_at = sign * value, i
        elif i - best_at >= patience:
            break
    return best_at + 1


def _dask_params(params: dict) -> dict:
    """:func:`training.models.lightgbm_params` for ``lightgbm.dask``: the threads are each worker's own."""
    return {k: v for k, v in params.items() if k != "n_jobs"}


def _fit_one(estimator, rows, columns, target: str, offset: str, *, btyd_offset: bool, cfg: TrainingConfig, cats):
    """Fit one ``lightgbm.dask`` estimator on the training slice, replaying early stopping on the validation slice."""
    train, valid = rows[~rows[_VALID]], rows[rows[_VALID]]
    kwargs: dict = {"categorical_feature": cats}
    if btyd_offset:
        kwargs["init_score"] = train[offset]
    has_valid = bool(cfg.validation_cutoffs) and cfg.early_stopping_rounds > 0
    if has_valid:
        if "eval_X" in inspect.signature(estimator.fit).parameters:  # LightGBM >= 4.6
            kwargs["eval_X"], kwargs["eval_y"] = (valid[columns],), (valid[target],)
        else:
            kwargs["eval_set"] = [(valid[columns], valid[target])]
        if btyd_offset:
            kwargs["eval_init_score"] = [valid[offset]]
    estimator.fit(train[columns], train[target], **kwargs)
    local = estimator.to_local()
    if has_valid and estimator.evals_result_:
        best = _stopped_at(estimator.evals_result_, cfg.early_stopping_rounds)
        # What an in-process early stop leaves: the booster predicts with its best iteration, which
        # the wrapper reports (its attribute is read-only, hence the private one).
        local.booster_.best_iteration = best
        local._best_iteration = best
    return local


def _lightgbm_logs_to_logging() -> None:
    """LightGBM's messages (its network set-up prints to stdout) through the ``lightgbm`` logger: warnings only."""
    import lightgbm

    lightgbm.register_logger(logging.getLogger("lightgbm"))


def fit_boosters(client, rows, *, config: Config, btyd: dict, origins) -> Boosters:
    """Fit the churn and spend boosters of :class:`training.models.ClvModels` with ``lightgbm.dask``.

    The same slices as :meth:`ClvModels.fit` (the latest ``validation_cutoffs`` origins held out
    for early stopping and the isotonic calibration, the spend model on the rows with a purchase),
    the same parameters (:func:`training.models.lightgbm_params`) and BTYD offsets as init scores.

    Parameters
    ----------
    client : dask.distributed.Client
    rows : dask.dataframe.DataFrame
        Training rows (:func:`partition_training_rows`).
    config : Config
    btyd : dict of date to BTYDParams
        The fit at each origin (for the identification rule).
    origins : sequence of date
        The plan's origins, oldest first.

    Returns
    -------
    Boosters

    Raises
    ------
    TrainingDataError
        A slice with a single churn class or no purchase (as in-process).
    """
    import lightgbm.dask as lgbd  # deferred: only the cluster path needs Dask
    from sklearn.isotonic import IsotonicRegression

    cfg = config.training
    # The workers' stdout is the command's: the comparison table goes there, not LightGBM's network log.
    client.run(_lightgbm_logs_to_logging)
    _lightgbm_logs_to_logging()
    if cfg.btyd_offset:
        rows = _drop_degenerate(rows, cfg=cfg, btyd=btyd, needed=cfg.validation_cutoffs + 1)
    rows = rows.persist()
    per_origin = rows.groupby("cutoff").size().compute()
    per_origin.index = pd.DatetimeIndex(per_origin.index).as_unit("ns")
    origin_rows = per_origin.reindex(pd.DatetimeIndex([pd.Timestamp(o) for o in origins]).as_unit("ns")).fillna(0).to_numpy()
    n_rows = int(per_origin.sum())
    if n_rows == 0:
        raise TrainingDataError("no training rows")
    kept = np.sort(per_origin.index.to_numpy())
    valid_origins = kept[len(kept) - cfg.validation_cutoffs :] if cfg.validation_cutoffs else kept[:0]

    names = feature_names(config.features)
    excluded = set(cfg.exclude_features)
    used = [c for c in names if c not in excluded]
    meta = rows._meta[used]
    categorical = [c for c in used if not (pd.api.types.is_bool_dtype(meta[c]) or pd.api.types.is_numeric_dtype(meta[c]))]
    # The levels of every categorical column over all rows: FeatureEncoder.fit on the distinct ones.
    levels = rows[used].map_partitions(lambda f: f.drop_duplicates(subset=categorical) if categorical else f.iloc[:0],
                                       meta=meta).compute()  # fmt: skip
    encoder = FeatureEncoder.fit(levels if len(levels) else meta)
    floor = None
    if cfg.spend_objective == "gamma":
        positive = rows["spend"][rows["spend"] > 0].min().compute()
        floor = float(positive) if np.isfinite(positive) else 1e-6
    encoded_meta = _model_rows_meta(encoder)
    model_rows = rows.map_partitions(
        _model_rows, encoder=encoder, btyd_offset=cfg.btyd_offset, valid_origins=valid_origins, spend_floor=floor,
        meta=encoded_meta,
    ).persist()  # fmt: skip
    counts = model_rows.groupby([_VALID, _Y_CHURN]).size().compute()
    for name, flag in (("training", False), ("validation", True)):
        classes = [k for (v, k), n in counts.items() if v == flag and n > 0]
        if (flag is False or cfg.validation_cutoffs) and len(classes) < 2:
            raise TrainingDataError(
                f"the {name} rows have a single churn class; use more data, a longer horizon or other cutoffs"
            )
    columns = list(encoder.columns)
    cats = encoder.categorical_columns or "auto"

    started = time.perf_counter()
    churn = _fit_one(
        lgbd.DaskLGBMClassifier(client=client, objective="binary",
                                **_dask_params(lightgbm_params(cfg.churn_params, seed=cfg.seed, num_threads=cfg.num_threads))),
        model_rows, columns, _Y_CHURN, _OFF_CHURN, btyd_offset=cfg.btyd_offset, cfg=cfg, cats=cats,
    )  # fmt: skip
    # The churn half alone, for the raw probabilities of the validation rows the calibration is fitted on.
    churn_only = ClvModels.from_parts(
        encoder=encoder, churn_model=churn, spend_model=churn, calibration=None, horizon_days=cfg.horizon_days,
        btyd_offset=cfg.btyd_offset, training=cfg,
    )  # fmt: skip
    calibration = None
    valid = model_rows[model_rows[_VALID]]
    if cfg.validation_cutoffs and cfg.churn_calibration == "isotonic":
        raw = valid.map_partitions(
            lambda f: pd.DataFrame({"raw": churn_only._churn_raw_probability(f[columns].to_numpy(), f[_OFF_CHURN].to_numpy()),
                                    "churned": f[_Y_CHURN].to_numpy(float)}),
            meta=pd.DataFrame({"raw": pd.Series([], dtype=float), "churned": pd.Series([], dtype=float)}),
        ).compute()  # fmt: skip
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(raw["raw"].to_numpy(), raw["churned"].to_numpy())
        calibration = (np.asarray(iso.X_thresholds_, float), np.asarray(iso.y_thresholds_, float))
    active = model_rows[model_rows[_Y_CHURN] == 0]
    spend_kind = {"objective": "tweedie", "tweedie_variance_power": cfg.tweedie_variance_power} \
        if cfg.spend_objective == "tweedie" else {"objective": cfg.spend_objective}  # fmt: skip
    spend = _fit_one(
        lgbd.DaskLGBMRegressor(client=client, **spend_kind,
                               **_dask_params(lightgbm_params(cfg.spend_params, seed=cfg.seed, num_threads=cfg.num_threads))),
        active, columns, _Y_SPEND, _OFF_SPEND, btyd_offset=cfg.btyd_offset, cfg=cfg, cats=cats,
    )  # fmt: skip
    log.info("boosters fitted with lightgbm.dask on %d rows (%.1f s)", n_rows, time.perf_counter() - started)
    models = ClvModels.from_parts(
        encoder=encoder, churn_model=churn, spend_model=spend, calibration=calibration, horizon_days=cfg.horizon_days,
        btyd_offset=cfg.btyd_offset, training=cfg,
    )  # fmt: skip
    return Boosters(models, origin_rows, n_rows)


# --------------------------------------------------------------------------- scoring


def partition_trials(tx, ev, cu, *, as_of, horizon_days: int) -> pd.DataFrame:
    """:func:`serving.prospects.prospect_trials` of one partition."""
    from serving.prospects import prospect_trials

    return prospect_trials(_partition_tables(tx, ev, cu), as_of=as_of, horizon_days=horizon_days)


def partition_reference_values(tx, ev, cu, *, as_of, champion, clv) -> pd.DataFrame:
    """The buyers' ``clv``, ``recency_days``, ``frequency`` and ``monetary_value``: what the segment reference is made of."""
    from serving.scoring import score_columns

    columns = ("clv", "recency_days", "frequency", "monetary_value")
    tables = _partition_tables(tx, ev, cu)
    if not has_buyer(tables, as_of):
        return pd.DataFrame({c: pd.Series([], dtype=float) for c in columns})
    out = score_columns(tables, as_of=as_of, champion=champion, clv=clv, top_drivers=0, attributes=False, prospects=None)
    return pd.DataFrame({c: np.asarray(out[c], dtype=float) for c in columns})


def _score_partition(tx, ev, cu, number: int, *, out_dir: str, as_of, champion, clv, reference, prospects):
    """Score one partition with the book's reference and prospect model, write ``part-NNNNN.parquet``; its run."""
    from serving.scores import write_scores
    from serving.scoring import score_tables

    tables = _partition_tables(tx, ev, cu)
    kinds = set(customer_population(tables, cutoff=as_of, engagement_days=champion.horizon_days)["kind"])
    if "buyer" not in kinds and (prospects is None or not kinds & set(PROSPECT_KINDS)):
        return None  # nobody to score here (e.g. only customers acquired after the cutoff)
    scores = score_tables(tables, as_of=as_of, champion=champion, clv=clv, reference=reference, prospects=prospects)
    write_scores(scores, Path(out_dir) / f"part-{number:05d}.parquet")
    return scores.run, len(scores.frame)


def score_to_dataset(client, tables: ClusterTables, *, as_of, champion, clv=None, out_dir: str | os.PathLike):
    """Score every customer partition by partition and write a Parquet dataset (one file per partition).

    Tiers and RFM segments are relative to the whole book (a :class:`serving.segments.SegmentReference`
    of the gathered per-buyer values) and prospects are scored with the model fitted on the trials
    of every partition, so each row equals :func:`serving.scoring.score_tables` on the whole book.

    Returns
    -------
    ClusterScoring
        With the run of the whole book (per-kind population and customers left out summed over
        partitions, also written as :data:`serving.scores.DATASET_RUN`).

    Raises
    ------
    ValueError
        When no partition has a customer to score.
    """
    import dask

    from serving.prospects import prospect_model
    from serving.scores import write_dataset_run
    from serving.scoring import champion_clv_config
    from serving.segments import SegmentReference

    as_of = parse_cutoff(as_of)
    clv = clv or champion_clv_config(champion)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: a cluster scoring writes a Parquet dataset into an empty or new directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    [shared] = client.scatter([champion], broadcast=True)
    trials_meta = pd.DataFrame({"origin": pd.Series([], dtype=object), "channel": pd.Series([], dtype=object),
                                "engaged": pd.Series([], dtype=bool), "converted": pd.Series([], dtype=bool),
                                "spend": pd.Series([], dtype=float)}, index=pd.Index([], dtype="str", name="customer_id"))  # fmt: skip
    trials = _per_partition(partition_trials, tables, meta=trials_meta, as_of=as_of, horizon_days=champion.horizon_days)
    values = _per_partition(partition_reference_values, tables, meta=pd.DataFrame(
        {c: pd.Series([], dtype=float) for c in ("clv", "recency_days", "frequency", "monetary_value")}),
        as_of=as_of, champion=shared, clv=clv)  # fmt: skip
    trials, values = dask.compute(trials, values)
    if len(trials):
        # The book's order: origin by origin (latest first), customers sorted.
        trials = trials.assign(_o=pd.to_datetime(trials["origin"])).sort_values(["_o", "customer_id"], ascending=[False, True])
    prospects = prospect_model(trials.drop(columns=["_o"], errors="ignore"), horizon_days=champion.horizon_days)
    reference = SegmentReference.from_scores(values) if len(values) else None
    log.info("segment reference from %d buyers, prospect model from %d trials; scoring %d partitions into %s",
             len(values), len(trials), tables.npartitions, out_dir)  # fmt: skip
    parts = [frame.to_delayed() if frame is not None else [None] * tables.npartitions for frame in tables.frames()]
    tasks = [
        dask.delayed(_score_partition)(t, e, c, i, out_dir=str(out_dir), as_of=as_of, champion=shared, clv=clv,
                                       reference=reference, prospects=prospects)
        for i, (t, e, c) in enumerate(zip(*parts, strict=True))
    ]  # fmt: skip
    done = [r for r in dask.compute(*tasks) if r is not None]
    if not done:
        raise ValueError(f"cutoff {as_of}: no customer to score in any partition")
    run = merge_runs([r for r, _ in done])
    write_dataset_run(run, out_dir)
    return ClusterScoring(run=run, customers=sum(n for _, n in done), files=len(done))


# --------------------------------------------------------------------------- finance budget


def partition_budget_inputs(tx, ev, cu, scored: pd.DataFrame, *, run):
    """:func:`serving.finance.inputs.budget_inputs` of one partition and its scored customers."""
    from serving.finance.inputs import budget_inputs

    return budget_inputs(_partition_tables(tx, ev, cu), scored, run)


def budget_inputs_on_cluster(client, tables: ClusterTables, scores):
    """What the finance budget of ``scores`` reads of the tables, reduced on the workers partition by partition.

    Each partition gets the ``customer_id`` and ``acquired_at`` of its scored customers (the scores
    are cut by the same :func:`customer_bucket` as the tables) and returns its
    :class:`serving.finance.inputs.BudgetInputs`: per-customer rows (acquisition day, realised
    margin per month since acquisition, BTYD summary, the customers known but not scored), the
    revenue per day and a count. The client combines them
    (:meth:`~serving.finance.inputs.BudgetInputs.combine`); :func:`serving.finance.compute_budget`
    takes the result in place of the tables, and fits the forecast's BG/NBD and runs the
    simulation here, on a few floats per customer.

    Parameters
    ----------
    client : dask.distributed.Client
    tables : ClusterTables
    scores : serving.scores.Scores
        The scores the budget is of (read on the client).

    Returns
    -------
    serving.finance.inputs.BudgetInputs
        Equal to :func:`~serving.finance.inputs.budget_inputs` of the whole tables, but for the
        revenue per day, summed in another order (equal up to rounding).

    Raises
    ------
    ValueError
        When the scores break a rule the budget relies on (:func:`serving.finance.budget.check_scores`).
    """
    import dask

    from serving.finance.budget import check_scores
    from serving.finance.inputs import BudgetInputs

    check_scores(scores)  # unique customers, the run's as_of and horizon: before any work is sent
    frame = scores.frame[["customer_id", "acquired_at"]]
    bucket = customer_bucket(frame["customer_id"], tables.npartitions)
    pieces = client.scatter([frame[bucket == i].reset_index(drop=True) for i in range(tables.npartitions)])
    parts = [f.to_delayed() if f is not None else [None] * tables.npartitions for f in tables.frames()]
    tasks = [
        dask.delayed(partition_budget_inputs)(t, e, c, piece, run=scores.run)
        for t, e, c, piece in zip(*parts, pieces, strict=True)
    ]  # fmt: skip
    started = time.perf_counter()
    inputs = BudgetInputs.combine(list(dask.compute(*tasks)))
    log.info("budget inputs of %d customers from %d partitions (%.1f s)", len(inputs.customers), tables.npartitions,
             time.perf_counter() - started)  # fmt: skip
    return inputs


# --------------------------------------------------------------------------- monitor


def partition_monitor_inputs(tx, ev, cu, *, request):
    """:func:`serving.monitor.inputs.monitor_inputs` of one partition."""
    from serving.monitor.inputs import monitor_inputs

    return monitor_inputs(_partition_tables(tx, ev, cu), request)


def monitor_inputs_on_cluster(client, tables: ClusterTables, request):
    """What one monitor read of the tables asks for, reduced on the workers partition by partition.

    Each partition returns its :class:`serving.monitor.inputs.MonitorInputs` (its last day with a
    transaction, its customers' features at the latest scoring date, its customers' realised spend
    and churn after each matured scoring date); the client combines them
    (:meth:`~serving.monitor.inputs.MonitorInputs.combine`). It is the ``read`` of
    :func:`serving.monitor.compute.compute_monitor` with a cluster.

    Parameters
    ----------
    client : dask.distributed.Client
    tables : ClusterTables
    request : serving.monitor.inputs.MonitorRequest

    Returns
    -------
    serving.monitor.inputs.MonitorInputs
        Equal to :func:`~serving.monitor.inputs.monitor_inputs` of the whole tables (per-customer
        rows in ``customer_id`` order; nothing is summed).

    Raises
    ------
    ValueError
        As :func:`~serving.monitor.inputs.monitor_inputs` (raised when a partition is computed).
    features.contract.DataValidationError
        When a partition breaks a rule of the contract.
    """
    import dask

    from serving.monitor.inputs import MonitorInputs

    parts = [f.to_delayed() if f is not None else [None] * tables.npartitions for f in tables.frames()]
    tasks = [dask.delayed(partition_monitor_inputs)(t, e, c, request=request) for t, e, c in zip(*parts, strict=True)]
    started = time.perf_counter()
    inputs = MonitorInputs.combine(list(dask.compute(*tasks)))
    log.info("monitor inputs (%s%d outcome window(s)) from %d partitions (%.1f s)",
             "features, " if request.features is not None else "", len(request.outcomes), tables.npartitions,
             time.perf_counter() - started)  # fmt: skip
    return inputs


@dataclass(frozen=True)
class ClusterScoring:
    """What :func:`score_to_dataset` wrote: the run of the whole book, the customers scored, the part files."""

    run: Any
    customers: int
    files: int


def merge_runs(runs: list):
    """One :class:`serving.scores.ScoringRun` of the partitions' runs: counts summed, the first examples kept."""
    from serving.scores import LeftOut

    population: dict[str, int] = {}
    left: dict[tuple[str, str], list] = {}
    for run in runs:
        for kind, n in run.population.items():
            population[kind] = population.get(kind, 0) + int(n)
        for item in run.left_out:
            entry = left.setdefault((item.kind, item.reason), [0, []])
            entry[0] += item.customers
            entry[1].extend(item.first)
    left_out = tuple(
        LeftOut(kind=k, customers=n, reason=r, first=tuple(sorted(first)[:5])) for (k, r), (n, first) in left.items()
    )
    return runs[0].model_copy(update={"population": population, "left_out": left_out})
