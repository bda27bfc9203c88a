"""Parquet files of the contract: written with page checksums, read back with every check the format allows.

A Parquet file describes itself in its footer: the row count of the file and of each row group and,
per column chunk, the null count and the minimum and maximum value. Pages may also carry a CRC-32 of
their bytes. A file damaged in the middle (a bad sector, a truncated copy patched over) decodes
without any error surprisingly often: random bytes in a dictionary page still decode, into
timestamps of the year 1678 or 2261 and amounts of 1e300. So a read here

- verifies the page checksums where the writer stored them (:func:`write_parquet` always does;
  pyarrow does not by default, parquet-mr since 1.12 does);
- names the column and row group that fail to decode;
- compares the rows read with the footer's row count;
- compares, per row group and column, the values read with the footer's statistics: every value
  within the recorded minimum..maximum (numbers, dates and times) and exactly the recorded number
  of nulls. Values written by the writer lie within them by construction; damaged values almost
  never do.

Each failure is a :class:`~features.contract.DataValidationError` naming the file, the column, the
row group and its rows. None of them is a row-level rule that quarantine could set aside: the damage
reaches further than the values found, so the only remedy is the file's source.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.contract import DataValidationError, Violation

__all__ = ["read_parquet_checked", "write_parquet"]

CORRUPT = "the file is corrupt; restore it from its source"
_EXAMPLES = 5


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a frame (without its index) as Parquet with a CRC-32 checksum on every page.

    Parameters
    ----------
    frame : pandas.DataFrame
    path : str or path
        The file to write; replaced if it exists.
    """
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, write_page_checksum=True)


def read_parquet_checked(path: Path) -> tuple[pa.Table, int]:
    """Read a Parquet file, checking it against its checksums and its footer.

    Parameters
    ----------
    path : Path

    Returns
    -------
    table : pyarrow.Table
    rows_expected : int
        The footer's row count (equal to ``table.num_rows``, or the read raises).

    Raises
    ------
    DataValidationError
        If the footer cannot be read, a page fails its checksum or cannot be decoded, or the rows,
        values or nulls read differ from what the footer records.
    """
    source = str(path)
    try:
        parquet = pq.ParquetFile(path, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as exc:
        raise DataValidationError([Violation(source, None, f"not a readable Parquet file ({exc})", 0)]) from None
    try:
        table = parquet.read()
    except (OSError, pa.ArrowException) as exc:
        raise DataValidationError(_unreadable(parquet, source, exc)) from None
    problems = _footer_mismatches(table, parquet.metadata, source)
    if problems:
        raise DataValidationError(problems)
    return table, parquet.metadata.num_rows


def _row_groups(metadata: pq.FileMetaData) -> list[tuple[int, int, int]]:
    """(row group, first row, number of rows) per row group; rows 0-based."""
    out, start = [], 0
    for g in range(metadata.num_row_groups):
        n = metadata.row_group(g).num_rows
        out.append((g, start, n))
        start += n
    return out


def _unreadable(parquet: pq.ParquetFile, source: str, exc: Exception) -> list[Violation]:
    """Which column chunks fail to read: each is read alone to tell."""
    found = []
    for name in parquet.schema_arrow.names:
        for g, start, n in _row_groups(parquet.metadata):
            try:
                parquet.read_row_group(g, columns=[name])
            except (OSError, pa.ArrowException) as chunk_exc:
                rule = f"unreadable ({chunk_exc}): {CORRUPT}"
                found.append(Violation(source, name, rule, n, [{"row group": g, "rows": f"{start + 1}-{start + n}"}]))
    # Reading all columns failed, but no column alone does: still an error, with Arrow's word for it.
    return found or [Violation(source, None, f"unreadable ({exc}): {CORRUPT}", parquet.metadata.num_rows)]


def _comparable(t: pa.DataType) -> bool:
    # Whose values are compared with the recorded minimum and maximum. Numbers, dates and times:
    # damaged values land outside the recorded range almost always, and the check costs well under
    # a millisecond per million values. Text is left out: its damage mostly fails to decode
    # (lengths, dictionary indices), a damaged index that decodes names another value within the
    # range anyway, and comparing strings costs 15 ms per million.
    return any(
        check(t)
        for check in (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal, pa.types.is_timestamp,
                      pa.types.is_date)
    )


def _footer_mismatches(table: pa.Table, metadata: pq.FileMetaData, source: str) -> list[Violation]:
    if table.num_rows != metadata.num_rows:
        rule = f"{table.num_rows:,} rows read where the footer records {metadata.num_rows:,}: {CORRUPT}"
        return [Violation(source, None, rule, abs(table.num_rows - metadata.num_rows))]
    # Leaf columns of the file by name; only top-level columns map one to one onto the table's.
    leaves = {metadata.schema.column(j).path: j for j in range(metadata.num_columns)}
    problems = []
    for name in table.column_names:
        j = leaves.get(name)
        column = table.column(name)
        if j is None:
            continue
        ordered = _comparable(column.type)
        outside, nulls = [], []
        for g, start, n in _row_groups(metadata):
            stats = metadata.row_group(g).column(j).statistics
            if stats is None:
                continue
            values = column.slice(start, n)
            if stats.has_null_count and values.null_count != stats.null_count:
                nulls.append((g, values.null_count, stats.null_count))
            if ordered and stats.has_min_max and values.null_count < n:
                outside += _outside(values, stats, start)
        if nulls:
            g, read, recorded = nulls[0]
            rule = (
                f"null count differs from the footer's (row group {g}: {read:,} read, {recorded:,} recorded): "
                f"{CORRUPT}"
            )
            problems.append(Violation(source, name, rule, sum(abs(r - c) for _, r, c in nulls)))
        if outside:
            rule = f"values outside the minimum..maximum the footer records for their row group: {CORRUPT}"
            shown = [{"row": row + 1, name: value} for row, value in outside[:_EXAMPLES]]
            problems.append(Violation(source, name, rule, len(outside), shown))
    return problems


def _outside(values: pa.ChunkedArray, stats, start: int) -> list[tuple[int, object]]:
    """(0-based row, value) of the values beyond the statistics' minimum and maximum."""
    lowest, highest = pc.min_max(values).values()
    # NaN is not ordered and Parquet statistics leave it out: comparisons with it are false.
    if not (lowest.as_py() < stats.min or highest.as_py() > stats.max):
        return []
    low = pa.scalar(stats.min, type=values.type)
    high = pa.scalar(stats.max, type=values.type)
    mask = pc.fill_null(pc.or_(pc.less(values, low), pc.greater(values, high)), False)
    rows = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    shown = [str(v) for v in values.take(pa.array(rows[:_EXAMPLES])).to_pylist()]
    return [(start + int(r), shown[k] if k < len(shown) else None) for k, r in enumerate(rows)]
