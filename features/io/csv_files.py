"""Reading one contract table from a CSV file: one row per line, checked against the file's own line count.

The CSV dialect of the contract
-------------------------------
Comma-separated, ``"`` quotes a value (so a value may hold commas, and ``""`` is a quote inside
it), the first line names the columns, and **every row is one line**: a line break inside a value
is not allowed. That rule is what makes a broken file detectable. An unbalanced quote starts a value
that only ends at the next quote character, often thousands of lines later, and from the parser's
side it is indistinguishable from a legitimate multi-line value; with rows and lines in one-to-one
correspondence, any row that swallows lines is a malformed row, named by its line.

How a file is read
------------------
Arrow's multithreaded reader parses the file at full speed, and the line ends of the file are
counted beside it (a vectorised count, about 20 ms per million lines). When the two agree, every
line became exactly one row and nothing was lost. They disagree, or Arrow raises a parse error, only
for a malformed file; then each line is judged on its own (fields counted for all lines at once,
lines holding quotes parsed by Python's :mod:`csv`) to find which lines are malformed and why, and
Arrow parses the remaining lines.

Why the count is needed: Arrow's multithreaded reader cuts the file into blocks (1 MB by default) at
newlines without looking at quotes (``ParseOptions.newlines_in_values=False``, the default). A quote
that is still open at the end of a block makes the parser stop there and hand back the rows before
it; the threaded reader never looks at how many bytes were parsed, so the rest of that block is
dropped without an error (the serial reader and the streaming reader carry the remainder over and
raise). ``newlines_in_values=True`` makes the block splitter follow quotes, so that the swallowed
lines surface as a column count error, but an unbalanced quote that meets another stray quote still
yields a well-formed, multi-line row, and a quote left open on the last line swallows its line end
silently; the line count catches every one of these cases.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

__all__ = ["CsvTable", "MalformedRow", "RULE_FIELD_COUNT", "RULE_OPEN_QUOTE", "RULE_UNREADABLE", "read_csv_table"]

RULE_FIELD_COUNT = "malformed CSV row: number of fields differs from the header's"
RULE_OPEN_QUOTE = (
    "malformed CSV row: a quoted value runs past the end of its line (an unbalanced quote, or a line "
    "break inside a value; the contract's CSV has one row per line)"
)
RULE_UNREADABLE = "malformed CSV row: unreadable"

_CHUNK = 1 << 20  # bytes per step of the line count: small enough that its comparisons read the CPU cache


@dataclass(frozen=True)
class MalformedRow:
    """A data line that cannot be split into the header's fields.

    ``row`` is the 1-based data row, the same numbering as every other row of the file (the line in
    the file is ``row + 1``); ``detail`` says more where there is more to say (``{"fields": 4, "expected": 3}``).
    """

    row: int
    rule: str
    text: str
    detail: dict


@dataclass(frozen=True)
class CsvTable:
    """A CSV file as read: its well-formed rows, their row numbers, and its malformed rows."""

    data: pa.Table
    rows: np.ndarray | None  # 1-based row number of each row of ``data``; None: 1..n in order
    malformed: tuple[MalformedRow, ...]
    data_lines: int  # lines after the header, blank lines at the end of the file excluded
    blank_lines_at_end: int  # not data: an editor's last newlines, a spreadsheet's empty ",," rows


def read_csv_table(path: Path, text_columns: set[str]) -> CsvTable:
    """Read a CSV (or gzip-compressed CSV) file, one row per line; malformed lines are set apart.

    Parameters
    ----------
    path : Path
        A ``.csv`` or ``.csv.gz`` file.
    text_columns : set of str
        Columns read as text as written (ids keep leading zeros, validation quotes bad values back);
        the other columns get Arrow's type inference.

    Returns
    -------
    CsvTable
        Every data line is either a row of ``data`` or a :class:`MalformedRow`; blank lines at the
        end of the file (empty, or only commas) are not data, and are counted apart.

    Raises
    ------
    ValueError
        If the file is empty, or Arrow cannot parse lines that Python's ``csv`` module reads as
        well-formed (the message quotes Arrow's error).
    """
    if path.name.endswith(".gz"):
        # A compressed file is decompressed once: the count and the parser read the same bytes.
        raw = _read_bytes(path)
        whole = np.frombuffer(raw, dtype=np.uint8)
        lines = _count_lines(whole[i : i + _CHUNK] for i in range(0, whole.size, _CHUNK))
        source: pa.BufferReader | Path = pa.BufferReader(pa.py_buffer(raw))
    else:
        lines = _count_lines(_file_chunks(path))
        source = path
    if lines == 0:
        raise ValueError(f"{path}: empty file, expected a header line naming the columns")
    try:
        data = _parse(source, text_columns)
    except pa.ArrowInvalid:
        data = None  # a malformed line: the line-by-line reading below names it
    if data is not None and data.num_rows == lines - 1 and not _last_row_holds_a_line_break(data):
        data, n_blank = _drop_trailing_blank_rows(data, data.num_rows)
        return CsvTable(data, None, (), lines - 1 - n_blank, n_blank)

    good, rows, malformed = _split_lines(path)
    try:
        data = _parse(pa.BufferReader(good), text_columns)
    except pa.ArrowInvalid as err:
        raise ValueError(f"{path}: malformed CSV: {err}") from err
    if data.num_rows != len(rows):
        raise ValueError(
            f"{path}: malformed CSV: {len(rows):,} well-formed lines parsed into {data.num_rows:,} rows"
        )
    # Only blank lines after the last malformed one are at the end of the file.
    after_malformed = len(rows) - np.searchsorted(rows, max(m.row for m in malformed) if malformed else 0)
    data, n_blank = _drop_trailing_blank_rows(data, int(after_malformed))
    return CsvTable(data, rows[: data.num_rows], tuple(malformed), len(rows) + len(malformed) - n_blank, n_blank)


def _parse(source, text_columns: set[str]) -> pa.Table:
    """Arrow's multithreaded reader; declared columns as text, the others inferred."""
    # Blank lines are kept as rows so that rows and lines stay one to one; see load_tables' notes.
    parse = pcsv.ParseOptions(ignore_empty_lines=False)
    try:
        return pcsv.read_csv(
            _rewound(source),
            parse_options=parse,
            convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in text_columns}),
        )
    except pa.ArrowInvalid as err:
        if str(err).startswith("CSV parse error") or "Empty CSV file" in str(err):
            raise
    # Older Arrow versions infer an undeclared column's type from the first block (about 1 MB) and
    # fail on a later value that does not fit ("12.5" after a block of integers): such a column is
    # then kept as text.
    with pcsv.open_csv(_rewound(source), parse_options=parse) as stream:
        names = stream.schema.names
    return pcsv.read_csv(
        _rewound(source),
        parse_options=parse,
        convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in names}),
    )


