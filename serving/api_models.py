"""Request and response models of the HTTP API, with the limits that protect the service.

Validation happens here, at the boundary, so that the scoring code can trust its input. Every rule is
a pydantic constraint or a validator that raises :class:`pydantic.ValidationError` with the path of
the offending field, which BentoML answers with HTTP 400 and the list of errors (``loc``, ``type``,
``msg``).

Limits
------
- at most :data:`MAX_CUSTOMERS` customers per request, with unique ``customer_id``;
- per customer at most :data:`MAX_ROWS_PER_CUSTOMER` transactions and at most
  :data:`MAX_ROWS_PER_CUSTOMER` events; a customer without a purchase (amount >= 0) is a prospect,
  scored only when the service has a prospect model (:meth:`ClvRequest.check_prospects`);
- at most :data:`MAX_ROWS_PER_REQUEST` history rows (transactions + events) in the whole request;
- at most :data:`MAX_DRIVERS` drivers per model and customer;
- at most :data:`MAX_CHANNELS` unique channels per acquisition-budget request;
- amounts finite, ``|amount| <= 1e9``; acquisition costs finite, ``0 <= cost <= 1e9``;
- timestamps between :data:`MIN_TIMESTAMP` and the end of the ``as_of`` day; ``as_of`` between
  :data:`MIN_AS_OF` and :data:`MAX_AS_OF`.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from features.contract import AMOUNT_LIMIT, CUSTOMERS, EARLIEST_TIMESTAMP, EVENTS, MAX_ID_LENGTH, TRANSACTIONS, Tables
from serving.scores import SCORE_SCHEMA, SUBSCRIPTION_SCHEMA

MAX_CUSTOMERS = 1000
MAX_ROWS_PER_CUSTOMER = 10_000
MAX_ROWS_PER_REQUEST = 200_000
MAX_ABS_AMOUNT = AMOUNT_LIMIT
MAX_CHANNELS = 100
MAX_DRIVERS = 10
MIN_TIMESTAMP = EARLIEST_TIMESTAMP
MIN_AS_OF = date(1900, 1, 2)
MAX_AS_OF = date(2200, 12, 31)

_SCORE_DESCRIPTIONS = {c.name: c.description for c in SCORE_SCHEMA}
_SUBSCRIPTION_DESCRIPTIONS = {c.name: c.description for c in SUBSCRIPTION_SCHEMA}


def _naive_utc(value: datetime) -> datetime:
    """Convert an aware datetime to naive UTC (the contract's normal form); a naive one is UTC already."""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    if value < MIN_TIMESTAMP:
        raise PydanticCustomError(
            "timestamp_too_early",
            "timestamp must not be before {min}",
            {"min": MIN_TIMESTAMP.isoformat()},
        )
    return value


Timestamp = Annotated[
    datetime,
    AfterValidator(_naive_utc),
    Field(description="ISO-8601 date or datetime; a naive value is UTC. Not after the as_of day."),
]
Amount = Annotated[
    float,
    Field(
        allow_inf_nan=False,
        ge=-MAX_ABS_AMOUNT,
        le=MAX_ABS_AMOUNT,
        description=TRANSACTIONS.column("amount").description,
    ),
]
def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank_string", "must contain a non-space character")
    return value


Name = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_LENGTH, description=TRANSACTIONS.column("customer_id").description),
    AfterValidator(_not_blank),
]
Covariate = Annotated[float, Field(allow_inf_nan=False)] | Annotated[str, Field(max_length=256)] | None


class Transaction(BaseModel):
    """One purchase (or refund, if ``amount`` is negative)."""

    model_config = ConfigDict(extra="forbid")

    timestamp: Timestamp
    amount: Amount


class Event(BaseModel):
    """One engagement event (session, email_open, email_click, support_ticket, cancel, ...)."""

    model_config = ConfigDict(extra="forbid")

    timestamp: Timestamp
    event_type: Annotated[
        str, Field(min_length=1, max_length=64, description=EVENTS.column("event_type").description), AfterValidator(_not_blank)
    ]


