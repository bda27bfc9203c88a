"""Subscription state as of a cutoff: who is subscribed, on what, paid until when, for how long.

A subscription business records invoices (the ``transactions`` table: one row per paid billing
period, positive amounts) and ``cancel`` events. From them, as of the end of the cutoff day:

- a **subscription** (spell) is a run of invoices in consecutive billing periods; a skipped
  period ends it, and the next invoice starts a new one (a return);
- an invoice pays its billing period: the subscription is **paid through** the end of the period
  of its last invoice, on the calendar of the customer's first invoice (periods of
  ``billing_months`` months starting on that invoice's day of month, clipped to the last day of
  shorter months, at its time of day; a return keeps the calendar);
- a ``cancel`` event at or after the last invoice and before the paid-through date ends the
  subscription at that date (a later invoice in the same subscription undoes it).

State of a customer (:data:`STATES`), from its latest subscription:

- ``active``: paid through a date after the cutoff, no cancel, the customer's first subscription;
- ``reactivated``: the same in a later subscription (the customer came back);
- ``cancelled_paid_through``: cancelled, still has the access paid (no churn risk left to score:
  the churn is decided, and no revenue is due beyond the paid period);
- ``churned``: the paid period ended before the cutoff without a renewal (within ``grace_days``).

Invoices are matched to billing periods by rounding the time since the customer's first invoice
to whole periods (30.44 days per month), so payments a few days late keep their period; two
invoices in one period (a mid-period charge) add up to that period's amount. Everything is a pure
function of the rows dated before the end of the cutoff day: later rows change nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from features.contract import Tables
from features.dates import history_until, parse_cutoff

__all__ = [
    "MEAN_MONTH_DAYS",
    "REGULAR_SHARE",
    "SPELL_COLUMNS",
    "STATES",
    "STATE_COLUMNS",
    "add_months",
    "detect_business",
    "plan_names",
    "subscription_periods",
    "subscription_spells",
    "subscription_state",
]

STATES = ("active", "reactivated", "cancelled_paid_through", "churned")
#: Days in the mean Gregorian month: months between dates, tenure and billing periods in days.
MEAN_MONTH_DAYS = 365.2425 / 12

#: Columns of :func:`subscription_spells`: name -> (dtype, description).
SPELL_COLUMNS = {
    "customer_id": ("str", "customer"),
    "spell": ("int64", "0 for the customer's first subscription, 1 for the first return, ..."),
    "started_at": ("datetime64[ns]", "first invoice of the subscription"),
    "last_invoice_at": ("datetime64[ns]", "last invoice before the end of the cutoff day"),
    "paid_through": ("datetime64[ns]", "end of the billing period of the last invoice"),
    "periods": ("int64", "billing periods paid (1 = only the first)"),
    "mrr": ("float64", "monthly recurring revenue of the last period: its amount / billing_months"),
    "plan": ("str", "plan of the last period"),
    "cancelled_at": ("datetime64[ns]", "cancel event that ends the subscription; NaT if none"),
    "ended": ("bool", "paid_through lies before the cutoff (beyond grace_days): the subscription is over"),
}

#: Columns of :func:`subscription_state` (indexed by customer_id): name -> (dtype, description).
STATE_COLUMNS = {
    "state": ("str", "one of STATES"),
    "plan": ("str", "plan of the running subscription, or last billed if churned"),
    "mrr": ("float64", "monthly recurring revenue at the cutoff (currency units per month); 0 if churned"),
    "last_mrr": ("float64", "MRR of the last billed period (also for churned customers)"),
    "subscription_start": ("datetime64[ns]", "first invoice of the latest subscription"),
    "paid_through": ("datetime64[ns]", "end of the last paid billing period"),
    "tenure_periods": ("Int64", "completed billing periods of the running subscription before the current one"),
    "period_elapsed": ("float64", "share of the current billing period elapsed at the cutoff, (0, 1]; NaN if churned"),
    "n_subscriptions": ("int64", "subscriptions started so far (2 or more: the customer came back)"),
    "cancelled_at": ("datetime64[ns]", "cancel of the latest subscription; NaT if none"),
    "periods_since_churn": ("Int64", "whole billing periods from the end of access to the cutoff; NA unless churned"),
}


def add_months(timestamps: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Add whole months on a billing calendar: the day of month kept, clipped to shorter months.

    Parameters
    ----------
    timestamps : numpy.ndarray of datetime64[ns], shape (n,)
    months : numpy.ndarray of int, shape (n,) or scalar

    Returns
    -------
    numpy.ndarray of datetime64[ns], shape (n,)
        ``timestamps`` moved by ``months`` calendar months at the same time of day; 31 January plus
        one month is 28 (or 29) February, plus two is 31 March.
    """
    ts = np.asarray(timestamps, dtype="datetime64[ns]")
    day = ts.astype("datetime64[D]")
    month = ts.astype("datetime64[M]")
    time_of_day = ts - day.astype("datetime64[ns]")
    day_of_month = (day - month.astype("datetime64[D]")).astype(np.int64)
    target = month + np.asarray(months, dtype=np.int64).astype("timedelta64[M]")
    month_length = ((target + 1).astype("datetime64[D]") - target.astype("datetime64[D]")).astype(np.int64)
    clipped = np.minimum(day_of_month, month_length - 1).astype("timedelta64[D]")
    return (target.astype("datetime64[D]") + clipped).astype("datetime64[ns]") + time_of_day