def _rewound(source):
    if isinstance(source, pa.BufferReader):
        source.seek(0)
    return source


def _file_chunks(path: Path) -> Iterator[np.ndarray]:
    """The bytes of a file in chunks, through one reused buffer (no copy of the whole file)."""
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    chunk = np.frombuffer(buffer, dtype=np.uint8)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            yield chunk[:n]


def _count_lines(chunks: Iterable[np.ndarray]) -> int:
    """Lines as Arrow's CSV parser ends them: at ``\\n``, ``\\r\\n`` or a lone ``\\r``; a last line
    without a line end counts too."""
    n_lf = n_cr = n_crlf = 0
    previous_cr = False
    last = None
    for chunk in chunks:
        if not chunk.size:
            continue
        n_lf += int(np.count_nonzero(chunk == 10))
        cr = int(np.count_nonzero(chunk == 13))
        if cr:  # only files with carriage returns pay for the pair count
            n_cr += cr
            n_crlf += int(np.count_nonzero((chunk[:-1] == 13) & (chunk[1:] == 10)))
        n_crlf += previous_cr and chunk[0] == 10
        previous_cr = chunk[-1] == 13
        last = int(chunk[-1])
    if last is None:
        return 0
    return n_lf + n_cr - n_crlf + (last not in (10, 13))


def _last_row_holds_a_line_break(data: pa.Table) -> bool:
    # A quote left open on the last line swallows that line's end without spanning another line,
    # so the counts agree: the value then ends with the line break.
    if data.num_rows == 0:
        return False
    last = data.slice(data.num_rows - 1, 1).to_pylist()[0]
    return any(isinstance(v, str) and ("\n" in v or "\r" in v) for v in last.values())