class Attributes(BaseModel):
    """The customer's row of the ``customers`` table; other keys are covariates (string or number)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Covariate] = Field(init=False)

    acquired_at: Timestamp | None = Field(None, description=CUSTOMERS.column("acquired_at").description)
    channel: Annotated[str, Field(max_length=MAX_ID_LENGTH)] | None = Field(
        None, description=CUSTOMERS.column("channel").description
    )
    acquisition_cost: Annotated[float, Field(allow_inf_nan=False, ge=0, le=MAX_ABS_AMOUNT)] | None = Field(
        None, description=CUSTOMERS.column("acquisition_cost").description
    )
    referred_by: Annotated[str, Field(max_length=MAX_ID_LENGTH)] | None = Field(
        None, description=CUSTOMERS.column("referred_by").description
    )


class Customer(BaseModel):
    """One customer's raw history up to ``as_of``."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Name
    transactions: list[Transaction] = Field(max_length=MAX_ROWS_PER_CUSTOMER)  # required; [] for a prospect
    events: list[Event] = Field(default_factory=list, max_length=MAX_ROWS_PER_CUSTOMER)
    attributes: Attributes = Field(default_factory=Attributes)


class ClvRequest(BaseModel):
    """Body of ``POST /clv``: customers with their history, scored as of the end of ``as_of``."""

    model_config = ConfigDict(extra="forbid")

    customers: list[Customer] = Field(min_length=1, max_length=MAX_CUSTOMERS)
    as_of: date = Field(ge=MIN_AS_OF, le=MAX_AS_OF, description="Cutoff date, YYYY-MM-DD.")
    drivers: int = Field(
        3,
        ge=0,
        le=MAX_DRIVERS,
        description="Top drivers returned per model and customer; 0 skips the explanations "
        "(SHAP values over every tree, about a third of the time of a large batch).",
    )

    @model_validator(mode="after")
    def _check_history(self) -> ClvRequest:
        # Rules that involve several fields, collected so that one answer lists the broken rows
        # (the first 20), each with its own path.
        errors: list[InitErrorDetails] = []
        end = datetime.combine(self.as_of + timedelta(days=1), datetime.min.time())
        seen: dict[str, int] = {}
        n_rows = 0
        for i, customer in enumerate(self.customers):
            if customer.customer_id in seen:
                errors.append(
                    _error(
                        ("customers", i, "customer_id"),
                        "duplicate_customer_id",
                        "customer_id {customer_id} also appears at customers.{first}; ids must be unique",
                        {"customer_id": customer.customer_id, "first": seen[customer.customer_id]},
                    )
                )
            else:
                seen[customer.customer_id] = i
            n_rows += len(customer.transactions) + len(customer.events)
            for table in ("transactions", "events"):
                for j, row in enumerate(getattr(customer, table)):
                    if row.timestamp >= end:
                        errors.append(
                            _error(
                                ("customers", i, table, j, "timestamp"),
                                "timestamp_after_as_of",
                                "timestamp {timestamp} is after the as_of day {as_of}",
                                {"timestamp": row.timestamp.isoformat(), "as_of": self.as_of.isoformat()},
                            )
                        )
            acquired_at = customer.attributes.acquired_at
            if acquired_at is not None and acquired_at >= end:
                errors.append(
                    _error(
                        ("customers", i, "attributes", "acquired_at"),
                        "acquired_after_as_of",
                        "acquired_at {acquired_at} is after the as_of day {as_of}",
                        {"acquired_at": acquired_at.isoformat(), "as_of": self.as_of.isoformat()},
                    )
                )
            if len(errors) >= 20:
                break
        if n_rows > MAX_ROWS_PER_REQUEST:
            errors.append(
                _error(
                    ("customers",),
                    "too_many_history_rows",
                    "the request holds {n} transaction and event rows; at most {max} are allowed",
                    {"n": n_rows, "max": MAX_ROWS_PER_REQUEST},
                )
            )
        if errors:
            raise ValidationError.from_exception_data("ClvRequest", errors)
        return self

    def check_covariates(self, numeric: tuple[str, ...] | set[str]) -> None:
        """Raise :class:`~pydantic.ValidationError` if a numeric covariate of the model got a string.

        Which covariates are numeric depends on the champion's feature settings, so this runs in
        the service rather than at parse time.
        """
        errors: list[InitErrorDetails] = []
        for i, customer in enumerate(self.customers):
            for name, value in (customer.attributes.model_extra or {}).items():
                if name in numeric and isinstance(value, str):
                    errors.append(
                        _error(
                            ("customers", i, "attributes", name),
                            "numeric_covariate",
                            "covariate {name} is numeric in the served model; got a string",
                            {"name": name},
                        )
                    )
        if errors:
            raise ValidationError.from_exception_data("ClvRequest", errors[:20])

    def check_prospects(self, scored: bool) -> None:
        """Raise :class:`~pydantic.ValidationError` for customers without a purchase unless ``scored``.

        ``scored`` says whether the service has a prospect model (:mod:`serving.prospects`, from the
        scoring run of the scores it was started with).
        """
        if scored:
            return
        errors = [
            _error(
                ("customers", i, "transactions"),
                "no_purchase",
                "no purchase (amount >= 0): a prospect is scored with the prospect model of the batch scores, "
                "and this service has none: started without --scores, or with scores of a book that had no "
                "customer without a purchase to fit one on",
                {},
            )
            for i, customer in enumerate(self.customers)
            if not any(t.amount >= 0 for t in customer.transactions)
        ]
        if errors:
            raise ValidationError.from_exception_data("ClvRequest", errors[:20])

    def to_tables(self) -> Tables:
        """The request as contract :class:`~features.contract.Tables` with normalised dtypes.

        Returns
        -------
        Tables
            ``transactions`` and ``events`` (possibly empty) and ``customers`` with one row per
            customer: ``acquired_at``, ``channel``, ``acquisition_cost``, ``referred_by`` and every
            covariate key that appears in some customer's attributes (missing values are null).
        """
        ids = [c.customer_id for c in self.customers]
        transactions = pd.DataFrame(
            {
                "customer_id": _strings([c.customer_id for c in self.customers for _ in c.transactions]),
                "timestamp": _timestamps([t.timestamp for c in self.customers for t in c.transactions]),
                "amount": np.array([t.amount for c in self.customers for t in c.transactions], dtype=np.float64),
            }
        )
        events = pd.DataFrame(
            {
                "customer_id": _strings([c.customer_id for c in self.customers for _ in c.events]),
                "timestamp": _timestamps([e.timestamp for c in self.customers for e in c.events]),
                "event_type": _strings([e.event_type for c in self.customers for e in c.events]),
            }
        )
        attributes = [c.attributes for c in self.customers]
        columns: dict[str, Any] = {
            "customer_id": _strings(ids),
            "acquired_at": _timestamps([a.acquired_at for a in attributes]),
            "channel": _strings([a.channel for a in attributes]),
            "acquisition_cost": np.array([a.acquisition_cost for a in attributes], dtype=np.float64),
            "referred_by": _strings([a.referred_by for a in attributes]),
        }
        covariates = dict.fromkeys(name for a in attributes for name in (a.model_extra or {}))
        for name in covariates:
            values = [(a.model_extra or {}).get(name) for a in attributes]
            numeric = all(v is None or isinstance(v, float) for v in values)
            columns[name] = np.array(values, dtype=np.float64) if numeric else pd.array(values, dtype=object)
        return Tables(transactions=transactions, events=events, customers=pd.DataFrame(columns))


