"""Loading and writing the contract tables: :func:`load_tables` (read, validate, normalise) and :func:`write_tables`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from features.contract import TABLE_SPECS, DataValidationError, Tables, Violation
from features.io.column_map import parse_column_map
from features.io.parquet_files import write_parquet
from features.io.sources import FILE_SUFFIXES, reader_for
from features.io.validate import Checked, validate_table, write_quarantine

__all__ = ["LoadReport", "LoadResult", "Unmatched", "load_tables", "write_tables"]

N_UNMATCHED_SHOWN = 5
"""Ids shown per unmatched count in a load report."""


@dataclass(frozen=True)
class Unmatched:
    """Rows whose id names no customer that the load knows of (see :attr:`LoadReport.unmatched`).

    Parameters
    ----------
    rows : int
        Rows with such an id.
    ids : int
        Distinct such ids.
    first : tuple of str
        The first few of those ids, in the order of the table.
    """

    rows: int
    ids: int
    first: tuple[str, ...]


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
        Data rows read per table, before anything was set aside (malformed CSV rows included).
    rows_expected : dict of str to int or None
        The data rows each file states it holds, which ``rows_read`` was checked against (a
        mismatch is an error): a CSV file's data lines (header and blank lines at the end excluded,
        one row per line), a Parquet file's row count in its footer. None for a database table,
        which states no count apart from the rows it returns.
    blank_lines_at_end : dict of str to int
        Per CSV table with some: the blank lines (empty, or only commas) after its last row, which
        are not data (an editor's last newlines, a spreadsheet's empty rows) and so not read.
    rows_quarantined : dict of str to int
        Rows set aside per table (only with ``on_invalid="quarantine"``; zero otherwise).
    quarantined : dict of str to dict of str to int
        Rows set aside per table and broken rule, keyed ``"<column>: <rule>"`` (the rule alone for
        a malformed CSV row, which has no columns). A row that breaks
        several rules is counted under each, so these can add up to more than ``rows_quarantined``.
    quarantine_files : dict of str to Path
        The quarantine file written per table (only tables with rows set aside).
    violations : tuple of Violation
        The row-level violations behind the quarantined rows, with their first examples.
    unmatched : dict of str to Unmatched
        Loaded rows whose id names no customer, kept in the tables but used by no feature:
        ``"events"`` and ``"customers"``: rows whose ``customer_id`` has no row in ``transactions``
        (prospects, customers who never bought, or ids spelled differently, e.g. ``"007"`` against
        ``"7"``); ``"customers.referred_by"``: referrers that are neither in ``customers`` nor in
        ``transactions``. Only keys with at least one such row.
    """

    source: str
    table_sources: dict[str, str]
    rows_read: dict[str, int]
    rows_expected: dict[str, int | None] = field(default_factory=dict)
    blank_lines_at_end: dict[str, int] = field(default_factory=dict)
    rows_quarantined: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, dict[str, int]] = field(default_factory=dict)
    quarantine_files: dict[str, Path] = field(default_factory=dict)
    violations: tuple[Violation, ...] = ()
    unmatched: dict[str, Unmatched] = field(default_factory=dict)

    @property
    def rows_loaded(self) -> dict[str, int]:
        """Rows per table in the returned tables."""
        return {t: n - self.rows_quarantined.get(t, 0) for t, n in self.rows_read.items()}

    def summary(self) -> list[str]:
        """One line per table, then one per quarantined rule and per unmatched count: what a command
        line prints after a load."""
        lines = []
        for table, n_read in self.rows_read.items():
            n_out = self.rows_quarantined.get(table, 0)
            line = f"{table}: {n_read:,} rows from {self.table_sources[table]}"
            expected = self.rows_expected.get(table)
            if expected is not None:
                stated = "data lines" if self.table_sources[table].endswith((".csv", ".csv.gz")) else "footer"
                blank = self.blank_lines_at_end.get(table, 0)
                line += f" ({stated}: {expected:,}" + (f", and {blank:,} blank at the end)" if blank else ")")
            if n_out:
                line += f", {n_out:,} quarantined to {self.quarantine_files[table]}"
            lines.append(line)
            lines.extend(f"  {rule}: {n:,} row(s)" for rule, n in self.quarantined.get(table, {}).items())
            for key, what in _UNMATCHED_LINES.items():
                u = self.unmatched.get(key)
                if key.split(".")[0] == table and u is not None:
                    shown = ", ".join(u.first) + (", ..." if u.ids > len(u.first) else "")
                    lines.append(f"  {what.format(rows=u.rows, ids=u.ids)}: {shown}")
        return lines

    def __str__(self) -> str:
        return "\n".join(self.summary())


_UNMATCHED_LINES = {
    "events": "{rows:,} row(s) of {ids:,} customer(s) with no transaction (kept, used by no feature)",
    "customers": "{rows:,} row(s) of {ids:,} customer(s) with no transaction (kept, used by no feature)",
    "customers.referred_by": "{rows:,} referred_by value(s) naming {ids:,} customer(s) found in no table",
}


