"""Read the input tables from a directory or a database, check them against the data contract, write them back.

This is the file and SQL boundary of the data contract (:mod:`features.contract`): everything read here
comes out as a :class:`~features.contract.Tables` with the normalised dtypes declared there, so the code
downstream trusts its input and never checks again.

Sources
-------
- A directory holding ``transactions`` and optionally ``events`` and ``customers``, each as
  ``<table>.csv``, ``<table>.csv.gz`` or ``<table>.parquet``.
- A SQLAlchemy URL (``duckdb:///file.db``, ``sqlite:///file.db``, ``postgresql://...``) whose database
  has tables (or views) of those names.

Validation
----------
Every broken rule of a load becomes one :class:`~features.contract.Violation` (source, column, rule,
number of rows, first offending rows with their row number and raw values) and all of them are raised
together as one :class:`~features.contract.DataValidationError`. Row numbers are 1-based positions of
the data rows as read; for CSV, ``line`` is the line in the file (the header is line 1). With
``on_invalid="quarantine"`` the rows that break a row-level rule are written to a quarantine file with
the reason instead, and left out of the returned tables; a missing required column or a column of an
unusable type is always an error.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import yaml
from tqdm.auto import tqdm

from features.contract import TABLE_SPECS, DataValidationError, Tables, TableSpec, Violation

__all__ = [
    "ColumnMap",
    "FILE_SUFFIXES",
    "LoadReport",
    "LoadResult",
    "load_tables",
    "parse_column_map",
    "write_tables",
]

ColumnMap = dict[str, dict[str, str]]
"""Per-table renames, ``{table: {source column: contract column}}``."""

FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
"""File suffixes recognised in a source directory, per table."""

N_EXAMPLES = 5
"""Offending rows shown per violation."""

# Strings that the pandas fallback turns into NaN but that are numbers in the IEEE sense: they break the
# "finite" rule, not the "numeric" one, whichever parser saw them.
_NAN_STRINGS = frozenset({"nan", "+nan", "-nan"})
# datetime64[ns] covers 1677-09-21 .. 2262-04-11; outside it a value cannot be represented at all.
_NS_MIN = pd.Timestamp.min.as_unit("ns")
_NS_MAX = pd.Timestamp.max.as_unit("ns")

RULE_NULL = "null"
RULE_BLANK = "null or blank"
RULE_DATETIME = "unparseable date/datetime (expected a date or ISO-8601 datetime)"
RULE_DATETIME_RANGE = "date/datetime outside 1677-09-22 .. 2262-04-11"
RULE_NUMERIC = "non-numeric"
RULE_FINITE = "non-finite (NaN or infinite)"
RULE_NEGATIVE = "negative"
RULE_DUPLICATE = "duplicate customer_id"


# --------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class LoadReport:
    """What a load read, and what it set aside.

    Parameters
    ----------
    source : str
        The directory or the URL (password hidden) that was read.
    table_sources : dict of str to str
        Where each table came from: a file path, or ``"table <name> at <url>"``.
    rows_read : dict of str to int
        Data rows read per table, before anything was set aside.
    rows_quarantined : dict of str to int
        Rows set aside per table (only with ``on_invalid="quarantine"``; zero otherwise).
    quarantined : dict of str to dict of str to int
        Rows set aside per table and broken rule, keyed ``"<column>: <rule>"``. A row that breaks
        several rules is counted under each, so these can add up to more than ``rows_quarantined``.
    quarantine_files : dict of str to Path
        The quarantine file written per table (only tables with rows set aside).
    violations : tuple of Violation
        The row-level violations behind the quarantined rows, with their first examples.
    """

    source: str
    table_sources: dict[str, str]
    rows_read: dict[str, int]
    rows_quarantined: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, dict[str, int]] = field(default_factory=dict)
    quarantine_files: dict[str, Path] = field(default_factory=dict)
    violations: tuple[Violation, ...] = ()

    @property
    def rows_loaded(self) -> dict[str, int]:
        """Rows per table in the returned tables."""
        return {t: n - self.rows_quarantined.get(t, 0) for t, n in self.rows_read.items()}

    def summary(self) -> list[str]:
        """One line per table, then one per quarantined rule: what a command line prints after a load."""
        lines = []
        for table, n_read in self.rows_read.items():
            n_out = self.rows_quarantined.get(table, 0)
            line = f"{table}: {n_read:,} rows from {self.table_sources[table]}"
            if n_out:
                line += f", {n_out:,} quarantined to {self.quarantine_files[table]}"
            lines.append(line)
            lines.extend(f"  {rule}: {n:,} row(s)" for rule, n in self.quarantined.get(table, {}).items())
        return lines

    def __str__(self) -> str:
        return "\n".join(self.summary())


@dataclass(frozen=True)
class LoadResult:
    """The validated tables and the report of the load that produced them."""

    tables: Tables
    report: LoadReport


# --------------------------------------------------------------------------------------------------
# Column mapping


def parse_column_map(spec: Mapping | str | os.PathLike | Iterable[str] | None) -> ColumnMap:
    """Turn a column mapping given in any accepted form into ``{table: {source column: contract column}}``.

    Parameters
    ----------
    spec : mapping, str, path, iterable of str or None
        - A mapping, per table (``{"transactions": {"cust": "customer_id"}}``) or flat
          (``{"cust": "customer_id"}``, applied to every table that has such a column), or both mixed.
        - A path to a ``.json``, ``.yaml`` or ``.yml`` file holding such a mapping, optionally under a
          top-level ``column_map`` key.
        - A command-line string of comma-separated ``[table.]source=target`` items, e.g.
          ``"transactions.cust=customer_id,ts=timestamp"``; an iterable of such strings (a repeated
          flag) is merged in order.
        - ``None``: no renames.

    Returns
    -------
    dict of str to dict of str to str
        Renames per table; per-table entries win over flat ones for the same source column.

    Raises
    ------
    ValueError
        On an unknown table name, a malformed item, or two source columns mapped to one target.
    FileNotFoundError
        When ``spec`` names a file that does not exist.
    """
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return _normalise_column_map(spec, origin="column_map")
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and "=" not in spec):
        return _normalise_column_map(_read_column_map_file(Path(spec)), origin=str(spec))
    if isinstance(spec, str):
        return _normalise_column_map(_parse_column_map_items(spec.split(",")), origin=repr(spec))
    items = [item for s in spec for item in str(s).split(",")]
    return _normalise_column_map(_parse_column_map_items(items), origin=repr(list(spec)))


def _read_column_map_file(path: Path) -> Mapping:
    if not path.is_file():
        raise FileNotFoundError(f"column map file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    elif path.suffix.lower() in (".yaml", ".yml"):
        data = yaml.safe_load(text) or {}
    else:
        raise ValueError(f"column map file {path}: expected a .json, .yaml or .yml file")
    if not isinstance(data, Mapping):
        raise ValueError(f"column map file {path}: expected a mapping at the top level")
    if set(data) == {"column_map"}:
        data = data["column_map"]
    return data


def _parse_column_map_items(items: Iterable[str]) -> dict:
    flat: dict[str, str] = {}
    per_table: dict[str, dict[str, str]] = {}
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        source, sep, target = item.partition("=")
        source, target = source.strip(), target.strip()
        if not sep or not source or not target:
            raise ValueError(f"column map item {raw!r}: expected [table.]source=target")
        table, dot, column = source.partition(".")
        # A dot only names a table when the prefix is one: "order.value=amount" is a flat rename.
        if dot and table in TABLE_SPECS and column:
            per_table.setdefault(table, {})[column] = target
        else:
            flat[source] = target
    return {**flat, **per_table}


def _normalise_column_map(data: Mapping, *, origin: str) -> ColumnMap:
    flat: dict[str, str] = {}
    per_table: ColumnMap = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            if key not in TABLE_SPECS:
                raise ValueError(
                    f"{origin}: unknown table {key!r} (tables: {', '.join(TABLE_SPECS)})"
                )
            for source, target in value.items():
                per_table.setdefault(key, {})[_map_name(source, origin)] = _map_name(target, origin)
        elif isinstance(value, str):
            flat[_map_name(key, origin)] = _map_name(value, origin)
        else:
            raise ValueError(f"{origin}: {key!r} maps to {value!r}; expected a column name or a table mapping")
    result: ColumnMap = {}
    for table in TABLE_SPECS:
        renames = {**flat, **per_table.get(table, {})}
        for target, count in Counter(renames.values()).items():
            if count > 1:
                sources = [s for s, t in renames.items() if t == target]
                raise ValueError(f"{origin}: table {table}: columns {sources} are all mapped to {target!r}")
        if renames:
            result[table] = renames
    return result


def _map_name(name: object, origin: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{origin}: column names must be non-empty strings, got {name!r}")
    return name.strip()


# --------------------------------------------------------------------------------------------------
# Loading


def load_tables(
    source: str | os.PathLike,
    *,
    column_map: Mapping | str | os.PathLike | Iterable[str] | None = None,
    on_invalid: Literal["raise", "quarantine"] = "raise",
    quarantine_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> LoadResult:
    """Read, validate and normalise the input tables of a directory or a database.

    Parameters
    ----------
    source : str or path
        A directory holding ``transactions`` and optionally ``events`` and ``customers``, each as
        ``.csv``, ``.csv.gz`` or ``.parquet``; or a SQLAlchemy URL (``duckdb:///file.db``,
        ``sqlite:///file.db``, ``postgresql://...``) whose database has tables of those names.
    column_map : mapping, str, path or iterable of str, optional
        Renames from the source's column names to the contract's, in any form that
        :func:`parse_column_map` accepts. Columns not named are kept as they are.
    on_invalid : {"raise", "quarantine"}
        ``"raise"``: any broken rule raises :class:`~features.contract.DataValidationError`.
        ``"quarantine"``: rows that break a row-level rule are written to
        ``quarantine_dir/<table>.quarantine.csv`` (raw values plus ``table``, ``row`` and ``reason``)
        and left out of the result; all rows of a duplicated ``customer_id`` in ``customers`` go,
        since there is no telling which one is right. A missing required column or a column of an
        unusable type still raises.
    quarantine_dir : str or path, optional
        Where quarantine files go; required with ``on_invalid="quarantine"``. A quarantine file left
        by an earlier load of a table that now has no invalid rows is removed, so the directory only
        ever describes the latest load.
    progress : bool
        Show a progress bar over the tables on stderr.

    Returns
    -------
    LoadResult
        ``tables``: the :class:`~features.contract.Tables` with normalised dtypes (ids as pandas
        string dtype, timestamps ``datetime64[ns]`` naive UTC, amounts ``float64``, other columns kept
        as read), on a fresh ``RangeIndex``; ``report``: a :class:`LoadReport`.

    Raises
    ------
    FileNotFoundError
        The directory, or its transactions table, does not exist.
    ValueError
        A table is ambiguous (several files), a database table is missing, a CSV file is malformed,
        or the arguments are inconsistent.
    DataValidationError
        The data breaks the contract (all broken rules of the load at once).

    Notes
    -----
    Columns are read through Arrow: Parquet and DuckDB natively, CSV with ``pyarrow.csv`` (declared
    columns as text, so ids keep their leading zeros), other databases with pandas' Arrow-backed
    ``read_sql``. Validation is vectorised; string timestamps and numbers go through pandas only when
    Arrow's strict parsers reject some value. For CSV, blank lines inside the file are kept as rows
    (and then break the ``customer_id`` rule, at their exact line) while blank lines at the end of the
    file are not data.
    """
    if on_invalid not in ("raise", "quarantine"):
        raise ValueError(f"on_invalid must be 'raise' or 'quarantine', got {on_invalid!r}")
    if on_invalid == "quarantine" and quarantine_dir is None:
        raise ValueError("on_invalid='quarantine' needs a quarantine_dir")
    renames = parse_column_map(column_map)
    reader = _reader_for(source)

    checked: dict[str, _Checked] = {}
    try:
        for name in tqdm(reader.table_names, desc="loading tables", unit="table", disable=not progress):
            raw = reader.read(name, renames.get(name, {}))
            checked[name] = _validate_table(TABLE_SPECS[name], raw, renames.get(name, {}))
    finally:
        reader.close()

    fatal = [v for c in checked.values() for v in c.fatal]
    row_level = [v for c in checked.values() for v in c.violations]
    if fatal or (row_level and on_invalid == "raise"):
        raise DataValidationError(fatal + row_level)

    quarantine_files: dict[str, Path] = {}
    if on_invalid == "quarantine":
        qdir = Path(quarantine_dir)
        for name, c in checked.items():
            path = qdir / f"{name}.quarantine.csv"
            if c.bad.any():
                qdir.mkdir(parents=True, exist_ok=True)
                _write_quarantine(c, path)
                quarantine_files[name] = path
            elif path.exists():
                path.unlink()

    frames = {name: c.clean_frame() for name, c in checked.items()}
    report = LoadReport(
        source=reader.display,
        table_sources={name: c.raw.source for name, c in checked.items()},
        rows_read={name: c.raw.data.num_rows for name, c in checked.items()},
        rows_quarantined={name: int(c.bad.sum()) for name, c in checked.items()},
        quarantined={
            name: {f"{v.column}: {v.rule}": v.n_rows for v in c.violations}
            for name, c in checked.items()
            if c.violations
        },
        quarantine_files=quarantine_files,
        violations=tuple(row_level),
    )
    return LoadResult(Tables(**frames), report)


@dataclass(frozen=True)
class _RawTable:
    """One table as read, columns already renamed to the contract's names."""

    name: str
    source: str  # file path, or "table <name> at <url>", as Violation.source wants it
    data: pa.Table
    is_csv: bool


class _DirectoryReader:
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

    def read(self, name: str, renames: Mapping[str, str]) -> _RawTable:
        path = self.files[name]
        if path.name.endswith(".parquet"):
            data, is_csv = pq.read_table(path), False
        else:
            data, is_csv = _read_csv(path, TABLE_SPECS[name], renames), True
        return _RawTable(name, str(path), _rename(data, renames, str(path)), is_csv)


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


class _SqlReader:
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

    def read(self, name: str, renames: Mapping[str, str]) -> _RawTable:
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
        return _RawTable(name, source, _rename(data, renames, source), False)


def _reader_for(source: str | os.PathLike) -> _DirectoryReader | _SqlReader:
    if isinstance(source, str) and "://" in source:
        return _SqlReader(source)
    return _DirectoryReader(Path(source))


# --------------------------------------------------------------------------------------------------
# Validation and normalisation


_Normalised = tuple[pa.ChunkedArray, list[tuple[str, np.ndarray]]] | str
"""A normalised column and its (rule, bad rows) findings; or, as text, why the column is unusable."""


@dataclass
class _Checked:
    """A table after validation: normalised columns, the rows that break a rule, and why."""

    raw: _RawTable
    columns: dict[str, pa.ChunkedArray]  # normalised declared columns
    violations: list[Violation]  # row-level
    fatal: list[Violation]  # column-level: the table cannot be used at all
    masks: list[tuple[str, np.ndarray]]  # ("<column>: <rule>", bad rows) per row-level violation
    bad: np.ndarray  # any row-level rule broken

    def clean_frame(self) -> pd.DataFrame:
        spec = TABLE_SPECS[self.raw.name]
        declared = [c.name for c in spec.columns if c.name in self.columns]
        extra = [c for c in self.raw.data.column_names if c not in self.columns]
        data = pa.table(
            [self.columns[c] for c in declared] + [self.raw.data.column(c) for c in extra],
            names=declared + extra,
        )
        if self.bad.any():
            data = data.filter(pa.array(~self.bad))
        # split_blocks: one array per column, no consolidation copy (tens of millions of rows).
        return data.to_pandas(split_blocks=True)


def _validate_table(spec: TableSpec, raw: _RawTable, renames: Mapping[str, str]) -> _Checked:
    """Check one table against its spec and normalise its declared columns.

    The one place where rules are checked: per column through the ``_normalise_*`` helpers (which
    parse and flag in one pass), then the rules across rows. Returns the normalised columns and the
    broken rules, raising nothing, so that all broken rules of all tables are reported together.
    """
    data = raw.data
    n = data.num_rows
    present = data.column_names
    fatal: list[Violation] = []
    findings: list[tuple[str, str, np.ndarray]] = []  # (column, rule, bad rows)
    columns: dict[str, pa.ChunkedArray] = {}

    for col in spec.columns:
        if col.name not in present:
            if col.required:
                mapped_from = [s for s, t in renames.items() if t == col.name]
                hint = f"; column_map takes it from {mapped_from[0]!r}" if mapped_from else ""
                fatal.append(
                    Violation(raw.source, col.name,
                              f"required column missing (columns present: {', '.join(present)}{hint})", n)
                )
            continue
        arr = data.column(col.name)
        if col.dtype == "string":
            result = _normalise_string(arr, required=col.required)
        elif col.dtype == "datetime":
            result = _normalise_datetime(arr, required=col.required)
        elif col.dtype == "float":
            result = _normalise_float(arr, required=col.required)
        else:  # a new dtype in the contract needs a normaliser here
            raise NotImplementedError(f"no normaliser for contract dtype {col.dtype!r}")
        if isinstance(result, str):
            fatal.append(Violation(raw.source, col.name, result, n))
            continue
        columns[col.name], col_findings = result
        findings += [(col.name, rule, mask) for rule, mask in col_findings]

    if spec.name == "customers" and "customer_id" in columns:
        ids = columns["customer_id"].to_pandas()
        dup = (ids.duplicated(keep=False) & ids.notna()).to_numpy()
        findings.append(("customer_id", RULE_DUPLICATE, dup))
    if "acquisition_cost" in columns:
        cost = columns["acquisition_cost"].to_numpy()
        findings.append(("acquisition_cost", RULE_NEGATIVE, np.nan_to_num(cost, nan=0.0) < 0))

    violations, masks = [], []
    bad = np.zeros(n, dtype=bool)
    order = {c.name: k for k, c in enumerate(spec.columns)}
    for column, rule, mask in sorted(findings, key=lambda f: order[f[0]]):  # stable: rules keep their order
        if mask.any():
            violations.append(_violation(raw, column, rule, mask))
            masks.append((f"{column}: {rule}", mask))
            bad |= mask
    return _Checked(raw, columns, violations, fatal, masks, bad)


def _violation(raw: _RawTable, column: str, rule: str, mask: np.ndarray) -> Violation:
    rows = np.flatnonzero(mask)
    shown = rows[:N_EXAMPLES]
    context = [c for c in (column, "customer_id") if c in raw.data.column_names]
    values = {c: raw.data.column(c).take(pa.array(shown)).to_pylist() for c in dict.fromkeys(context)}
    examples = []
    for k, i in enumerate(shown):
        example: dict = {"row": int(i) + 1}
        if raw.is_csv:
            example["line"] = int(i) + 2  # after the header line
        example |= {c: _raw_value(v[k]) for c, v in values.items()}
        examples.append(example)
    return Violation(raw.source, column, rule, int(len(rows)), examples)


def _raw_value(value: object) -> object:
    # Examples end up in an error message: show text as text, and everything else as it prints.
    return value if value is None or isinstance(value, str | int | float) else str(value)


def _nulls_or_blank(arr: pa.ChunkedArray) -> np.ndarray:
    """Null, empty or whitespace-only strings."""
    blank = pc.or_kleene(pc.equal(pc.binary_length(arr), 0), pc.utf8_is_space(arr))
    if arr.null_count == 0 and not pc.any(blank).as_py():
        return np.zeros(len(arr), dtype=bool)  # the usual case, without unpacking a mask
    return _to_mask(pc.fill_null(blank, True))


def _to_mask(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _as_chunked(arr: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    return arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])


def _normalise_string(arr: pa.ChunkedArray, *, required: bool) -> _Normalised:
    """Text (ids, event types, channels): any scalar type becomes text; numbers print as integers when whole."""
    if pa.types.is_null(arr.type):
        arr = pa.chunked_array([pa.nulls(len(arr), pa.string())])
    elif not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        try:
            arr = pc.cast(arr, pa.string())
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            return f"unsupported column type {arr.type} (expected text or integers)"
    blank = _nulls_or_blank(arr)
    if required:
        return arr, [(RULE_BLANK, blank)]
    # In an optional column an empty cell means "none" (a CSV cannot say null otherwise).
    if blank.any():
        arr = _as_chunked(pc.if_else(pa.array(blank), pa.scalar(None, arr.type), arr))
    return arr, []


def _normalise_datetime(arr: pa.ChunkedArray, *, required: bool) -> _Normalised:
    """Dates and datetimes to naive UTC ``timestamp[ns]``; aware values are converted to UTC first."""
    t = arr.type
    out_of_range = np.zeros(len(arr), dtype=bool)
    unparseable = np.zeros(len(arr), dtype=bool)
    if pa.types.is_null(t):
        arr = pa.chunked_array([pa.nulls(len(arr), pa.timestamp("ns"))])
    elif pa.types.is_timestamp(t):
        # Arrow stores aware timestamps as UTC instants: dropping the zone leaves UTC wall time.
        arr, out_of_range = _timestamp_to_ns(pc.cast(arr, pa.timestamp(t.unit)))
    elif pa.types.is_date(t):
        arr, out_of_range = _timestamp_to_ns(pc.cast(arr, pa.timestamp("s")))
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        arr, unparseable, out_of_range = _parse_datetime_strings(pc.cast(arr, pa.string()))
    else:
        return f"unsupported column type {t} (expected a date, a datetime or ISO-8601 text)"
    findings = [(RULE_DATETIME, unparseable), (RULE_DATETIME_RANGE, out_of_range)]
    if required:
        null = _to_mask(arr.is_null()) & ~unparseable & ~out_of_range
        findings.insert(0, (RULE_NULL, null))
    return arr, findings


def _timestamp_to_ns(arr: pa.ChunkedArray) -> tuple[pa.ChunkedArray, np.ndarray]:
    """Naive timestamps of any unit to ``ns``; values that do not fit become null and are flagged."""
    try:
        return pc.cast(arr, pa.timestamp("ns")), np.zeros(len(arr), dtype=bool)
    except pa.ArrowInvalid:
        unit = arr.type.unit
        lo = pa.scalar(_NS_MIN.as_unit(unit).to_pydatetime(), pa.timestamp(unit))
        hi = pa.scalar(_NS_MAX.as_unit(unit).to_pydatetime(), pa.timestamp(unit))
        outside = pc.or_(pc.less(arr, lo), pc.greater(arr, hi))
        mask = _to_mask(outside)
        arr = pc.if_else(pa.array(mask), pa.scalar(None, arr.type), arr)
        return pc.cast(_as_chunked(arr), pa.timestamp("ns")), mask


def _parse_datetime_strings(arr: pa.ChunkedArray) -> tuple[pa.ChunkedArray, np.ndarray, np.ndarray]:
    none = np.zeros(len(arr), dtype=bool)
    blank = _nulls_or_blank(arr)
    # Fast paths: Arrow's ISO-8601 parser, for all-naive and for all-offset columns.
    if blank.any():
        arr = _as_chunked(pc.if_else(pa.array(blank), pa.scalar(None, pa.string()), arr))
    try:
        return pc.cast(arr, pa.timestamp("ns")), none, none
    except pa.ArrowInvalid:
        pass  # some value has a zone offset, is out of range, or is not a date: try the next parser
    try:
        return pc.cast(pc.cast(arr, pa.timestamp("ns", tz="UTC")), pa.timestamp("ns")), none, none
    except pa.ArrowInvalid:
        pass  # mixed naive and aware values, or bad ones: pandas parses each on its own
    text = arr.to_pandas()
    parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    parsed = parsed.dt.tz_localize(None).astype("datetime64[us]")
    unparseable = (parsed.isna() & text.notna()).to_numpy()
    out_of_range = ((parsed < _NS_MIN) | (parsed > _NS_MAX)).to_numpy()
    parsed = parsed.where(~out_of_range).astype("datetime64[ns]")
    return _as_chunked(pa.array(parsed, type=pa.timestamp("ns"))), unparseable, out_of_range


def _normalise_float(arr: pa.ChunkedArray, *, required: bool) -> _Normalised:
    """Numbers to ``float64``; text is parsed, and what does not parse is flagged, not nulled."""
    t = arr.type
    non_numeric = np.zeros(len(arr), dtype=bool)
    if pa.types.is_null(t):
        arr = pa.chunked_array([pa.nulls(len(arr), pa.float64())])
    elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        arr = pc.cast(arr, pa.float64())
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        arr, non_numeric = _parse_float_strings(pc.cast(arr, pa.string()))
    else:
        return f"unsupported column type {t} (expected numbers or numeric text)"
    null = _to_mask(arr.is_null()) & ~non_numeric
    non_finite = ~_to_mask(pc.is_finite(arr)) & ~null & ~non_numeric
    findings = [(RULE_NUMERIC, non_numeric), (RULE_FINITE, non_finite)]
    if required:
        findings.insert(0, (RULE_NULL, null))
    # Arrow nulls become NaN in float64; optional columns keep them as "unknown".
    return arr, findings


def _parse_float_strings(arr: pa.ChunkedArray) -> tuple[pa.ChunkedArray, np.ndarray]:
    blank = _nulls_or_blank(arr)
    if blank.any():
        arr = _as_chunked(pc.if_else(pa.array(blank), pa.scalar(None, pa.string()), arr))
    try:
        return pc.cast(arr, pa.float64()), np.zeros(len(arr), dtype=bool)
    except pa.ArrowInvalid:
        pass  # a value Arrow's strict parser refuses (padding, "1,5", words): pandas tells which
    text = arr.to_pandas()
    values = pd.to_numeric(text, errors="coerce").astype("float64")
    nan_text = text.str.strip().str.lower().isin(_NAN_STRINGS)
    non_numeric = (values.isna() & text.notna() & ~nan_text).to_numpy()
    values = values.where(~non_numeric)
    numbers = pa.array(values.to_numpy(), type=pa.float64(), mask=values.isna().to_numpy() & ~nan_text.to_numpy())
    return _as_chunked(numbers), non_numeric


# --------------------------------------------------------------------------------------------------
# Writing


def _write_quarantine(checked: _Checked, path: Path) -> None:
    raw = checked.raw
    rows = np.flatnonzero(checked.bad)
    reasons = pd.Series("", index=rows, dtype=object)
    for reason, mask in checked.masks:
        hit = mask[rows]
        reasons[hit] = np.where(reasons[hit] == "", reason, reasons[hit] + "; " + reason)
    meta = pd.DataFrame({"table": raw.name, "row": rows + 1, "reason": reasons.to_numpy()})
    if raw.is_csv:
        meta.insert(2, "line", rows + 2)
    values = raw.data.take(pa.array(rows)).to_pandas()
    pd.concat([meta, values], axis=1).to_csv(path, index=False)


def write_tables(
    tables: Tables,
    out_dir: str | os.PathLike,
    *,
    format: Literal["parquet", "csv", "csv.gz"] = "parquet",
) -> dict[str, Path]:
    """Write tables to a directory in the contract's layout, so that :func:`load_tables` reads them back.

    Parameters
    ----------
    tables : Tables
        The tables to write; ``None`` tables are skipped.
    out_dir : str or path
        Target directory, created if missing. Files of the same name are replaced.
    format : {"parquet", "csv", "csv.gz"}
        File format. Parquet keeps dtypes exactly; CSV writes timestamps as ISO-8601 text.

    Returns
    -------
    dict of str to Path
        The file written per table.

    Raises
    ------
    ValueError
        On an unknown format, or when the directory already holds the same table in another format
        (the directory would become ambiguous to read).
    """
    suffix = f".{format}"
    if suffix not in FILE_SUFFIXES:
        raise ValueError(f"format must be one of {[s[1:] for s in FILE_SUFFIXES]}, got {format!r}")
    out = Path(out_dir)
    frames = {name: getattr(tables, name) for name in TABLE_SPECS}
    frames = {name: df for name, df in frames.items() if df is not None}
    for name in frames:
        others = [out / f"{name}{s}" for s in FILE_SUFFIXES if s != suffix]
        clash = [p for p in others if p.exists()]
        if clash:
            raise ValueError(
                f"{out}: already holds {clash[0].name}; writing {name}{suffix} beside it would make "
                f"table {name} ambiguous"
            )
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, df in frames.items():
        path = out / f"{name}{suffix}"
        tmp = path.with_name(f".{path.name}.tmp")  # never leave a half-written table under the real name
        if format == "parquet":
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
        else:
            df.to_csv(tmp, index=False, compression="gzip" if format == "csv.gz" else None)
        tmp.replace(path)
        written[name] = path
    return written