def _strings(values: list[str | None]) -> pd.api.extensions.ExtensionArray:
    return pd.array(values, dtype="str")


def _timestamps(values: list[datetime | None]) -> np.ndarray:
    """Naive UTC datetimes (``None`` = NaT) as ``datetime64[ns]``."""
    return pd.DatetimeIndex(values, dtype="datetime64[ns]").to_numpy()


def _error(loc: tuple, kind: str, message: str, context: dict[str, Any]) -> InitErrorDetails:
    return {"type": PydanticCustomError(kind, message, context), "loc": loc, "input": None}


class Driver(BaseModel):
    """One feature's contribution to a prediction (exact TreeSHAP value, as LightGBM's ``pred_contrib``)."""

    feature: str
    value: float | str | bool | None = Field(description="The customer's value of the feature.")
    contribution: float = Field(
        description="Additive contribution to the model's raw score: log-odds of churn for the churn "
        "model, log spend for the spend model (Tweedie/gamma); positive raises the prediction."
    )
    effect: float | None = Field(
        default=None,
        description="What this feature's contribution changes in the prediction, in its units: churn "
        "probability (0.05 = 5 percentage points) or spend if active (currency); the prediction minus the "
        "prediction without it, other contributions kept. Effects of several drivers do not add up exactly.",
    )


