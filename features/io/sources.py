"""Where tables come from: a directory of CSV/Parquet files, or a database behind a SQLAlchemy URL.

DuckDB and PostgreSQL are read natively into Arrow (PostgreSQL streamed in record batches through
ADBC's libpq driver); other databases through SQLAlchemy and pandas' Arrow-backed ``read_sql``.
Each reader hands over one :class:`RawTable` per contract table, as Arrow, with columns renamed to the
contract's names; nothing is validated here (:mod:`features.io.validate` does that).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.contract import TABLE_SPECS
from features.io.csv_files import MalformedRow, read_csv_table
from features.io.parquet_files import read_parquet_checked

__all__ = ["FILE_SUFFIXES", "DirectoryReader", "KeyRange", "RawTable", "SqlReader", "reader_for"]

FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
"""File suffixes recognised in a source directory, per table."""


@dataclass(frozen=True)
class RawTable:
    """One table as read, columns already renamed to the contract's names.

    ``rows`` numbers the rows of ``data`` in the source (1-based) when they are not simply 1..n:
    a CSV file's malformed rows are in ``malformed`` instead of ``data``, and keep their number.
    ``rows_expected`` is the number of data rows the file itself states (a CSV file's data lines,
    a Parquet footer's row count); the reader has checked ``data`` against it. None for databases.
    ``blank_lines_at_end`` counts the blank lines after a CSV file's last row, which are not data.
    """

    name: str
    source: str  # file path, or "table <name> at <url>", as Violation.source wants it
    data: pa.Table
    is_csv: bool
    rows: np.ndarray | None = None
    malformed: tuple[MalformedRow, ...] = ()
    rows_expected: int | None = None
    blank_lines_at_end: int = 0

    @property
    def rows_read(self) -> int:
        """Data rows in the source: the rows of ``data`` and the malformed ones."""
        return self.data.num_rows + len(self.malformed)

    def row_numbers(self, positions: np.ndarray) -> np.ndarray:
        """1-based row numbers in the source of the rows of ``data`` at ``positions``."""
        return positions + 1 if self.rows is None else self.rows[positions]


@dataclass(frozen=True)
class KeyRange:
    """The rows of a table whose key column (its source name) lies in ``(lower, upper]``, or is NULL.

    ``lower`` / ``upper`` of None: unbounded on that side. ``null=True``: the rows whose key is NULL
    (no range ever holds them). Bounds are values of :meth:`SqlReader.key_bounds`, in the form the
    database's reader binds back: text cast to the column's type for PostgreSQL, the database's own
    values otherwise; comparisons are the database's, so they follow its ordering and collation.
    """

    column: str
    lower: object = None
    upper: object = None
    null: bool = False


class DirectoryReader:
    def __init__(self, directory: Path):
        if not directory.exists():
            raise FileNotFoundError(f"data directory not found: {directory}")
        if not directory.is_dir():
            raise NotADirectoryError(
                f"{directory} is not a directory; pass the directory holding transactions.csv/.parquet"
            )
        self.display = str(directory)
        self.files: dict[str, Path] = {}
        for name in TABLE_SPECS:
            found = [directory / f"{name}{suffix}" for suffix in FILE_SUFFIXES]
            found = [p for p in found if p.is_file()]
            if len(found) > 1:
                raise ValueError(
                    f"{directory}: table {name} is ambiguous, found {', '.join(p.name for p in found)}; "
                    "keep exactly one"
                )
            if found:
                self.files[name] = found[0]
        if "transactions" not in self.files:
            present = sorted(p.name for p in directory.iterdir())
            shown = ", ".join(present[:20]) + (", ..." if len(present) > 20 else "") or "nothing"
            expected = " or ".join(f"transactions{suffix}" for suffix in FILE_SUFFIXES)
            raise FileNotFoundError(
                f"{directory}: no transactions table (expected {expected}); the directory holds: {shown}"
            )
        self.table_names = [n for n in TABLE_SPECS if n in self.files]

    def close(self) -> None:
        """Nothing to release: each file is opened and closed by its read."""

    def read(self, name: str, renames: Mapping[str, str]) -> RawTable:
        path = self.files[name]
        if path.name.endswith(".parquet"):
            data, expected = read_parquet_checked(path)
            return RawTable(name, str(path), _rename(data, renames, str(path)), False, rows_expected=expected)
        # Declared columns are read as text so that ids keep their leading zeros ("00001") and so
        # that validation sees, and quotes back, exactly what the file says ("n/a", "1,5", "NaN");
        # Arrow's casts then parse them as fast as its CSV converter would.
        declared = {c.name for c in TABLE_SPECS[name].columns}
        text_columns = {src for src, dst in renames.items() if dst in declared} | declared
        csv = read_csv_table(path, text_columns)
        data = _rename(csv.data, renames, str(path))
        return RawTable(name, str(path), data, True, csv.rows, csv.malformed, csv.data_lines, csv.blank_lines_at_end)


def _rename(data: pa.Table, renames: Mapping[str, str], source: str) -> pa.Table:
    if not renames:
        return data
    names = [renames.get(c, c) for c in data.column_names]
    seen: dict[str, str] = {}
    for original, new in zip(data.column_names, names):
        if new in seen:
            raise ValueError(
                f"{source}: after column mapping, columns {seen[new]!r} and {original!r} are both named {new!r}"
            )
        seen[new] = original
    return data.rename_columns(names)


class SqlReader:
    """The contract tables of a database: DuckDB and PostgreSQL natively into Arrow, others via SQLAlchemy.

    Parameters
    ----------
    url : str
        A SQLAlchemy URL. ``duckdb://`` is read by DuckDB itself, ``postgresql[+driver]://`` by ADBC's
        libpq driver (whatever driver the URL names), anything else through SQLAlchemy.

    Raises
    ------
    FileNotFoundError
        A DuckDB or SQLite database file does not exist.
    ConnectionError
        The PostgreSQL server cannot be reached or refuses the login.
    ValueError
        The database has no ``transactions`` table, or a table name is ambiguous.
    """

    def __init__(self, url: str):
        # Imported here: SQLAlchemy takes a second or more to import, and most loads read files.
        import sqlalchemy as sa

        self.url = sa.engine.make_url(url)
        self.display = self.url.render_as_string(hide_password=True)
        backend = self.url.get_backend_name()
        database = self.url.database
        if backend in ("duckdb", "sqlite") and database and database != ":memory:" and not Path(database).exists():
            # Both would silently create an empty database file, and then report it has no tables.
            raise FileNotFoundError(f"{backend} database not found: {database}")
        if backend == "duckdb":
            self._db: _DuckDBTables | _PostgresTables | _SqlAlchemyTables = _DuckDBTables(self.url)
        elif backend == "postgresql":
            self._db = _PostgresTables(self.url, self.display)
        else:
            self._db = _SqlAlchemyTables(self.url)
        try:
            existing = self._db.table_names()
            self.db_names: dict[str, str] = {}
            for name in TABLE_SPECS:
                if name in existing:
                    self.db_names[name] = name
                    continue
                # Some databases fold unquoted names to upper or lower case.
                folded = [e for e in existing if e.lower() == name]
                if len(folded) > 1:
                    raise ValueError(f"{self.display}: table {name} is ambiguous, found {folded}")
                if folded:
                    self.db_names[name] = folded[0]
            if "transactions" not in self.db_names:
                raise ValueError(
                    f"{self.display}: no table named transactions; the database has: "
                    f"{', '.join(sorted(existing)) or 'no tables'}"
                )
        except BaseException:
            self._db.close()
            raise
        self.table_names = [n for n in TABLE_SPECS if n in self.db_names]

    def close(self) -> None:
        """Close the database connection(s) this reader holds."""
        self._db.close()

    def read(
        self, name: str, renames: Mapping[str, str], keys: KeyRange | None = None, limit: int | None = None
    ) -> RawTable:
        """Table ``name`` as Arrow, renamed; only the rows of ``keys`` and at most ``limit`` rows if given.

        The rows of a range come typed exactly as those of the whole table (same query, same
        driver), in the order the database returns them.
        """
        db_name = self.db_names[name]
        source = f"table {db_name} at {self.display}"
        declared_text = {c.name for c in TABLE_SPECS[name].columns if c.dtype in ("id", "string")}
        # Source columns that land on a declared text column (ids, channels) once renamed.
        text_sources = {s for s, t in renames.items() if t in declared_text} | (declared_text - set(renames))
        data = self._db.read(db_name, text_sources, keys, limit)
        return RawTable(name, source, _rename(data, renames, source), False)

    def key_bounds(self, name: str, column: str, buckets: int) -> list[tuple[object, int]]:
        """Table ``name`` cut into about ``buckets`` equal runs of rows in the order of ``column``.

        One query, run by the database (``ntile`` over the non-NULL keys, then each bucket's largest
        key and its row count): what comes back is at most ``buckets`` pairs, whatever the size of
        the table. Equal keys may fall into two adjacent buckets, which then share their largest key.

        Returns
        -------
        list of (key, rows)
            In the key order of the database; keys in the form :class:`KeyRange` takes. Empty for
            a table without a non-NULL key.
        """
        return self._db.key_bounds(self.db_names[name], column, int(buckets))


def _quote(identifier: str) -> str:
    """A double-quoted SQL identifier (DuckDB and PostgreSQL spelling)."""
    return '"' + identifier.replace('"', '""') + '"'


def _where(keys: KeyRange, column: str, placeholder) -> tuple[str, list]:
    """``(condition, parameters)`` of a key range on the quoted ``column``; ``placeholder(i)`` spells parameter i (1-based)."""
    if keys.null:
        return f"{column} is null", []
    clauses, params = [f"{column} is not null"], []
    for op, bound in ((">", keys.lower), ("<=", keys.upper)):
        if bound is not None:
            params.append(bound)
            clauses.append(f"{column} {op} {placeholder(len(params))}")
    return " and ".join(clauses), params


def _bounds_query(table: str, column: str, buckets: int, key=lambda k: k) -> str:
    """The largest key and the row count of each of ``buckets`` ntile buckets of the non-NULL keys, in key order."""
    return (
        f"select {key('k')}, n from (select k, b, count(*) over (partition by b) as n, "
        f"row_number() over (partition by b order by k desc) as r from (select {column} as k, "
        f"ntile({int(buckets)}) over (order by {column}) as b from {table} where {column} is not null) s) s2 "
        "where r = 1 order by b"
    )


class _DuckDBTables:
    """DuckDB hands over Arrow directly; going through SQLAlchemy rows would be ~100x slower."""

    def __init__(self, url):
        self.database = url.database or ":memory:"

    def _connect(self):
        import duckdb  # only DuckDB sources need it

        return duckdb.connect(self.database, read_only=self.database != ":memory:")

    def table_names(self) -> list[str]:
        with self._connect() as con:
            rows = con.execute(
                "select table_name from information_schema.tables "
                "where table_schema = current_schema() and table_catalog = current_database()"
            ).fetchall()
        return [r[0] for r in rows]

    def read(self, db_name: str, text_sources: set[str], keys: KeyRange | None = None, limit: int | None = None) -> pa.Table:
        with self._connect() as con:
            if keys is None and limit is None:
                relation = con.table(_quote(db_name))
            else:
                condition, params = _where(keys, _quote(keys.column), lambda i: f"${i}") if keys else ("true", [])
                sql = f"select * from {_quote(db_name)} where {condition}"
                relation = con.sql(sql + ("" if limit is None else f" limit {int(limit)}"), params=params or None)
            reader = getattr(relation, "to_arrow_table", None) or relation.arrow
            return reader()

    def key_bounds(self, db_name: str, column: str, buckets: int) -> list[tuple[object, int]]:
        with self._connect() as con:
            return [tuple(r) for r in con.execute(_bounds_query(_quote(db_name), _quote(column), buckets)).fetchall()]

    def close(self) -> None:
        """Nothing to release: each read opens and closes its own connection."""


# PostgreSQL types that ADBC's driver turns into plain Arrow types the validation understands
# (integers, floats, text, timestamps with and without zone, dates, booleans). Every other type is
# cast to text by the server (uuid, json, enums, intervals, domains, arrays, ...): an id column of
# such a type stays the id the database prints, and an extra column stays readable.
_PG_NATIVE_TYPES = frozenset(
    {"int2", "int4", "int8", "float4", "float8", "text", "varchar", "bpchar"}
    | {"timestamp", "timestamptz", "date", "bool"}
)


class _PostgresTables:
    """PostgreSQL through ADBC's libpq driver: each table is streamed by ``COPY ... TO STDOUT (FORMAT
    binary)`` into Arrow record batches (the driver aims at 16 MiB each), so a load holds the tables
    in Arrow plus one batch; no row ever becomes a Python object.

    All tables are read in one ``REPEATABLE READ`` read-only transaction: transactions, events and
    customers come from the same snapshot even while the database is being written to.
    """

    def __init__(self, url, display: str):
        # Imported here: only PostgreSQL sources need the driver.
        import adbc_driver_postgresql.dbapi
        from adbc_driver_manager import Error as AdbcError

        # ADBC takes a libpq URI: the SQLAlchemy URL without its "+driver" part.
        uri = url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            self._con = adbc_driver_postgresql.dbapi.connect(uri)
        except AdbcError as exc:
            raise ConnectionError(f"{display}: cannot connect: {exc}") from None
        self._relations: dict[str, int] = {}
        try:
            with self._con.cursor() as cur:
                # The first statement of the transaction that ADBC opened (autocommit is off).
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                # Tables, views, materialized views, partitioned and foreign tables of the first
                # schema on the search path (what an unqualified name means).
                cur.execute(
                    "select c.relname, c.oid::int8 from pg_catalog.pg_class c "
                    "where c.relnamespace = current_schema()::regnamespace and c.relkind in ('r', 'v', 'm', 'p', 'f')"
                )
                self._relations = dict(cur.fetchall())
        except BaseException:
            self._con.close()
            raise

    def table_names(self) -> list[str]:
        return list(self._relations)

    def _columns(self, cur, db_name: str) -> list[tuple[str, str, str]]:
        """(name, type name, type as declared) of each column of relation ``db_name``, in order."""
        cur.execute(
            "select a.attname, t.typname, pg_catalog.format_type(a.atttypid, a.atttypmod) from pg_catalog.pg_attribute a "
            "join pg_catalog.pg_type t on t.oid = a.atttypid "
            f"where a.attrelid = {int(self._relations[db_name])} and a.attnum > 0 and not a.attisdropped "
            "order by a.attnum"
        )
        return cur.fetchall()

    def read(self, db_name: str, text_sources: set[str], keys: KeyRange | None = None, limit: int | None = None) -> pa.Table:
        with self._con.cursor() as cur:
            columns = self._columns(cur, db_name)
            select = ", ".join(_pg_select_item(column, typname, column in text_sources) for column, typname, _ in columns)
            sql, params = f"select {select} from {_quote(db_name)}", []
            if keys is not None:
                # The bounds travel as text and are cast back to the key's own type, so the comparison
                # is the column's (numbers as numbers, an index on it usable), whatever its type.
                declared = {column: declared for column, _, declared in columns}.get(keys.column, "text")
                condition, params = _where(keys, _quote(keys.column), lambda i: f"cast(${i} as {declared})")
                sql += f" where {condition}"
            if limit is not None:
                sql += f" limit {int(limit)}"
            cur.execute(sql, parameters=params or None)
            return cur.fetch_record_batch().read_all()

    def key_bounds(self, db_name: str, column: str, buckets: int) -> list[tuple[object, int]]:
        with self._con.cursor() as cur:
            # As text: every PostgreSQL type prints a text that casts back to the same value.
            cur.execute(_bounds_query(_quote(db_name), _quote(column), buckets, key=lambda k: f"{k}::text"))
            return [(k, int(n)) for k, n in cur.fetchall()]

    def close(self) -> None:
        """End the read-only transaction and close the connection."""
        self._con.close()


def _pg_select_item(column: str, typname: str, as_text: bool) -> str:
    quoted = _quote(column)
    if typname in _PG_NATIVE_TYPES:
        return quoted
    if typname == "numeric":
        if as_text:
            # An id keeps every digit of a numeric(20,0), in the canonical form of
            # features.contract.canonical_ids: no trailing fractional zeros (trim_scale, PostgreSQL 13+).
            return f"trim_scale({quoted})::text as {quoted}"
        # Amounts and numeric covariates as float64, as the contract normalises them.
        return f"{quoted}::float8 as {quoted}"
    # An id keeps what the database prints: a uuid with its hyphens.
    return f"{quoted}::text as {quoted}"


class _SqlAlchemyTables:
    """Any other database SQLAlchemy reaches, through pandas' Arrow-backed ``read_sql``."""

    def __init__(self, url):
        import sqlalchemy as sa

        self._engine = sa.create_engine(url)
        self._sa = sa

    def table_names(self) -> list[str]:
        inspector = self._sa.inspect(self._engine)
        return inspector.get_table_names() + inspector.get_view_names()

    def read(self, db_name: str, text_sources: set[str], keys: KeyRange | None = None, limit: int | None = None) -> pa.Table:
        sa = self._sa
        query = sa.select(sa.literal_column("*")).select_from(sa.table(db_name))
        if keys is not None:
            key = sa.column(keys.column)
            if keys.null:
                query = query.where(key.is_(None))
            else:
                query = query.where(key.is_not(None))
                query = query if keys.lower is None else query.where(key > sa.bindparam("lower", keys.lower))
                query = query if keys.upper is None else query.where(key <= sa.bindparam("upper", keys.upper))
        if limit is not None:
            query = query.limit(int(limit))
        with self._engine.connect() as con:
            # Arrow-backed columns keep integer ids with NULLs as integers (NumPy would make them
            # floats, and "1.0" is not the id "1").
            frame = pd.read_sql_query(query, con, dtype_backend="pyarrow")
        return pa.Table.from_pandas(frame, preserve_index=False)

    def key_bounds(self, db_name: str, column: str, buckets: int) -> list[tuple[object, int]]:
        quote = self._engine.dialect.identifier_preparer.quote
        with self._engine.connect() as con:
            rows = con.execute(self._sa.text(_bounds_query(quote(db_name), quote(column), buckets))).fetchall()
        return [(k, int(n)) for k, n in rows]

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()


def reader_for(source: str | os.PathLike) -> DirectoryReader | SqlReader:
    if isinstance(source, str) and "://" in source:
        return SqlReader(source)
    return DirectoryReader(Path(source))