@dataclass(frozen=True)
class LoadResult:
    """The validated tables and the report of the load that produced them."""

    tables: Tables
    report: LoadReport


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
        A table is ambiguous (several files), a database table is missing, a CSV file is empty or
        unparseable beyond its malformed rows, or the arguments are inconsistent.
    DataValidationError
        The data breaks the contract (all broken rules of the load at once), or a Parquet file is
        corrupt (a page fails its checksum or cannot be decoded, or the rows, values or nulls read
        differ from what its footer records: never quarantined, the file must be restored).

    Notes
    -----
    Columns are read through Arrow: Parquet and DuckDB natively, CSV with ``pyarrow.csv`` (declared
    columns as text, so ids keep their leading zeros), PostgreSQL (``postgresql://`` with or without
    a ``+driver``) streamed in record batches by ADBC's libpq driver (binary ``COPY``, all tables from
    one snapshot; ``numeric`` and other non-native types of id columns as the database's text,
    other ``numeric`` columns as float64), other databases with pandas' Arrow-backed ``read_sql``.
    Validation is vectorised; string timestamps and numbers go through pandas only when
    Arrow's strict parsers reject some value.

    Ids (``customer_id`` of every table, ``customers.referred_by``) of any type become the canonical
    text of :func:`features.contract.canonical_ids`; a float that is not a whole number, or too
    large to be exact, breaks a row-level rule. Timestamps outside 1900-01-01 .. 2200-12-31
    (:data:`~features.contract.EARLIEST_TIMESTAMP`, :data:`~features.contract.LATEST_TIMESTAMP`)
    break a row-level rule.

    A CSV file has one row per line (:mod:`features.io.csv_files`): a line that does not split into
    the header's fields, or whose quoted value runs past its end, is a malformed row, reported with
    its line (and quarantined with the line as written, in a ``text`` column); it never swallows
    the lines after it. The rows read are checked against the file's line count, and a Parquet
    file's against its footer (:mod:`features.io.parquet_files`). Blank lines inside a CSV file are
    kept as rows (and then break the ``customer_id`` rule, at their exact line) while blank lines
    at the end of the file are not data.

    Nothing is left out silently: rows set aside are in the quarantine files and counted in the
    report; events and customers rows of customers without any transaction, and referrers found in
    no table, are kept and counted in :attr:`LoadReport.unmatched`.
    """
    if on_invalid not in ("raise", "quarantine"):
        raise ValueError(f"on_invalid must be 'raise' or 'quarantine', got {on_invalid!r}")
    if on_invalid == "quarantine" and quarantine_dir is None:
        raise ValueError("on_invalid='quarantine' needs a quarantine_dir")
    renames = parse_column_map(column_map)
    reader = reader_for(source)

    checked: dict[str, Checked] = {}
    try:
        for name in tqdm(reader.table_names, desc="loading tables", unit="table", disable=not progress):
            raw = reader.read(name, renames.get(name, {}))
            checked[name] = validate_table(TABLE_SPECS[name], raw, renames.get(name, {}))
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
            if c.rows_set_aside:
                qdir.mkdir(parents=True, exist_ok=True)
                write_quarantine(c, path)
                quarantine_files[name] = path
            elif path.exists():
                path.unlink()

    frames = {name: c.clean_frame() for name, c in checked.items()}
    report = LoadReport(
        source=reader.display,
        table_sources={name: c.raw.source for name, c in checked.items()},
        rows_read={name: c.raw.rows_read for name, c in checked.items()},
        rows_expected={name: c.raw.rows_expected for name, c in checked.items()},
        blank_lines_at_end={name: c.raw.blank_lines_at_end for name, c in checked.items() if c.raw.blank_lines_at_end},
        rows_quarantined={name: c.rows_set_aside for name, c in checked.items()},
        quarantined={
            name: {(v.rule if v.column is None else f"{v.column}: {v.rule}"): v.n_rows for v in c.violations}
            for name, c in checked.items()
            if c.violations
        },
        quarantine_files=quarantine_files,
        violations=tuple(row_level),
        unmatched=_unmatched_ids(checked),
    )
    return LoadResult(Tables(**frames), report)


def _unmatched_ids(checked: dict[str, Checked]) -> dict[str, Unmatched]:
    """Events and customers rows of customers without a transaction, and referrers found nowhere."""

    def ids(table: str, column: str) -> pa.ChunkedArray | None:
        c = checked.get(table)
        if c is None or column not in c.columns:
            return None
        values = c.columns[column]
        return values.filter(pa.array(~c.bad)) if c.bad.any() else values

    if checked.keys() == {"transactions"}:
        return {}  # nothing to match: spare the hash of every id
    buyers = pc.unique(ids("transactions", "customer_id"))
    found = {}
    for table in ("events", "customers"):
        values = ids(table, "customer_id")
        if values is not None:
            found[table] = _unmatched(values, buyers)
    referrers = ids("customers", "referred_by")
    if referrers is not None and referrers.null_count < len(referrers):
        customers = ids("customers", "customer_id").cast(buyers.type)
        known = pc.unique(pa.chunked_array([buyers, *customers.chunks], type=buyers.type))
        found["customers.referred_by"] = _unmatched(referrers, known)
    return {key: u for key, u in found.items() if u is not None}


def _unmatched(values: pa.ChunkedArray, known: pa.Array) -> Unmatched | None:
    """The non-null ``values`` that are not in ``known``, counted; None when there are none."""
    missing = pc.and_not(pc.is_valid(values), pc.is_in(values, value_set=known.cast(values.type)))
    n = pc.sum(missing).as_py()
    if not n:
        return None
    distinct = pc.unique(values.filter(missing))
    return Unmatched(n, len(distinct), tuple(distinct.slice(0, N_UNMATCHED_SHOWN).to_pylist()))


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
        File format. Parquet keeps dtypes exactly, with a checksum on every page that
        :func:`load_tables` verifies; CSV writes timestamps as ISO-8601 text.

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
            write_parquet(df, tmp)
        else:
            df.to_csv(tmp, index=False, compression="gzip" if format == "csv.gz" else None)
        tmp.replace(path)
        written[name] = path
    return written