class DriverBase(BaseModel):
    """Each model's prediction without any feature's contribution (the model's expected value)."""

    churn: float = Field(description="Churn probability, 0-1.")
    spend: float = Field(description="Spend if active over the horizon, currency.")


class Drivers(BaseModel):
    """Top drivers of both predictions, by absolute contribution, and the base they move from."""

    churn: list[Driver]
    spend: list[Driver]
    base: DriverBase | None = Field(default=None, description="Absent when drivers are switched off.")


class Segment(BaseModel):
    """Where the customer sits: CLV tier (by lifetime CLV) and RFM segment."""

    clv_tier: str = Field(description='e.g. "top 10%", "next 10%", "next 30%", "bottom 50%".')
    rfm_segment: str = Field(
        description="lost, champions, loyal, cannot_lose, at_risk, new, ...: the first rule of "
        "serving.segments.SEGMENT_RULES the customer meets (recency, frequency and value scores, P(alive), "
        "churn probability, CLV), or prospect"
    )


class ModelVersions(BaseModel):
    """The registered model versions and feature set behind an answer."""

    churn: str = Field(description="Version of the registered model clvcast-churn.")
    spend: str = Field(description="Version of the registered model clvcast-spend.")
    feature_set: str = Field(description="Feature-set version both models were trained on.")


