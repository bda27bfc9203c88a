"""Time ``load_tables`` from PostgreSQL against the same book from Parquet, with peak memory.

Usage::

    python benchmarks/bench_postgres.py                      # 50,000 customers: ~1M transactions, ~1M events
    python benchmarks/bench_postgres.py --customers 100000 --repeat 5
    python benchmarks/bench_postgres.py --methods            # also other ways to read a table into Arrow

The script starts its own throw-away PostgreSQL cluster (``tests/pg_cluster.py``: Debian's server
programs, 127.0.0.1, a temporary directory), writes the synthetic book into it (transactions with
``numeric(12,2)`` amounts and ``timestamptz`` times, as a shop's database would hold them) and as
Parquet files, then loads each source ``--repeat`` times, every load in a fresh Python process.

Per load: wall seconds of ``load_tables`` (read + validation + the pandas frames it returns), the
process's peak RSS, and the peak above the RSS just before the call (sampled every 5 ms) next to the
size of the frames returned. The ``reader`` rows time the source's reader alone (the raw Arrow
tables, before validation): a reader that streams holds little more than its result.

``--methods`` also reads the transactions table alone into one Arrow table in the ways considered
for the PostgreSQL reader: ADBC (what ``load_tables`` uses), psycopg's ``COPY ... TO STDOUT (FORMAT
csv)`` parsed by ``pyarrow.csv``, a psycopg server-side (named) cursor and SQLAlchemy's
``stream_results`` fetching 100,000 rows at a time into Arrow arrays, and ``pandas.read_sql_query``
with Arrow dtypes (the reader before ADBC).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# The drivers that the readers import on first use are imported here, so the RSS measured just
# before a load already holds them.
import adbc_driver_postgresql
import adbc_driver_postgresql.dbapi  # noqa: F401
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pcsv
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
# Runs as a script from a checkout; the cluster helper lives with the tests.
sys.path.insert(0, str(REPO))

from features.io import load_tables, write_tables  # noqa: E402
from features.io.sources import reader_for  # noqa: E402
from features.synthetic import generate  # noqa: E402
from tests.pg_cluster import throwaway_cluster  # noqa: E402

TYPES = {
    "transactions": {"customer_id": "text", "timestamp": "timestamptz", "amount": "numeric(12,2)"},
    "events": {"customer_id": "text", "timestamp": "timestamptz", "event_type": "text"},
    "customers": {
        "customer_id": "text",
        "acquired_at": "timestamp",
        "channel": "text",
        "acquisition_cost": "numeric(12,2)",
        "referred_by": "text",
        "region": "text",
        "age": "int8",
    },
}
SAMPLE_S = 0.005


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _load_tables(source: str) -> dict:
    tables = load_tables(source).tables
    return {n: getattr(tables, n) for n in TYPES}


def _reader(source: str) -> dict:
    reader = reader_for(source)
    try:
        return {n: reader.read(n, {}).data for n in reader.table_names}
    finally:
        reader.close()


# ---- ways to read the transactions table of PostgreSQL into Arrow (--methods)

CHUNK_ROWS = 100_000
TRANSACTIONS_ARROW = {
    "customer_id": pa.string(),
    "timestamp": pa.timestamp("us", "UTC"),
    "amount": pa.decimal128(12, 2),
}


def _libpq(url: str) -> str:
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _adbc(url: str) -> dict:
    with adbc_driver_postgresql.dbapi.connect(_libpq(url)) as con, con.cursor() as cur:
        cur.execute("select * from transactions")
        return {"transactions": cur.fetch_record_batch().read_all()}


def _rows_to_batch(rows: list[tuple], names: list[str]) -> pa.RecordBatch:
    columns = zip(*rows)
    return pa.record_batch([pa.array(c, TRANSACTIONS_ARROW[n]) for n, c in zip(names, columns)], names=names)


def _psycopg_server_cursor(url: str) -> dict:
    batches = []
    with psycopg.connect(_libpq(url)) as con, con.cursor(name="bench") as cur:
        cur.execute("select * from transactions")
        names = [d.name for d in cur.description]
        while rows := cur.fetchmany(CHUNK_ROWS):
            batches.append(_rows_to_batch(rows, names))
    return {"transactions": pa.Table.from_batches(batches)}


def _sqlalchemy_stream(url: str) -> dict:
    batches = []
    with sa.create_engine(url).connect() as con:
        result = con.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(
            sa.text("select * from transactions")
        )
        names = list(result.keys())
        for rows in result.partitions():
            batches.append(_rows_to_batch(rows, names))
    return {"transactions": pa.Table.from_batches(batches)}


class _CopyStream(io.RawIOBase):
    """COPY's data messages as a byte stream for pyarrow.csv."""

    def __init__(self, copy):
        self._copy, self._pending = copy, memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._pending:
            self._pending = memoryview(bytes(self._copy.read()))
        n = min(len(buffer), len(self._pending))
        buffer[:n], self._pending = self._pending[:n], self._pending[n:]
        return n


