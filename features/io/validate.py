"""Validation and normalisation of one table against the contract, and the quarantine file of its bad rows.

The one place where the rules of :mod:`features.contract` are checked for files and databases: per
column through the ``_normalise_*`` helpers (which parse and flag in one pass), then the rules across
rows. Nothing is raised here, so that all broken rules of all tables are reported together by
:func:`features.io.load_tables`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, TABLE_SPECS, TableSpec, Violation, canonical_ids
from features.io.csv_files import MalformedRow
from features.io.sources import RawTable

__all__ = ["Checked", "validate_table", "write_quarantine"]

N_EXAMPLES = 5
"""Offending rows shown per violation."""
_TEXT_SHOWN = 120  # characters of a malformed line quoted in an error message

# Strings that the pandas fallback turns into NaN but that are numbers in the IEEE sense: they break the
# "finite" rule, not the "numeric" one, whichever parser saw them.
_NAN_STRINGS = frozenset({"nan", "+nan", "-nan"})
# datetime64[ns] covers 1677-09-21 .. 2262-04-11; outside it a value cannot be represented at all.
_NS_MIN = pd.Timestamp.min.as_unit("ns")
_NS_MAX = pd.Timestamp.max.as_unit("ns")
# The plausible range of the contract, as half-open bounds on timestamp[ns] (the whole last day is in).
_PLAUSIBLE_FROM = pa.scalar(pd.Timestamp(EARLIEST_TIMESTAMP).as_unit("ns"), pa.timestamp("ns"))
_PLAUSIBLE_UNTIL = pa.scalar(
    pd.Timestamp(LATEST_TIMESTAMP.date()).as_unit("ns") + pd.Timedelta(days=1), pa.timestamp("ns")
)

RULE_NULL = "null"
RULE_BLANK = "null or blank"
RULE_DATETIME = "unparseable date/datetime (expected a date or ISO-8601 datetime)"
RULE_DATETIME_RANGE = (
    f"date/datetime outside the plausible range {EARLIEST_TIMESTAMP:%Y-%m-%d} .. {LATEST_TIMESTAMP:%Y-%m-%d}"
)
RULE_NUMERIC = "non-numeric"
RULE_FINITE = "non-finite (NaN or infinite)"
RULE_NEGATIVE = "negative"
RULE_DUPLICATE = "duplicate customer_id"


_Normalised = tuple[pa.ChunkedArray, list[tuple[str, np.ndarray]]] | str
"""A normalised column and its (rule, bad rows) findings; or, as text, why the column is unusable."""


@dataclass
class Checked:
    """A table after validation: normalised columns, the rows that break a rule, and why.

    ``violations`` are row-level: the malformed rows of a CSV file first, then the rules broken by
    rows of ``raw.data`` (whose masks are ``masks``, and ``bad`` their union).
    """

    raw: RawTable
    columns: dict[str, pa.ChunkedArray]  # normalised declared columns
    violations: list[Violation]  # row-level
    fatal: list[Violation]  # column-level: the table cannot be used at all
    masks: list[tuple[str, np.ndarray]]  # ("<column>: <rule>", bad rows) per row-level violation
    bad: np.ndarray  # any row-level rule broken

    @property
    def rows_set_aside(self) -> int:
        """Rows a quarantine sets aside: the malformed rows and the rows of ``raw.data`` in ``bad``."""
        return len(self.raw.malformed) + int(self.bad.sum())

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


def validate_table(spec: TableSpec, raw: RawTable, renames: Mapping[str, str]) -> Checked:
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
        if col.dtype == "id":
            result = _normalise_id(arr, required=col.required)
        elif col.dtype == "string":
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

    violations, masks = _malformed_violations(raw), []
    bad = np.zeros(n, dtype=bool)
    order = {c.name: k for k, c in enumerate(spec.columns)}
    for column, rule, mask in sorted(findings, key=lambda f: order[f[0]]):  # stable: rules keep their order
        if mask.any():
            violations.append(_violation(raw, column, rule, mask))
            masks.append((f"{column}: {rule}", mask))
            bad |= mask
    return Checked(raw, columns, violations, fatal, masks, bad)


def _violation(raw: RawTable, column: str, rule: str, mask: np.ndarray) -> Violation:
    rows = np.flatnonzero(mask)
    shown = rows[:N_EXAMPLES]
    context = [c for c in (column, "customer_id") if c in raw.data.column_names]
    values = {c: raw.data.column(c).take(pa.array(shown)).to_pylist() for c in dict.fromkeys(context)}
    examples = []
    for k, row in enumerate(raw.row_numbers(shown)):
        example: dict = {"row": int(row)}
        if raw.is_csv:
            example["line"] = int(row) + 1  # one row per line, after the header line
        example |= {c: _raw_value(v[k]) for c, v in values.items()}
        examples.append(example)
    return Violation(raw.source, column, rule, int(len(rows)), examples)


def _malformed_violations(raw: RawTable) -> list[Violation]:
    """One violation per kind of malformed CSV row, with the first lines as written."""
    by_rule: dict[str, list[MalformedRow]] = {}
    for m in raw.malformed:
        by_rule.setdefault(m.rule, []).append(m)
    return [
        Violation(raw.source, None, rule, len(rows), [_malformed_example(m) for m in rows[:N_EXAMPLES]])
        for rule, rows in by_rule.items()
    ]


def _malformed_example(m: MalformedRow) -> dict:
    text = m.text if len(m.text) <= _TEXT_SHOWN else m.text[:_TEXT_SHOWN] + "..."
    return {"row": m.row, "line": m.row + 1, **m.detail, "text": text}


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


def _normalise_id(arr: pa.ChunkedArray, *, required: bool) -> _Normalised:
    """Ids in the canonical text of :func:`features.contract.canonical_ids`; values that cannot be ids are flagged."""
    try:
        ids = canonical_ids(arr)
    except TypeError as exc:
        return f"unsupported column type: {exc}"
    broken = list(ids.broken.items())
    blank = _nulls_or_blank(ids.ids)
    for _, mask in broken:  # a value that cannot be an id is null now: one rule for it is enough
        blank &= ~mask
    if required:
        return ids.ids, [(RULE_BLANK, blank)] + broken
    # In an optional column an empty cell means "none" (a CSV cannot say null otherwise).
    arr = ids.ids
    if blank.any():
        arr = _as_chunked(pc.if_else(pa.array(blank), pa.scalar(None, arr.type), arr))
    return arr, broken


def _normalise_string(arr: pa.ChunkedArray, *, required: bool) -> _Normalised:
    """Text (event types, channels): any scalar type becomes text; numbers print as integers when whole."""
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
    arr, implausible = _outside_plausible_range(arr)
    out_of_range = out_of_range | implausible
    findings = [(RULE_DATETIME, unparseable), (RULE_DATETIME_RANGE, out_of_range)]
    if required:
        null = _to_mask(arr.is_null()) & ~unparseable & ~out_of_range
        findings.insert(0, (RULE_NULL, null))
    return arr, findings


def _outside_plausible_range(arr: pa.ChunkedArray) -> tuple[pa.ChunkedArray, np.ndarray]:
    """Timestamps outside the contract's plausible range become null and are flagged."""
    lowest, highest = pc.min_max(arr).values()
    if lowest.as_py() is None or (
        pc.greater_equal(lowest, _PLAUSIBLE_FROM).as_py() and pc.less(highest, _PLAUSIBLE_UNTIL).as_py()
    ):
        return arr, np.zeros(len(arr), dtype=bool)  # the usual case: one pass, no mask unpacked
    mask = _to_mask(pc.or_(pc.less(arr, _PLAUSIBLE_FROM), pc.greater_equal(arr, _PLAUSIBLE_UNTIL)))
    return _as_chunked(pc.if_else(pa.array(mask), pa.scalar(None, arr.type), arr)), mask


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