def _validate(billing_months: int, grace_days: int) -> None:
    if int(billing_months) != billing_months or billing_months < 1:
        raise ValueError(f"billing_months: rule 'a positive whole number of months': got {billing_months!r}")
    if int(grace_days) != grace_days or grace_days < 0:
        raise ValueError(f"grace_days: rule 'a whole number of days >= 0': got {grace_days!r}")


def plan_names(mrr: np.ndarray, plans: Mapping[str, float] | None) -> np.ndarray:
    """Plan of each MRR: the price list's name whose price it equals, else ``"other"``; without a
    price list, the MRR written as text (``29.0`` -> ``"29"``).

    Parameters
    ----------
    mrr : numpy.ndarray of float, shape (n,)
        Monthly recurring revenue, currency units per month.
    plans : mapping of str to float, optional
        Price list: plan name -> monthly price.

    Returns
    -------
    numpy.ndarray of object (str), shape (n,)
    """
    mrr = np.asarray(mrr, dtype=float)
    if not plans:
        return np.array([f"{m:g}" for m in mrr], dtype=object)
    names = np.array(list(plans), dtype=object)
    prices = np.array([float(p) for p in plans.values()])
    match = np.isclose(mrr[:, None], prices[None, :], rtol=1e-9, atol=1e-9)
    return np.where(match.any(axis=1), names[match.argmax(axis=1)], "other")


def _plan_labels(mrr: np.ndarray, given: pd.Series | None, plans: Mapping[str, float] | None) -> np.ndarray:
    """Plan per period: from the price list if given, else the invoices' ``plan`` column, else the MRR."""
    if given is not None and not plans:
        return given.astype("str").to_numpy(dtype=object)
    return plan_names(mrr, plans)


def subscription_spells(
    tables: Tables,
    *,
    cutoff,
    billing_months: int = 1,
    plans: Mapping[str, float] | None = None,
    grace_days: int = 0,
) -> pd.DataFrame:
    """Every subscription (run of consecutive paid billing periods) as of a cutoff.

    Parameters
    ----------
    tables : Tables
        Contract tables with normalised dtypes: ``transactions`` are the invoices (rows with
        amount <= 0, refunds and credits, pay no period and are ignored here), ``events`` may hold
        ``cancel`` rows (other event types are ignored). A ``plan`` column in ``transactions`` names
        the plan of each invoice when ``plans`` is not given.
    cutoff : date-like
        History is everything dated before the end of this day.
    billing_months : int
        Length of a billing period in months (1 monthly, 12 annual).
    plans : mapping of str to float, optional
        Price list: plan name -> MRR in currency units per month. A period whose MRR matches no
        price gets the plan ``"other"``. Without it (and without a ``plan`` column) the plan is the
        MRR written as text (``"29"``).
    grace_days : int
        Days after the end of a paid period during which a renewal invoice may still come: a
        subscription whose paid period ended less than ``grace_days`` before the end of the cutoff
        day is not yet over.

    Returns
    -------
    pandas.DataFrame
        One row per subscription with an invoice before the end of the cutoff day, ordered by
        customer and start, columns :data:`SPELL_COLUMNS`, a default RangeIndex.

    Raises
    ------
    ValueError
        If ``billing_months`` or ``grace_days`` breaks its rule, or the cutoff is not a date.
    """
    _validate(billing_months, grace_days)
    day = parse_cutoff(cutoff)
    t0 = np.datetime64(pd.Timestamp(day) + pd.Timedelta(days=1), "ns")
    hist = history_until(tables, day)
    paid = _paid_periods(hist.transactions, billing_months, plans)
    if paid is None:
        return _empty(SPELL_COLUMNS)
    start_row, end_row = paid["start_row"], paid["end_row"]
    period, anchor = paid["period"], paid["anchor"]
    n_periods = period[end_row] - period[start_row] + 1
    paid_through = add_months(anchor[end_row], (period[end_row] + 1) * billing_months)
    mrr = paid["mrr"][end_row]
    plan = paid["plan"][end_row]
    ids, started, last_ts, spell_number = paid["ids"], paid["started"], paid["last_ts"], paid["spell_number"]

    spells = pd.DataFrame(
        {
            "customer_id": pd.array(ids[start_row], dtype="str"),
            "spell": spell_number[start_row].astype(np.int64),
            "started_at": started[start_row],
            "last_invoice_at": last_ts[end_row],
            "paid_through": paid_through,
            "periods": n_periods.astype(np.int64),
            "mrr": mrr,
            "plan": pd.array(plan, dtype="str"),
        }
    )
    spells["cancelled_at"] = _cancels(hist.events, spells)
    spells["ended"] = spells["paid_through"].to_numpy() <= t0 - np.timedelta64(int(grace_days), "D")
    return spells