def _psycopg_copy_csv(url: str) -> dict:
    with psycopg.connect(_libpq(url)) as con:
        con.execute("SET TIME ZONE 'UTC'")  # timestamptz as +00 text
        with con.cursor().copy("COPY transactions TO STDOUT (FORMAT csv)") as copy:
            stream = io.BufferedReader(_CopyStream(copy), 1 << 20)
            reader = pcsv.open_csv(
                stream,
                read_options=pcsv.ReadOptions(column_names=list(TRANSACTIONS_ARROW)),
                convert_options=pcsv.ConvertOptions(
                    column_types=TRANSACTIONS_ARROW, timestamp_parsers=["%Y-%m-%d %H:%M:%S%z"]
                ),
            )
            return {"transactions": reader.read_all()}


def _read_sql(url: str) -> dict:
    with sa.create_engine(url).connect() as con:
        frame = pd.read_sql_query(sa.text("select * from transactions"), con, dtype_backend="pyarrow")
    return {"transactions": pa.Table.from_pandas(frame, preserve_index=False)}


LOADS = {
    "load_tables": _load_tables,
    "reader": _reader,
    "adbc": _adbc,
    "psycopg_copy_csv": _psycopg_copy_csv,
    "psycopg_server_cursor": _psycopg_server_cursor,
    "sqlalchemy_stream": _sqlalchemy_stream,
    "read_sql": _read_sql,
}
METHODS = ("adbc", "psycopg_copy_csv", "psycopg_server_cursor", "sqlalchemy_stream", "read_sql")


def measure(source: str, how: str) -> dict:
    """One load in this process: seconds, peak RSS and the peak above the RSS before the call."""
    load = LOADS[how]
    before = _rss_bytes()
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.wait(SAMPLE_S):
            peak[0] = max(peak[0], _rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    frames = load(source)
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    peak[0] = max(peak[0], _rss_bytes())
    return {
        "seconds": seconds,
        # Sampled, not ru_maxrss: a child keeps the maximum it had as a fork of its parent, which holds the book.
        "peak_rss_mb": peak[0] / 2**20,
        "rss_before_mb": before / 2**20,
        "peak_above_before_mb": (peak[0] - before) / 2**20,
        "result_mb": sum(
            f.nbytes if isinstance(f, pa.Table) else int(f.memory_usage(deep=True).sum()) for f in frames.values()
        ) / 2**20,
        "rows": {n: len(f) for n, f in frames.items()},
    }


def run_child(source: str, how: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", how, source], capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise RuntimeError(f"load of {how} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--methods", action="store_true", help="also read the transactions table in other ways")
    parser.add_argument("--child", nargs=2, metavar=("HOW", "SOURCE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child[1], args.child[0])))
        return 0

    print("command:", shlex.join([sys.executable, *sys.argv]))
    load1, load5, _ = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load1:.2f} / {load5:.2f} (1/5 min)")
    start = time.perf_counter()
    book = generate(args.customers, seed=args.seed)
    print(f"book: {args.customers:,} customers, " + ", ".join(
        f"{len(getattr(book.tables, n)):,} {n}" for n in TYPES
    ) + f" (generated in {time.perf_counter() - start:.1f} s)")

    with tempfile.TemporaryDirectory(prefix="clvcast-bench-pg-") as tmp, throwaway_cluster() as cluster:
        parquet = Path(tmp) / "book"
        write_tables(book.tables, parquet)
        url = cluster.create_database("book")
        start = time.perf_counter()
        for name, types in TYPES.items():
            cluster.create_table("book", name, getattr(book.tables, name), types)
        # VACUUM sets the rows' hint bits now, or the first timed read would pay for writing them.
        with cluster.connect("book", autocommit=True) as con:
            con.execute("VACUUM ANALYZE")
            version = con.execute("SHOW server_version").fetchone()[0]
        copied = time.perf_counter() - start
        print(f"PostgreSQL {version} on 127.0.0.1:{cluster.port}; book copied into it in {copied:.1f} s")
        print(f"pyarrow {pa.__version__}, adbc-driver-postgresql {adbc_driver_postgresql.__version__}")
        del book

        runs = [
            ("parquet", "load_tables", str(parquet)),
            ("postgresql", "load_tables", url),
            ("parquet", "reader", str(parquet)),
            ("postgresql", "reader", url),
        ]
        if args.methods:
            runs += [("postgresql", how, url) for how in METHODS]
        print()
        print(
            f"| source | reader | seconds (median of {args.repeat}, min) | peak RSS MB | peak above start MB "
            "| result MB |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        expected_rows = None
        for source, how, where in runs:
            results = [run_child(where, how) for _ in range(args.repeat)]
            expected_rows = expected_rows or results[0]["rows"]  # Parquet's, read first
            if any(r["rows"] != {n: expected_rows[n] for n in r["rows"]} for r in results):
                raise RuntimeError(f"{source} via {how} read {results[0]['rows']}, Parquet {expected_rows}")
            seconds = [r["seconds"] for r in results]
            print(
                f"| {source} | {how} | {statistics.median(seconds):.2f} ({min(seconds):.2f}) "
                f"| {max(r['peak_rss_mb'] for r in results):.0f} "
                f"| {max(r['peak_above_before_mb'] for r in results):.0f} "
                f"| {results[0]['result_mb']:.0f} |",
                flush=True,
            )
    load1, load5, _ = os.getloadavg()
    print(f"\nload average after: {load1:.2f} / {load5:.2f} (1/5 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
