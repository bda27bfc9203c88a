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
the data rows in the source; for CSV, where every row is one line, ``line`` is the line in the file
(the header is line 1, so ``line = row + 1``) and a malformed line is a row-level violation of its
own. With ``on_invalid="quarantine"`` the rows that break a row-level rule are written to a
quarantine file with the reason instead, and left out of the returned tables; a missing required
column, a column of an unusable type and a corrupt Parquet file are always errors.

Integrity
---------
Rows read are checked against what the file states (a CSV file's lines, a Parquet footer's row count
and column statistics, Parquet page checksums, which :func:`write_tables` always writes); see
:mod:`features.io.csv_files` and :mod:`features.io.parquet_files`.
"""

from features.io.column_map import ColumnMap, parse_column_map
from features.io.load import LoadReport, LoadResult, Unmatched, load_tables, write_tables
from features.io.sources import FILE_SUFFIXES

__all__ = [
    "ColumnMap",
    "FILE_SUFFIXES",
    "LoadReport",
    "LoadResult",
    "Unmatched",
    "load_tables",
    "parse_column_map",
    "write_tables",
]