class CustomerClv(BaseModel):
    """Predictions and CLV of one customer. Money in currency units, time in days."""

    customer_id: str
    churn_probability: float = Field(description=_SCORE_DESCRIPTIONS["churn_probability"])
    p_alive: float = Field(description=_SCORE_DESCRIPTIONS["p_alive"])
    spend_if_active: float = Field(description=_SCORE_DESCRIPTIONS["spend_if_active"])
    expected_spend: float = Field(description=_SCORE_DESCRIPTIONS["expected_spend"])
    expected_spend_lower: float = Field(description=_SCORE_DESCRIPTIONS["expected_spend_lower"])
    expected_spend_upper: float = Field(description=_SCORE_DESCRIPTIONS["expected_spend_upper"])
    clv_horizon: float = Field(description=_SCORE_DESCRIPTIONS["clv_horizon"])
    clv: float = Field(description=_SCORE_DESCRIPTIONS["clv"])
    clv_lower: float = Field(description=_SCORE_DESCRIPTIONS["clv_lower"])
    clv_upper: float = Field(description=_SCORE_DESCRIPTIONS["clv_upper"])
    expected_lifetime_days: float | None = Field(
        description=_SCORE_DESCRIPTIONS["expected_lifetime_days"]
        + " (null when infinite: a subscriber whose shifted-beta-geometric tail has no finite mean, alpha <= 1)"
    )
    expected_spend_curve: list[float] = Field(description=_SCORE_DESCRIPTIONS["expected_spend_curve"])
    segment: Segment
    recency_days: float | None = Field(description=_SCORE_DESCRIPTIONS["recency_days"] + " (null)")
    frequency: float | None = Field(description=_SCORE_DESCRIPTIONS["frequency"] + " (null)")
    monetary_value: float | None = Field(description=_SCORE_DESCRIPTIONS["monetary_value"] + " (null)")
    drivers: Drivers
    subscription_state: str | None = Field(
        default=None,
        description=_SUBSCRIPTION_DESCRIPTIONS["subscription_state"] + " (subscription mode only; null otherwise)",
    )

    #: Numeric fields, named as the columns of :data:`serving.scores.SCORE_COLUMNS`.
    FLOAT_FIELDS: ClassVar[tuple[str, ...]] = (
        "churn_probability", "p_alive", "spend_if_active", "expected_spend", "expected_spend_lower",
        "expected_spend_upper", "clv_horizon", "clv", "clv_lower", "clv_upper", "expected_lifetime_days",
        "recency_days", "frequency", "monetary_value",
    )  # fmt: skip
    #: The score columns :meth:`from_score` reads.
    SCORE_COLUMNS: ClassVar[tuple[str, ...]] = (
        "customer_id", "clv_tier", "rfm_segment", "drivers", "expected_spend_curve", *FLOAT_FIELDS,
    )  # fmt: skip

    @classmethod
    def from_score(cls, row: dict[str, Any]) -> CustomerClv:
        """Build from one record of :func:`serving.scoring.score_tables`."""
        return cls(
            customer_id=row["customer_id"],
            segment=Segment(clv_tier=row["clv_tier"], rfm_segment=row["rfm_segment"]),
            drivers=Drivers.model_validate(row["drivers"]),
            expected_spend_curve=np.asarray(row["expected_spend_curve"], dtype=float).tolist(),
            subscription_state=None if pd.isna(row.get("subscription_state")) else str(row["subscription_state"]),
            **{name: _finite_or_none(row[name]) for name in cls.FLOAT_FIELDS},
        )

    @classmethod
    def from_columns(cls, columns: dict[str, Any], *, order: list[str] | None = None) -> list[CustomerClv]:
        """Build one per customer from the columns of :func:`serving.scoring.score_columns`.

        The same values as :meth:`from_score` on each record, validated in a single pass rather
        than model by model. ``order`` lists customer ids in the wanted order (default: as scored).
        """
        ids = list(columns["customer_id"])
        floats = {name: _none_if_nan(np.asarray(columns[name], dtype=float)) for name in cls.FLOAT_FIELDS}
        tiers, rfm, drivers = list(columns["clv_tier"]), list(columns["rfm_segment"]), columns["drivers"]
        curves = [np.asarray(c, dtype=float).tolist() for c in columns["expected_spend_curve"]]
        states = columns.get("subscription_state")
        states = [None] * len(ids) if states is None else [None if pd.isna(v) else str(v) for v in states]
        rows = [
            {
                "customer_id": ids[i],
                "segment": {"clv_tier": tiers[i], "rfm_segment": rfm[i]},
                "drivers": drivers[i],
                "expected_spend_curve": curves[i],
                "subscription_state": states[i],
                **{name: values[i] for name, values in floats.items()},
            }
            for i in range(len(ids))
        ]
        if order is not None:
            position = {customer_id: i for i, customer_id in enumerate(ids)}
            rows = [rows[position[customer_id]] for customer_id in order]
        return _CUSTOMERS.validate_python(rows)


_CUSTOMERS = TypeAdapter(list[CustomerClv])


def _finite_or_none(value: Any) -> float | None:
    # A prospect has no recency, frequency or monetary value: NaN in the scores, null in JSON.
    value = float(value)
    return value if math.isfinite(value) else None


def _none_if_nan(values: np.ndarray) -> list[float | None]:
    listed = values.tolist()
    return listed if np.isfinite(values).all() else [_finite_or_none(v) for v in listed]