def write_quarantine(checked: Checked, path: Path) -> None:
    """Write the rows a quarantine sets aside, with the reason per row, in the order of the source.

    Columns: ``table``, ``row``, ``line`` (CSV only), ``reason``, then the row's values as read;
    a malformed CSV row has its line as written in ``text`` instead, as it has no fields.
    """
    raw = checked.raw
    positions = np.flatnonzero(checked.bad)
    reasons = pd.Series("", index=positions, dtype=object)
    for reason, mask in checked.masks:
        hit = mask[positions]
        reasons[hit] = np.where(reasons[hit] == "", reason, reasons[hit] + "; " + reason)
    rows = raw.row_numbers(positions)
    meta = pd.DataFrame({"table": raw.name, "row": rows, "reason": reasons.to_numpy()})
    if raw.is_csv:
        meta.insert(2, "line", rows + 1)
    frame = pd.concat([meta, raw.data.take(pa.array(positions)).to_pandas()], axis=1)
    if raw.malformed:
        malformed = pd.DataFrame(
            {
                "table": raw.name,
                "row": [m.row for m in raw.malformed],
                "line": [m.row + 1 for m in raw.malformed],
                "reason": [m.rule for m in raw.malformed],
                "text": [m.text for m in raw.malformed],
            }
        )
        frame = pd.concat([frame, malformed], ignore_index=True).sort_values("row", kind="stable")
    frame.to_csv(path, index=False)