def _drop_trailing_blank_rows(data: pa.Table, at_most: int) -> tuple[pa.Table, int]:
    """``data`` without the blank rows at its end (at most ``at_most`` of them), and how many went."""
    # An editor's extra newline at the end of a file is not a data row. Only the tail is looked at,
    # row by row from the end, so this stops at the first real row.
    n, stop = data.num_rows, data.num_rows - at_most
    while n > stop and all(v is None or v == "" for v in data.slice(n - 1, 1).to_pylist()[0].values()):
        n -= 1
    return (data.slice(0, n) if n < data.num_rows else data), data.num_rows - n


def _read_bytes(path: Path) -> bytes:
    """The bytes of a file, decompressed if it is gzip (every member of a concatenated file)."""
    return gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()


def _split_lines(path: Path) -> tuple[bytes, np.ndarray, list[MalformedRow]]:
    """The header and the well-formed data lines (as bytes), their row numbers, and the malformed rows.

    Each line is judged on its own, as the contract's dialect has one row per line. A line without
    a quote character has one field more than it has commas, counted for all lines at once; a line
    with quotes is parsed by Python's ``csv``, which reads the same dialect as Arrow's defaults
    (``"`` quotes, ``""`` escapes a quote, a quote inside an unquoted value is text): if its quoted
    value is still open at the end of the line, the line is malformed, and the lines after it are
    rows of their own, not part of the value. This runs only for a malformed file.
    """
    data = _read_bytes(path)
    a = np.frombuffer(data, dtype=np.uint8)
    # Line ends as Arrow's parser sees them: \n, \r\n or a lone \r.
    lone_cr = a == 13
    lone_cr[:-1] &= a[1:] != 10
    stops = np.flatnonzero((a == 10) | lone_cr) + 1  # end of each line, its line end included
    if stops.size == 0 or stops[-1] != a.size:
        stops = np.append(stops, a.size)  # a last line without a line end
    starts = np.r_[0, stops[:-1]]
    ends_with_crlf = (stops >= 2) & (a[np.maximum(stops - 2, 0)] == 13) & (a[stops - 1] == 10)
    terminator = np.where(ends_with_crlf, 2, np.isin(a[stops - 1], (10, 13)).astype(np.int64))
    blank = stops - starts - terminator == 0

    def per_line(byte: int) -> np.ndarray:
        positions = np.flatnonzero(a == byte)
        return np.bincount(np.searchsorted(starts, positions, side="right") - 1, minlength=starts.size)

    quotes, commas = per_line(ord('"')), per_line(ord(","))
    n_fields = len(next(csv.reader([_line(data, starts[0], stops[0])])))
    # Line k > 0 is data row k.
    miscounted = (quotes == 0) & ~blank & (commas + 1 != n_fields)
    problems = {
        int(k): (RULE_FIELD_COUNT, {"fields": int(commas[k]) + 1, "expected": n_fields})
        for k in np.flatnonzero(miscounted[1:]) + 1
    }
    for k in np.flatnonzero(quotes[1:] > 0) + 1:
        problem = _quoted_line_problem(_line(data, starts[k], stops[k]), n_fields)
        if problem is not None:
            problems[int(k)] = problem
    malformed: list[MalformedRow] = []
    kept, start = [], 0
    for k in sorted(problems):
        rule, detail = problems[k]
        malformed.append(MalformedRow(k, rule, _line(data, starts[k], stops[k]).rstrip("\r\n"), detail))
        kept.append(data[start : starts[k]])
        start = stops[k]
    kept.append(data[start:])
    rows = np.delete(np.arange(1, starts.size, dtype=np.int64), [m.row - 1 for m in malformed])
    return b"".join(kept), rows, malformed


def _line(data: bytes, start: int, stop: int) -> str:
    # surrogateescape: bytes that are not UTF-8 pass through unchanged, for Arrow to judge.
    return data[start:stop].decode("utf-8", errors="surrogateescape")


def _quoted_line_problem(line: str, n_fields: int) -> tuple[str, dict] | None:
    """What is wrong with one line holding quotes, parsed on its own; None if it is a well-formed row."""
    try:
        record = next(csv.reader([line]))
    except csv.Error as exc:
        return RULE_UNREADABLE, {"error": str(exc)}
    # Fed with its line end, a line whose quoted value is still open swallows that line end.
    if any("\n" in v or "\r" in v for v in record):
        return RULE_OPEN_QUOTE, {}
    if record and len(record) != n_fields:
        return RULE_FIELD_COUNT, {"fields": len(record), "expected": n_fields}
    return None
