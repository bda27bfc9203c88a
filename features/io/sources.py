"""Where tables come from: a directory of CSV/Parquet files, or a database behind a SQLAlchemy URL.

Each reader hands over one :class:`RawTable` per contract table, as Arrow, with columns renamed to the
contract's names; nothing is validated here (:mod:`features.io.validate` does that).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from features.contract import TABLE_SPECS, TableSpec

__all__ = ["FILE_SUFFIXES", "RawTable", "DirectoryReader", "SqlReader", "reader_for"]

FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
"""File suffixes recognised in a source directory, per table."""


@dataclass(frozen=True)
class RawTable:
    """One table as read, columns already renamed to the contract's names."""

    name: str
    source: str  # file path, or "table <name> at <url>", as Violation.source wants it
    data: pa.Table
    is_csv: bool


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
            data, is_csv = pq.read_table(path), False
        else:
            data, is_csv = _read_csv(path, TABLE_SPECS[name], renames), True
        return RawTable(name, str(path), _rename(data, renames, str(path)), is_csv)


def _read_csv(path: Path, spec: TableSpec, renames: Mapping[str, str]) -> pa.Table:
    """Read a CSV file; the declared columns as text, the others with Arrow's type inference.

    Declared columns are read as text so that ids keep their leading zeros ("00001") and so that
    validation sees, and quotes back, exactly what the file says ("n/a", "1,5", "NaN"); Arrow's casts
    then parse them as fast as its CSV converter would.
    """
    declared = {c.name for c in spec.columns}
    text_columns = {src for src, dst in renames.items() if dst in declared} | declared
    # Blank lines are kept as rows so that row and line numbers are exact; see load_tables' notes.
    parse = pcsv.ParseOptions(ignore_empty_lines=False)
    try:
        data = pcsv.read_csv(
            path,
            parse_options=parse,
            convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in text_columns}),
        )
    except pa.ArrowInvalid:
        # Older Arrow versions infer an undeclared column's type from the first block (about 1 MB)
        # and fail on a later value that does not fit ("12.5" after a block of integers): such a
        # column is then kept as text. A malformed file fails again, and is reported as such.
        try:
            with pcsv.open_csv(path, parse_options=parse) as stream:
                names = stream.schema.names
            data = pcsv.read_csv(
                path,
                parse_options=parse,
                convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in names}),
            )
        except pa.ArrowInvalid as err:
            raise ValueError(f"{path}: malformed CSV: {err}") from err
    return _drop_trailing_blank_rows(data)


def _drop_trailing_blank_rows(data: pa.Table) -> pa.Table:
    # An editor's extra newline at the end of a file is not a data row. Only the tail is looked at,
    # row by row from the end, so this stops at the first real row.
    n = data.num_rows
    while n > 0 and all(v is None or v == "" for v in data.slice(n - 1, 1).to_pylist()[0].values()):
        n -= 1
    return data.slice(0, n) if n < data.num_rows else data


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
    def __init__(self, url: str):
        # Imported here: SQLAlchemy takes a second or more to import, and most loads read files.
        import sqlalchemy as sa

        self.url = sa.engine.make_url(url)
        self.display = self.url.render_as_string(hide_password=True)
        self._engine = None
        backend = self.url.get_backend_name()
        database = self.url.database
        if backend in ("duckdb", "sqlite") and database and database != ":memory:" and not Path(database).exists():
            # Both would silently create an empty database file, and then report it has no tables.
            raise FileNotFoundError(f"{backend} database not found: {database}")
        self._native_duckdb = backend == "duckdb"
        if self._native_duckdb:
            existing = self._duckdb_table_names()
        else:
            self._engine = sa.create_engine(self.url)
            inspector = sa.inspect(self._engine)
            existing = inspector.get_table_names() + inspector.get_view_names()
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
        self.table_names = [n for n in TABLE_SPECS if n in self.db_names]

    def _duckdb_connect(self):
        import duckdb  # only DuckDB sources need it

        database = self.url.database or ":memory:"
        return duckdb.connect(database, read_only=database != ":memory:")

    def _duckdb_table_names(self) -> list[str]:
        with self._duckdb_connect() as con:
            rows = con.execute(
                "select table_name from information_schema.tables "
                "where table_schema = current_schema() and table_catalog = current_database()"
            ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        """Close the pooled connections (DuckDB connections are closed by each read)."""
        if self._engine is not None:
            self._engine.dispose()

    def read(self, name: str, renames: Mapping[str, str]) -> RawTable:
        db_name = self.db_names[name]
        source = f"table {db_name} at {self.display}"
        if self._native_duckdb:
            # DuckDB hands over Arrow directly; going through SQLAlchemy rows would be ~100x slower.
            with self._duckdb_connect() as con:
                relation = con.table(f'"{db_name}"')
                reader = getattr(relation, "to_arrow_table", None) or relation.arrow
                data = reader()
        else:
            import sqlalchemy as sa

            query = sa.select(sa.literal_column("*")).select_from(sa.table(db_name))
            with self._engine.connect() as con:
                # Arrow-backed columns keep integer ids with NULLs as integers (NumPy would make them
                # floats, and "1.0" is not the id "1").
                frame = pd.read_sql_query(query, con, dtype_backend="pyarrow")
            data = pa.Table.from_pandas(frame, preserve_index=False)
        return RawTable(name, source, _rename(data, renames, source), False)


def reader_for(source: str | os.PathLike) -> DirectoryReader | SqlReader:
    if isinstance(source, str) and "://" in source:
        return SqlReader(source)
    return DirectoryReader(Path(source))