def _paid_periods(tx: pd.DataFrame, billing_months: int, plans: Mapping[str, float] | None) -> dict | None:
    """The paid billing periods of the invoices (one entry per customer and period), in order.

    Returns ``None`` without a positive invoice, else arrays over the paid periods ordered by
    customer and time: ``ids``, ``period`` (index on the customer's calendar), ``started`` (first
    invoice of the period), ``last_ts`` (its last invoice), ``anchor`` (the customer's first
    invoice), ``mrr``, ``plan``, ``spell_number``, ``tenure`` (period index within its spell), and
    ``start_row`` / ``end_row``: the first and last period of each spell.
    """
    tx = tx.loc[tx["amount"].to_numpy() > 0]
    ids = tx["customer_id"].to_numpy(dtype=object)
    ts = tx["timestamp"].to_numpy(dtype="datetime64[ns]")
    order = np.lexsort((ts, ids))
    ids, ts, amount = ids[order], ts[order], tx["amount"].to_numpy(dtype=float)[order]
    given_plan = tx["plan"].iloc[order] if ("plan" in tx.columns and not plans) else None
    if len(ids) == 0:
        return None

    first_row = np.r_[True, ids[1:] != ids[:-1]]
    customer_start = np.maximum.accumulate(np.where(first_row, np.arange(len(ids)), 0))
    period_days = MEAN_MONTH_DAYS * billing_months
    anchor = ts[customer_start]
    since = (ts - anchor) / np.timedelta64(1, "D")
    period = np.rint(since / period_days).astype(np.int64)
    # Invoices in the same period of a customer add up to one period (the last one's plan wins).
    same = np.r_[False, (~first_row[1:]) & (period[1:] == period[:-1])]
    group = np.cumsum(~same) - 1
    keep_last = np.r_[~same[1:], True]
    amount = np.bincount(group, weights=amount)
    first_of_group = ~same
    ids, period, started = ids[first_of_group], period[first_of_group], ts[first_of_group]
    anchor = anchor[first_of_group]
    last_ts = ts[keep_last]
    plan_given = None if given_plan is None else given_plan.iloc[np.flatnonzero(keep_last)].reset_index(drop=True)
    first_row = first_row[first_of_group]

    new_spell = first_row | np.r_[True, period[1:] - period[:-1] > 1]
    spell_id = np.cumsum(new_spell) - 1
    spell_number = spell_id - np.maximum.accumulate(np.where(first_row, spell_id, 0))
    start_row = np.flatnonzero(new_spell)
    end_row = np.r_[start_row[1:] - 1, len(ids) - 1]
    mrr = amount / billing_months
    return {
        "ids": ids, "period": period, "started": started, "last_ts": last_ts, "anchor": anchor, "mrr": mrr,
        "plan": _plan_labels(mrr, plan_given, plans), "spell_number": spell_number,
        "tenure": period - period[start_row][spell_id], "start_row": start_row, "end_row": end_row,
    }