SegmentBasis = Literal["scored population", "this request"]


class ClvResponse(BaseModel):
    """Answer of ``POST /clv``: one entry per requested customer, in request order."""

    as_of: date
    horizon_days: int = Field(description=_SCORE_DESCRIPTIONS["horizon_days"])
    interval_coverage: float = Field(
        description="Share of customers the *_lower / *_upper intervals are calibrated to cover (time-held-out window)."
    )
    segment_basis: SegmentBasis = Field(
        description="Population the CLV tiers and RFM scores are relative to: the batch scores the "
        "service was started with (CLVCAST_SCORES), or else the customers of this request."
    )
    model_versions: ModelVersions
    customers: list[CustomerClv]


class ChannelCac(BaseModel):
    """A proposed acquisition channel and what one acquired customer costs there."""

    model_config = ConfigDict(extra="forbid")

    channel: Annotated[str, Field(min_length=1, max_length=128)]
    cac: float = Field(allow_inf_nan=False, ge=0, le=MAX_ABS_AMOUNT, description="Cost per acquired customer.")


class BudgetRequest(BaseModel):
    """Body of ``POST /acquisition_budget``."""

    model_config = ConfigDict(extra="forbid")

    channels: list[ChannelCac] = Field(min_length=1, max_length=MAX_CHANNELS)
    target_ltv_cac: float | None = Field(
        None, allow_inf_nan=False, ge=0.01, le=1000, description="Target LTV:CAC; default: the configured one (3)."
    )

    @model_validator(mode="after")
    def _unique_channels(self) -> BudgetRequest:
        seen: set[str] = set()
        errors = []
        for i, item in enumerate(self.channels):
            if item.channel in seen:
                errors.append(
                    _error(("channels", i, "channel"), "duplicate_channel", "channel {channel} appears twice", {"channel": item.channel})
                )
            seen.add(item.channel)
        if errors:
            raise ValidationError.from_exception_data("BudgetRequest", errors)
        return self


class ChannelBudget(BaseModel):
    """What a channel may cost, from the CLV of a customer just acquired through it."""

    channel: str
    cac: float
    new_customer_clv: float | None = Field(description="Expected value of a customer just acquired here.")
    ltv_cac: float | None = Field(description="new_customer_clv / cac; null when undefined (no CLV, or CAC 0).")
    max_allowable_cac: float | None = Field(description="new_customer_clv / target_ltv_cac, floored at 0.")
    recommendation: str = Field(description="grow, hold, cut, or unknown.")
    basis: str = Field(description='"channel", or "unknown" for a channel without a new-customer CLV (no recommendation).')
    note: str

    @field_validator("new_customer_clv", "ltv_cac", "max_allowable_cac", mode="before")
    @classmethod
    def _finite_or_none(cls, value: Any) -> Any:
        # JSON has no NaN or infinity: an undefined ratio (CAC 0, no CLV) is null.
        return value if value is None or math.isfinite(value) else None


class BudgetResponse(BaseModel):
    """Answer of ``POST /acquisition_budget``, in request order."""

    target_ltv_cac: float
    model_versions: ModelVersions
    channels: list[ChannelBudget]
    warning: str | None = Field(
        None,
        description="Set when new_customer_clv.csv was written from other model versions than the ones served "
        "(e.g. after POST /reload): its values are those models'.",
    )


class ModelInfo(BaseModel):
    """Answer of ``GET /model``: what the service is serving."""

    model_versions: ModelVersions
    model_names: dict[str, str]
    run_id: str
    trained_at: str | None = Field(description="When the champion was trained (ISO-8601).")
    training_cutoff: str | None = Field(description="Last day of history the champion saw.")
    horizon_days: int
    holdout_metrics: dict[str, Any] = Field(description="Holdout metrics of the models and baselines.")
    clv_settings: dict[str, Any]
    segment_basis: SegmentBasis
    limits: dict[str, int]
    tracking_uri: str
