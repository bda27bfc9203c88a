"""The data contract: input tables, their columns and normalised dtypes, and the errors raised at the boundary.

Everything that reads customer data (files, SQL, HTTP) produces a :class:`Tables` whose frames follow
the dtypes declared here, so the feature code downstream can trust its input.

Normalised dtypes
-----------------
- ``customer_id`` / ``referred_by``: pandas string dtype (``"str"``) holding the canonical id of
  :func:`canonical_ids`, never numeric: ``"00001"`` stays ``"00001"``, the integer 7 and the float
  7.0 both become ``"7"``. Every table, every source and the HTTP API agree on it, so that joins
  between tables match.
- ``timestamp`` / ``acquired_at``: ``datetime64[ns]`` without a time zone, meaning UTC. A date becomes
  midnight UTC; an aware datetime is converted to UTC and its zone dropped. Plausible values lie
  between :data:`EARLIEST_TIMESTAMP` and :data:`LATEST_TIMESTAMP`.
- ``amount`` / ``acquisition_cost``: ``float64``, finite.
- ``event_type``, ``channel``: pandas string dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

#: Largest absolute amount (and acquisition cost) a value may have, currency units: beyond it a value
#: is a unit or parsing error, not a purchase. The HTTP boundary enforces it.
AMOUNT_LIMIT = 1e9
#: Earliest plausible timestamp of a purchase, event or acquisition. The HTTP boundary enforces it.
EARLIEST_TIMESTAMP = datetime(1900, 1, 1)
#: Latest plausible timestamp: the end of 2200-12-31, the last ``as_of`` day the HTTP API accepts, so
#: that a history valid for one boundary is valid for the other. A fixed date rather than "now plus
#: a year": whether a file loads must not depend on the day it is loaded (a backtest rerun years
#: later, a test) and future-dated rows (scheduled renewals) are legitimate. Corrupt files are
#: caught by their own checks (Parquet checksums and statistics, CSV line counts), not by this bound.
LATEST_TIMESTAMP = datetime(2200, 12, 31, 23, 59, 59, 999999)
#: Longest customer id, event type and category (channel, covariate level) text, characters.
MAX_ID_LENGTH = 128


@dataclass(frozen=True)
class Column:
    """One declared input column.

    Parameters
    ----------
    name : str
        Column name after mapping.
    dtype : {"id", "string", "datetime", "float"}
        Normalised type, see the module docstring; ``"id"`` is text made canonical by
        :func:`canonical_ids`.
    required : bool
        Whether a table without it is rejected.
    description : str
        What the column means, with units.
    """

    name: str
    dtype: str
    required: bool
    description: str


@dataclass(frozen=True)
class TableSpec:
    """Declared columns of one input table; columns not declared are kept and ignored."""

    name: str
    columns: tuple[Column, ...]
    required: bool = True

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def column(self, name: str) -> Column:
        """The declared column ``name``; KeyError when the table does not declare it."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name} declares no column {name!r}")


TRANSACTIONS = TableSpec(
    "transactions",
    (
        Column("customer_id", "id", True, "customer identifier, non-empty"),
        Column("timestamp", "datetime", True, "purchase time; a naive value is UTC"),
        Column("amount", "float", True, "purchase value in currency units; 0 allowed; negative = refund"),
    ),
)
EVENTS = TableSpec(
    "events",
    (
        Column("customer_id", "id", True, "customer identifier, non-empty"),
        Column("timestamp", "datetime", True, "event time; a naive value is UTC"),
        Column("event_type", "string", True, "session, email_open, email_click, support_ticket, cancel, ..."),
    ),
    required=False,
)
CUSTOMERS = TableSpec(
    "customers",
    (
        Column("customer_id", "id", True, "customer identifier, unique in this table"),
        Column("acquired_at", "datetime", False, "acquisition date; default: first transaction"),
        Column("channel", "string", False, "acquisition channel"),
        Column("acquisition_cost", "float", False, "CAC paid for this customer, >= 0"),
        Column("referred_by", "id", False, "customer_id of the referrer"),
    ),
    required=False,
)
TABLE_SPECS: dict[str, TableSpec] = {s.name: s for s in (TRANSACTIONS, EVENTS, CUSTOMERS)}


