"""The data contract: input tables, their columns and normalised dtypes, and the errors raised at the boundary.

Everything that reads customer data (files, SQL, HTTP) produces a :class:`Tables` whose frames follow
the dtypes declared here, so the feature code downstream can trust its input.

Normalised dtypes
-----------------
- ``customer_id``: pandas string dtype (``"str"``), never numeric: ``"00001"`` stays ``"00001"``.
- ``timestamp`` / ``acquired_at``: ``datetime64[ns]`` without a time zone, meaning UTC. A date becomes
  midnight UTC; an aware datetime is converted to UTC and its zone dropped.
- ``amount`` / ``acquisition_cost``: ``float64``, finite.
- ``event_type``, ``channel``, ``referred_by``: pandas string dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

#: Largest absolute amount (and acquisition cost) a value may have, currency units: beyond it a value
#: is a unit or parsing error, not a purchase. The HTTP boundary enforces it.
AMOUNT_LIMIT = 1e9
#: Earliest plausible timestamp of a purchase, event or acquisition. The HTTP boundary enforces it.
EARLIEST_TIMESTAMP = datetime(1900, 1, 1)
#: Longest customer id, event type and category (channel, covariate level) text, characters.
MAX_ID_LENGTH = 128


@dataclass(frozen=True)
class Column:
    """One declared input column.

    Parameters
    ----------
    name : str
        Column name after mapping.
    dtype : {"string", "datetime", "float"}
        Normalised type, see the module docstring.
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
        Column("customer_id", "string", True, "customer identifier, non-empty"),
        Column("timestamp", "datetime", True, "purchase time; a naive value is UTC"),
        Column("amount", "float", True, "purchase value in currency units; 0 allowed; negative = refund"),
    ),
)
EVENTS = TableSpec(
    "events",
    (
        Column("customer_id", "string", True, "customer identifier, non-empty"),
        Column("timestamp", "datetime", True, "event time; a naive value is UTC"),
        Column("event_type", "string", True, "session, email_open, email_click, support_ticket, cancel, ..."),
    ),
    required=False,
)
CUSTOMERS = TableSpec(
    "customers",
    (
        Column("customer_id", "string", True, "customer identifier, unique in this table"),
        Column("acquired_at", "datetime", False, "acquisition date; default: first transaction"),
        Column("channel", "string", False, "acquisition channel"),
        Column("acquisition_cost", "float", False, "CAC paid for this customer, >= 0"),
        Column("referred_by", "string", False, "customer_id of the referrer"),
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
    """One broken rule in one column of one table."""

    source: str  # file path, or "table <name> at <url>"
    column: str
    rule: str
    n_rows: int
    examples: list[dict] = field(default_factory=list)  # first few offending rows, with their row number

    def __str__(self) -> str:
        shown = "; ".join(str(e) for e in self.examples)
        return (
            f"{self.source}: column '{self.column}': {self.rule}: {self.n_rows} row(s) break it"
            + (f", first: {shown}" if shown else "")
        )


class DataValidationError(ValueError):
    """Input data breaks the contract. The message names file, column, rule, count and first rows."""

    def __init__(self, violations: list[Violation]):
        self.violations = list(violations)
        super().__init__("\n".join(str(v) for v in self.violations))