def subscription_periods(
    tables: Tables,
    *,
    cutoff,
    billing_months: int = 1,
    plans: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Every paid billing period as of a cutoff: the person-period rows of the subscriptions.

    Parameters
    ----------
    tables, cutoff, billing_months, plans
        As in :func:`subscription_spells`.

    Returns
    -------
    pandas.DataFrame
        One row per customer and paid billing period before the end of the cutoff day, ordered by
        customer and time, a default RangeIndex: ``customer_id`` (str), ``spell`` (int64, as in
        :func:`subscription_spells`), ``tenure`` (int64, the period's index within its
        subscription: 0 for the first), ``mrr`` (float64, currency units per month) and ``plan``
        (str, the plan billed for that period).

    Raises
    ------
    ValueError
        As :func:`subscription_spells`.
    """
    _validate(billing_months, 0)
    hist = history_until(tables, parse_cutoff(cutoff))
    paid = _paid_periods(hist.transactions, billing_months, plans)
    if paid is None:
        return pd.DataFrame({"customer_id": pd.array([], dtype="str"), "spell": np.array([], dtype=np.int64),
                             "tenure": np.array([], dtype=np.int64), "mrr": np.array([], dtype=float),
                             "plan": pd.array([], dtype="str")})
    return pd.DataFrame({
        "customer_id": pd.array(paid["ids"], dtype="str"),
        "spell": paid["spell_number"].astype(np.int64),
        "tenure": paid["tenure"].astype(np.int64),
        "mrr": paid["mrr"],
        "plan": pd.array(paid["plan"], dtype="str"),
    })


def _cancels(events: pd.DataFrame | None, spells: pd.DataFrame) -> np.ndarray:
    """First cancel of each subscription: at or after its last invoice, before its paid-through date."""
    out = np.full(len(spells), np.datetime64("NaT"), dtype="datetime64[ns]")
    if events is None or not len(events):
        return out
    cancels = events.loc[events["event_type"].to_numpy() == "cancel", ["customer_id", "timestamp"]]
    if not len(cancels):
        return out
    cancels = cancels.astype({"timestamp": "datetime64[ns]"}).sort_values("timestamp")
    anchors = spells[["customer_id", "last_invoice_at", "paid_through"]].assign(row=np.arange(len(spells)))
    anchors = anchors.astype({"last_invoice_at": "datetime64[ns]"}).sort_values("last_invoice_at")
    matched = pd.merge_asof(
        cancels, anchors, left_on="timestamp", right_on="last_invoice_at", by="customer_id", direction="backward"
    )
    matched = matched.loc[matched["row"].notna() & (matched["timestamp"] < matched["paid_through"])]
    first = matched.groupby("row")["timestamp"].min()
    out[first.index.to_numpy(dtype=np.int64)] = first.to_numpy(dtype="datetime64[ns]")
    return out


def subscription_state(
    tables: Tables,
    *,
    cutoff,
    billing_months: int = 1,
    plans: Mapping[str, float] | None = None,
    grace_days: int = 0,
) -> pd.DataFrame:
    """The subscription state of every customer with an invoice, as of the end of the cutoff day.

    Parameters
    ----------
    tables, cutoff, billing_months, plans, grace_days
        As in :func:`subscription_spells`.

    Returns
    -------
    pandas.DataFrame
        One row per customer with an invoice before the end of the cutoff day, indexed by
        ``customer_id``, columns :data:`STATE_COLUMNS`. ``state`` is one of :data:`STATES` (see the
        module docstring). Customers without an invoice yet have no subscription and no row.

    Raises
    ------
    ValueError
        As :func:`subscription_spells`.
    """
    spells = subscription_spells(
        tables, cutoff=cutoff, billing_months=billing_months, plans=plans, grace_days=grace_days
    )
    t0 = np.datetime64(pd.Timestamp(parse_cutoff(cutoff)) + pd.Timedelta(days=1), "ns")
    if not len(spells):
        return _empty(STATE_COLUMNS).set_index(pd.Index([], dtype="str", name="customer_id"))
    counts = spells.groupby("customer_id", sort=False).size()
    last = spells.drop_duplicates("customer_id", keep="last").set_index("customer_id")
    ended = last["ended"].to_numpy()
    cancelled = last["cancelled_at"].notna().to_numpy()
    state = np.select([ended, cancelled, last["spell"].to_numpy() > 0], [3, 2, 1], 0)
    last_invoice = last["last_invoice_at"].to_numpy()
    paid_through = last["paid_through"].to_numpy()
    elapsed = (t0 - last_invoice) / (paid_through - last_invoice)
    tenure = pd.array(last["periods"].to_numpy() - 1, dtype="Int64")
    tenure[ended] = pd.NA
    since = (t0 - paid_through) / np.timedelta64(1, "D") / (MEAN_MONTH_DAYS * billing_months)
    periods_since = pd.array(np.floor(np.maximum(since, 0)).astype(np.int64), dtype="Int64")
    periods_since[~ended] = pd.NA
    frame = pd.DataFrame(
        {
            "state": pd.array(np.array(STATES, dtype=object)[state], dtype="str"),
            "plan": last["plan"],
            "mrr": np.where(ended, 0.0, last["mrr"].to_numpy()),
            "last_mrr": last["mrr"],
            "subscription_start": last["started_at"],
            "paid_through": last["paid_through"],
            "tenure_periods": tenure,
            "period_elapsed": np.where(ended, np.nan, elapsed),
            "n_subscriptions": counts.loc[last.index].to_numpy(dtype=np.int64),
            "cancelled_at": last["cancelled_at"],
            "periods_since_churn": periods_since,
        },
        index=last.index,
    )
    return frame


def _empty(columns: dict) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, (dtype, _) in columns.items()})


#: Share of the repeat customers invoiced on a regular calendar that makes a book a subscription book.
REGULAR_SHARE = 0.5
#: Gaps between invoices, in days, that count as a monthly (27-32) or annual (358-373) renewal.
_RENEWAL_GAPS = ((27.0, 32.0), (358.0, 373.0))


def detect_business(tables: Tables, *, cutoff) -> tuple[str, str]:
    """Whether a book looks like a subscription business, and why, from its history up to a cutoff.

    A book is ``subscription`` when its transactions carry a ``plan`` column, or when most customers
    with three or more positive transactions (at least :data:`REGULAR_SHARE` of them) were billed
    on a regular calendar: every gap between consecutive paying days is a month (27 to 32 days) or
    a year (358 to 373 days). ``cancel`` events alone do not decide (retail books have them: a
    cancelled order or newsletter) but are named in the reason. Otherwise ``retail``.

    Parameters
    ----------
    tables : Tables
    cutoff : date-like
        Only rows before the end of this day are read.

    Returns
    -------
    business : {"retail", "subscription"}
    reason : str
        One line naming the evidence (counts and shares), for the log and MLflow.
    """
    hist = history_until(tables, parse_cutoff(cutoff))
    tx = hist.transactions
    events = hist.events
    cancels = 0
    if events is not None and len(events) and "event_type" in events.columns:
        cancels = int((events["event_type"].to_numpy() == "cancel").sum())
    with_cancels = f", {cancels:,} cancel events" if cancels else ", no cancel events"
    if "plan" in tx.columns:
        return "subscription", f"transactions carry a 'plan' column{with_cancels}"
    paid = tx.loc[tx["amount"].to_numpy() > 0, ["customer_id", "timestamp"]]
    days = pd.DataFrame({"customer_id": paid["customer_id"].to_numpy(dtype=object),
                         "day": paid["timestamp"].to_numpy(dtype="datetime64[D]")}).drop_duplicates()
    days = days.sort_values(["customer_id", "day"], kind="stable")
    gap = np.diff(days["day"].to_numpy()) / np.timedelta64(1, "D")
    same = days["customer_id"].to_numpy()[1:] == days["customer_id"].to_numpy()[:-1]
    renewal = np.zeros(len(gap), dtype=bool)
    for low, high in _RENEWAL_GAPS:
        renewal |= (gap >= low) & (gap <= high)
    owner = days["customer_id"].to_numpy()[1:][same]
    per_customer = pd.DataFrame({"customer_id": owner, "renewal": renewal[same]}).groupby("customer_id")["renewal"]
    gaps = per_customer.size()
    repeat = gaps.index[(gaps >= 2).to_numpy()]
    if not len(repeat):
        return "retail", f"no customer with three or more paying days{with_cancels}"
    regular = per_customer.all().reindex(repeat)
    share = float(regular.mean())
    evidence = (f"{int(regular.sum()):,} of {len(repeat):,} customers with three or more paying days "
                f"({100 * share:.0f}%) billed every month or year{with_cancels}")
    return ("subscription" if share >= REGULAR_SHARE else "retail"), evidence