@dataclass(frozen=True)
class Tables:
    """Validated input tables with normalised dtypes (see the module docstring).

    ``events`` and ``customers`` are ``None`` when the source has no such table.
    """

    transactions: pd.DataFrame
    events: pd.DataFrame | None = None
    customers: pd.DataFrame | None = None


@dataclass(frozen=True)
class Violation:
    """One broken rule in one column of one table (``column`` is None for a rule about whole rows or
    the whole file, such as a malformed CSV row or a corrupt Parquet page)."""

    source: str  # file path, or "table <name> at <url>"
    column: str | None
    rule: str
    n_rows: int
    examples: list[dict] = field(default_factory=list)  # first few offending rows, with their row number

    def __str__(self) -> str:
        shown = "; ".join(str(e) for e in self.examples)
        where = f"column '{self.column}': " if self.column is not None else ""
        return (
            f"{self.source}: {where}{self.rule}: {self.n_rows} row(s) break it"
            + (f", first: {shown}" if shown else "")
        )


class DataValidationError(ValueError):
    """Input data breaks the contract. The message names file, column, rule, count and first rows."""

    def __init__(self, violations: list[Violation]):
        self.violations = list(violations)
        super().__init__("\n".join(str(v) for v in self.violations))


# --- customer ids ---------------------------------------------------------------------------------

RULE_ID_NOT_WHOLE = "float id that is not a whole number"
RULE_ID_INEXACT = "float id too large to be exact (|id| >= 2**53, 2**24 for float32): its digits may be lost"
RULE_ID_TYPE = "id that is neither text nor a number"

# Whole numbers up to 2**digits are exact in a float of that many significand bits; beyond, two
# neighbouring ids can be stored as the same float (2**53 + 1 reads back as 2**53).
_FLOAT_DIGITS = {16: 11, 32: 24, 64: 53}
# "12.50" -> "12.5", "12.00" -> "12": what Arrow prints for a decimal, without its trailing zeros.
_DECIMAL_ZEROS = r"^(-?\d+)(?:\.0*|(\.\d*?[1-9])0*)$"


@dataclass(frozen=True)
class CanonicalIds:
    """Result of :func:`canonical_ids`.

    Attributes
    ----------
    ids : pyarrow.ChunkedArray
        Canonical ids as Arrow ``string`` (``large_string`` when given so); null where the value is
        missing or breaks a rule.
    broken : dict of str to numpy.ndarray
        Per rule that some value breaks (:data:`RULE_ID_NOT_WHOLE`, :data:`RULE_ID_INEXACT`,
        :data:`RULE_ID_TYPE`), a boolean mask of those values. Empty when every value is an id.
    """

    ids: pa.ChunkedArray
    broken: dict[str, np.ndarray]


def canonical_ids(values) -> CanonicalIds:
    """The canonical text of customer ids of any type, the one form every table and source agrees on.

    - Text is kept exactly as written: leading zeros (``"00001"``), case, inner and surrounding
      spaces. An id is an opaque key, and the HTTP API keeps ids as sent, so trimming here would make
      ``" 7"`` match in a file and not in a request. A blank (empty or whitespace-only) id is not
      stripped either; the loader rejects it by its "null or blank" rule.
    - Integers print in decimal without sign or separator for positives: ``7`` -> ``"7"``.
    - Whole floats print as the integer: ``100000000001.0`` -> ``"100000000001"``, never
      ``"1.00000000001e+11"``. A float that is not whole (``1.5``, ``inf``) breaks
      :data:`RULE_ID_NOT_WHOLE`; a float whose magnitude is at least 2**53 (2**24 for float32,
      2**11 for float16) breaks :data:`RULE_ID_INEXACT`, since beyond it consecutive integers share
      one float, so the value read may not be the id written. NaN is a missing id (how pandas stores
      a missing integer).
    - Decimals print exactly, without exponent or trailing fractional zeros: ``Decimal("12.50")``
      -> ``"12.5"``, ``Decimal("100.00")`` -> ``"100"``.
    - Dictionary (categorical) values are decoded first; binary is read as UTF-8 text.
    - Python objects of mixed types (a pandas ``object`` column, JSON values): each value by the
      rules above; ``True``/``False`` and other objects break :data:`RULE_ID_TYPE`.

    Parameters
    ----------
    values : pyarrow.Array, pyarrow.ChunkedArray, pandas.Series, pandas.Index, numpy.ndarray or list
        One id column.

    Returns
    -------
    CanonicalIds
        The ids, and the values that cannot be ids per broken rule.

    Raises
    ------
    TypeError
        If the column's type cannot hold ids at all (booleans, dates, nested types), or binary
        values are not UTF-8.
    """
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])
        return _arrow_ids(arr)
    if isinstance(values, (pd.Series, pd.Index)):
        values = values.array
    if isinstance(values, list) or pd.api.types.is_object_dtype(getattr(values, "dtype", None)):
        return _python_ids(values)
    return _arrow_ids(pa.chunked_array([pa.array(values, from_pandas=True)]))


def _arrow_ids(arr: pa.ChunkedArray) -> CanonicalIds:
    t = arr.type
    if pa.types.is_dictionary(t):
        return _arrow_ids(pc.cast(arr, t.value_type))
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return CanonicalIds(arr, {})
    if pa.types.is_null(t):
        return CanonicalIds(pa.chunked_array([pa.nulls(len(arr), pa.string())]), {})
    if pa.types.is_integer(t):
        return CanonicalIds(pc.cast(arr, pa.string()), {})
    if pa.types.is_floating(t):
        return _float_ids(arr, _FLOAT_DIGITS[t.bit_width])
    if pa.types.is_decimal(t):
        if t.scale < 0:  # Arrow prints those with an exponent ("1.2E+3"); as scale 0 they are plain
            whole = pa.decimal128 if t.precision - t.scale <= 38 else pa.decimal256
            arr = pc.cast(arr, whole(min(t.precision - t.scale, 76), 0))
        text = pc.cast(arr, pa.string())
        return CanonicalIds(pc.replace_substring_regex(text, _DECIMAL_ZEROS, r"\1\2"), {})
    if pa.types.is_string_view(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        try:
            return CanonicalIds(pc.cast(arr, pa.string()), {})
        except pa.ArrowInvalid as exc:
            raise TypeError(f"column type {t}: ids are not UTF-8 text ({exc})") from None
    raise TypeError(f"column type {t} cannot hold ids (expected text, integers, whole floats or decimals)")


def _float_ids(arr: pa.ChunkedArray, digits: int) -> CanonicalIds:
    values = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    missing = np.isnan(values)
    whole = np.isfinite(values) & (np.floor(values) == values)
    inexact = whole & (np.abs(values) >= 2.0**digits)
    ok = whole & ~inexact
    ints = pa.array(np.where(ok, values, 0).astype(np.int64), mask=~ok)
    broken = {RULE_ID_NOT_WHOLE: ~whole & ~missing, RULE_ID_INEXACT: inexact}
    return CanonicalIds(pa.chunked_array([pc.cast(ints, pa.string())]), {r: m for r, m in broken.items() if m.any()})


def _python_ids(values) -> CanonicalIds:
    pairs = [_python_id(v) for v in values]
    broken = {}
    for rule in (RULE_ID_NOT_WHOLE, RULE_ID_INEXACT, RULE_ID_TYPE):
        mask = np.fromiter((r == rule for _, r in pairs), dtype=bool, count=len(pairs))
        if mask.any():
            broken[rule] = mask
    return CanonicalIds(pa.chunked_array([pa.array([text for text, _ in pairs], pa.string())]), broken)


def _python_id(value) -> tuple[str | None, str | None]:
    """One Python value as (canonical text or None, broken rule or None)."""
    if isinstance(value, str):
        return value, None
    if value is None or value is pd.NA or value is pd.NaT:
        return None, None
    if isinstance(value, (bool, np.bool_)):  # before int: a bool is an int in Python
        return None, RULE_ID_TYPE
    if isinstance(value, (int, np.integer)):
        return str(int(value)), None
    if isinstance(value, (float, np.floating)):
        digits = _FLOAT_DIGITS[np.dtype(type(value)).itemsize * 8] if isinstance(value, np.floating) else 53
        if np.isnan(value):
            return None, None
        if not (np.isfinite(value) and float(value).is_integer()):
            return None, RULE_ID_NOT_WHOLE
        if abs(value) >= 2.0**digits:
            return None, RULE_ID_INEXACT
        return str(int(value)), None
    if isinstance(value, Decimal):
        if value.is_nan():
            return None, None
        if value.is_infinite():
            return None, RULE_ID_NOT_WHOLE
        text = format(value.normalize(), "f")
        return ("0" if text == "-0" else text), None
    return None, RULE_ID_TYPE

