"""SaaS finance from invoices: MRR and its bridge, churn, GRR and NRR, cohort retention, CAC payback.

Pure functions of the contract tables as of a cutoff; money in the invoices' currency units.

Definitions (the usual SaaS ones, made exact so that the figures add up to the invoices):

- **MRR of a customer in a calendar month**: the invoice amounts dated in that month (refunds net
  against them), an invoice of ``billing_months`` months spread evenly over the month it is dated
  in and the next ones. With monthly billing every paying customer has exactly one invoice per
  calendar month (an anniversary falls in every month), so the MRR of a month *is* its invoiced
  revenue. Only whole calendar months before the end of the cutoff day count. ARR = 12 x MRR.
- **The bridge** of month M splits ``MRR(M) - MRR(M-1)`` customer by customer, with ``prev`` and
  ``cur`` a customer's MRR in M-1 and M: ``new`` (``prev <= 0 < cur``, first paying month ever),
  ``reactivated`` (``prev <= 0 < cur``, paid before), ``expansion`` (``0 < prev < cur``),
  ``contraction`` (``0 < cur < prev``, negative), ``churned`` (``cur <= 0 < prev``: ``cur - prev``,
  negative), ``adjustment`` (``prev <= 0`` and ``cur <= 0``: refunds outside paying months). The
  parts sum exactly to the change of MRR, so ``MRR(M-1) + parts = MRR(M)`` month by month.
- **Logo churn** (monthly): customers churned in a month / customers paying the month before, pooled
  over the months asked for; **gross revenue churn**: (churned + contraction MRR) / MRR of the
  month before; **net revenue churn**: the same minus expansion.
- **GRR / NRR** of a base month M0 over ``months`` k: the customers paying in M0, their MRR in M0
  (``mrr0``) and in M0 + k (``mrr1``): GRR = sum(min(mrr1, mrr0)) / sum(mrr0),
  NRR = sum(mrr1) / sum(mrr0) (returns of those customers count in NRR; customers acquired after
  M0 never count).
- **Cohort retention**: cohort = calendar month of a customer's first paying month; the share of the
  cohort paying k months later.
- **CAC payback** per channel: months of gross margin needed to recover the mean CAC, observed (the
  first k at which the cohorts' cumulative margin per customer reaches their CAC, over the customers
  observed that long) and by the classic formula CAC / (gross margin x first-month MRR).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from features.contract import Tables
from features.dates import history_until, parse_cutoff
from features.history import isin_ids
from features.subscription import plan_names

__all__ = [
    "MOVEMENTS",
    "cac_payback",
    "churn_rates",
    "cohort_retention",
    "mrr_bridge",
    "mrr_movements",
    "net_revenue_retention",
]

#: Movement of a customer's MRR from one month to the next (see the module docstring).
MOVEMENTS = ("new", "expansion", "contraction", "churned", "reactivated", "adjustment", "unchanged")
_BRIDGE_PARTS = ("new", "expansion", "contraction", "churned", "reactivated", "adjustment")
UNKNOWN = "unknown"


def _month_index(ts: np.ndarray) -> np.ndarray:
    return ts.astype("datetime64[M]").astype(np.int64)


def _month_start(index: np.ndarray) -> np.ndarray:
    return np.asarray(index, dtype=np.int64).astype("datetime64[M]").astype("datetime64[ns]")


def mrr_movements(
    tables: Tables,
    *,
    cutoff,
    billing_months: int = 1,
    plans: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """MRR of every customer in every whole calendar month, with its movement from the month before.

    Parameters
    ----------
    tables : Tables
        ``transactions`` are the invoices (customer_id, timestamp, amount; negative amounts are
        refunds and net into their month); ``customers`` (optional) gives ``channel``.
    cutoff : date-like
        Only whole calendar months ending by the end of this day count.
    billing_months : int
        Months one invoice pays (1 monthly, 12 annual); an invoice is spread evenly over them.
    plans : mapping of str to float, optional
        Price list, plan name -> monthly price, naming the ``plan`` of a customer-month (``"other"``
        when no price matches). Without it the plan is the MRR written as text.

    Returns
    -------
    pandas.DataFrame
        One row per customer and month in which the customer's MRR or that of the month before is
        not zero, ordered by customer and month: ``customer_id``, ``month`` (first day of the
        month), ``mrr_previous``, ``mrr`` (currency units per month), ``change`` (``mrr -
        mrr_previous``), ``movement`` (one of :data:`MOVEMENTS`), ``plan`` (plan paid in the month
        before if the customer paid then, else in this month), ``channel`` (``"unknown"`` without
        one) and ``cohort`` (first paying month, ``YYYY-MM``). ``attrs["last_month"]`` is the last
        whole month.

    Raises
    ------
    ValueError
        If ``billing_months`` is not a positive whole number or the cutoff is not a date.
    """
    if int(billing_months) != billing_months or billing_months < 1:
        raise ValueError(f"billing_months: rule 'a positive whole number of months': got {billing_months!r}")
    day = parse_cutoff(cutoff)
    hist = history_until(tables, day)
    # The month holding the end of the cutoff day is not whole: the month before it is the last.
    last_month = int(np.datetime64(pd.Timestamp(day) + pd.Timedelta(days=1), "M").astype(np.int64)) - 1
    tx = hist.transactions
    p = int(billing_months)
    ids = np.repeat(tx["customer_id"].to_numpy(dtype=object), p)
    month = np.repeat(_month_index(tx["timestamp"].to_numpy(dtype="datetime64[ns]")), p)
    month += np.tile(np.arange(p), len(tx))
    amount = np.repeat(tx["amount"].to_numpy(dtype=float) / p, p)
    inside = month <= last_month
    cur = (
        pd.DataFrame({"customer_id": ids[inside], "month": month[inside], "mrr": amount[inside]})
        .groupby(["customer_id", "month"], sort=True)["mrr"].sum()
    )
    prev = cur.rename("mrr_previous")
    prev.index = pd.MultiIndex.from_arrays(
        [prev.index.get_level_values(0), prev.index.get_level_values(1) + 1], names=["customer_id", "month"]
    )
    prev = prev[prev.index.get_level_values(1) <= last_month]
    frame = pd.concat([prev, cur], axis=1).fillna(0.0).sort_index().reset_index()
    paying = frame["mrr"].to_numpy() > 0
    was = frame["mrr_previous"].to_numpy() > 0
    ids = frame["customer_id"].to_numpy(dtype=object)
    months = frame["month"].to_numpy(dtype=np.int64)
    first_paid = pd.Series(np.where(paying, months, np.iinfo(np.int64).max)).groupby(ids).transform("min").to_numpy()
    change = frame["mrr"].to_numpy() - frame["mrr_previous"].to_numpy()
    movement = np.select(
        [
            ~was & paying & (months == first_paid),
            ~was & paying,
            was & ~paying,
            was & paying & (change > 0),
            was & paying & (change < 0),
            was & paying,
        ],
        ["new", "reactivated", "churned", "expansion", "contraction", "unchanged"],
        "adjustment",
    )
    plan_mrr = np.where(was, frame["mrr_previous"].to_numpy(), frame["mrr"].to_numpy())
    channel = _channels(hist.customers, ids)
    cohort_month = np.where(first_paid == np.iinfo(np.int64).max, months, first_paid)
    out = pd.DataFrame(
        {
            "customer_id": pd.array(ids, dtype="str"),
            "month": _month_start(months),
            "mrr_previous": frame["mrr_previous"].to_numpy(),
            "mrr": frame["mrr"].to_numpy(),
            "change": change,
            "movement": pd.array(movement, dtype="str"),
            "plan": pd.array(plan_names(plan_mrr, plans), dtype="str"),
            "channel": pd.array(channel, dtype="str"),
            "cohort": pd.array(pd.DatetimeIndex(_month_start(cohort_month)).strftime("%Y-%m"), dtype="str"),
        }
    )
    out.attrs["last_month"] = str(_month_start(np.array([last_month]))[0])[:10]
    return out


def _channels(customers: pd.DataFrame | None, ids: np.ndarray) -> np.ndarray:
    if customers is None or "channel" not in customers.columns:
        return np.full(len(ids), UNKNOWN, dtype=object)
    by_id = customers.set_index("customer_id")["channel"].astype("str")
    return pd.Series(ids).map(by_id).fillna(UNKNOWN).to_numpy(dtype=object)


def mrr_bridge(movements: pd.DataFrame) -> pd.DataFrame:
    """MRR and ARR by calendar month with the bridge from the month before.

    Parameters
    ----------
    movements : pandas.DataFrame
        From :func:`mrr_movements`.

    Returns
    -------
    pandas.DataFrame
        One row per month from the first month with MRR to the last whole month, indexed by
        ``month``: ``mrr_start`` (MRR of the month before), ``new``, ``expansion``,
        ``contraction``, ``churned``, ``reactivated``, ``adjustment`` (parts of the change,
        currency units per month; contraction and churned are <= 0), ``mrr`` (=
        ``mrr_start`` + the parts, exactly the invoiced MRR of the month), ``arr`` (12 x mrr),
        ``customers`` (paying in the month), ``new_customers``, ``churned_customers``,
        ``reactivated_customers``.
    """
    months = pd.Index(movements["month"].unique(), name="month").sort_values()
    parts = movements.pivot_table(index="month", columns="movement", values="change", aggfunc="sum").reindex(
        index=months, columns=list(_BRIDGE_PARTS)
    ).fillna(0.0)
    mrr = movements.groupby("month")["mrr"].sum().reindex(months, fill_value=0.0)
    counts = movements.groupby(["month", "movement"]).size().unstack(fill_value=0).reindex(
        index=months, columns=list(MOVEMENTS), fill_value=0
    )
    paying = movements.loc[movements["mrr"] > 0].groupby("month").size().reindex(months, fill_value=0)
    first = mrr.ne(0).idxmax() if len(mrr) else None
    out = pd.DataFrame({"mrr_start": mrr.shift(1, fill_value=0.0)})
    out = out.join(parts)
    out["mrr"] = mrr
    out["arr"] = 12 * mrr
    out["customers"] = paying
    out["new_customers"] = counts["new"]
    out["churned_customers"] = counts["churned"]
    out["reactivated_customers"] = counts["reactivated"]
    return out.loc[first:] if first is not None else out


def churn_rates(movements: pd.DataFrame, *, by: Sequence[str] = ("channel",), since=None) -> pd.DataFrame:
    """Monthly logo and revenue churn by segment, pooled over the months from ``since``.

    Parameters
    ----------
    movements : pandas.DataFrame
        From :func:`mrr_movements`.
    by : sequence of str
        Segment columns among ``channel``, ``plan`` (plan paid the month before), ``cohort`` and
        ``month``; empty for the whole book.
    since : date-like, optional
        First month counted (default: all).

    Returns
    -------
    pandas.DataFrame
        Indexed by the segment columns: ``customer_months`` (customers paying the month before,
        summed over the months), ``churned_customers``, ``logo_churn`` (monthly: churned /
        customer_months), ``mrr_start`` (their MRR the month before, summed), ``churned_mrr``,
        ``contraction_mrr``, ``expansion_mrr`` (>= 0), ``revenue_churn`` (monthly gross:
        (churned + contraction) / mrr_start) and ``net_revenue_churn`` (minus expansion; negative
        when expansion outgrows the losses).

    Raises
    ------
    ValueError
        If a ``by`` column is not one of those.
    """
    allowed = {"channel", "plan", "cohort", "month"}
    unknown = [c for c in by if c not in allowed]
    if unknown:
        raise ValueError(f"by: rule 'columns among {sorted(allowed)}': got {unknown}")
    rows = movements.loc[movements["mrr_previous"] > 0]
    if since is not None:
        rows = rows.loc[rows["month"] >= pd.Timestamp(since)]
    loss = -rows["change"]
    table = rows.assign(
        one=1,
        churned_one=(rows["movement"] == "churned").astype(int),
        churned_mrr=loss.where(rows["movement"] == "churned", 0.0),
        contraction_mrr=loss.where(rows["movement"] == "contraction", 0.0),
        expansion_mrr=rows["change"].where(rows["movement"] == "expansion", 0.0),
    )
    keys = list(by) if by else [np.zeros(len(table), dtype=int)]
    out = table.groupby(keys, observed=True).agg(
        customer_months=("one", "sum"),
        churned_customers=("churned_one", "sum"),
        mrr_start=("mrr_previous", "sum"),
        churned_mrr=("churned_mrr", "sum"),
        contraction_mrr=("contraction_mrr", "sum"),
        expansion_mrr=("expansion_mrr", "sum"),
    )
    out["logo_churn"] = out["churned_customers"] / out["customer_months"]
    out["revenue_churn"] = (out["churned_mrr"] + out["contraction_mrr"]) / out["mrr_start"]
    out["net_revenue_churn"] = out["revenue_churn"] - out["expansion_mrr"] / out["mrr_start"]
    if not by:
        out.index = pd.Index(["all"], name="segment")
    return out


def net_revenue_retention(
    movements: pd.DataFrame, *, base_month, months: int = 12, by: Sequence[str] = ()
) -> pd.DataFrame:
    """GRR and NRR of the customers paying in a base month, ``months`` later.

    Parameters
    ----------
    movements : pandas.DataFrame
        From :func:`mrr_movements`.
    base_month : date-like
        Any day of the base month M0.
    months : int
        k, months from M0 to the month compared (12: the usual yearly figure).
    by : sequence of str
        Segment columns among ``channel``, ``plan`` (plan in M0) and ``cohort``; empty for the book.

    Returns
    -------
    pandas.DataFrame
        Indexed by segment: ``customers`` (paying in M0), ``mrr_base`` (their MRR in M0),
        ``mrr_retained`` (sum of min(MRR in M0 + k, MRR in M0)), ``mrr_now`` (their MRR in M0 + k),
        ``grr`` = mrr_retained / mrr_base and ``nrr`` = mrr_now / mrr_base (shares, 1 = 100 %).

    Raises
    ------
    ValueError
        If ``months`` is not positive, or M0 + k lies after the last whole month.
    """
    if int(months) != months or months < 1:
        raise ValueError(f"months: rule 'a positive whole number': got {months!r}")
    m0 = pd.Timestamp(base_month).to_period("M").to_timestamp()
    m1 = m0 + pd.DateOffset(months=int(months))
    last = pd.Timestamp(movements.attrs.get("last_month", movements["month"].max()))
    if m1 > last:
        raise ValueError(f"base_month: rule 'base month + {months} months by the last whole month {last.date()}'"
                         f": got {m0.date()}")
    base = movements.loc[(movements["month"] == m0) & (movements["mrr"] > 0)].set_index("customer_id")
    later = movements.loc[movements["month"] == m1].set_index("customer_id")["mrr"]
    table = pd.DataFrame(
        {
            "mrr_base": base["mrr"],
            "mrr_now": later.reindex(base.index, fill_value=0.0),
        }
    )
    for column in by:
        if column not in {"channel", "plan", "cohort"}:
            raise ValueError(f"by: rule 'columns among channel, plan, cohort': got {column!r}")
    table["mrr_retained"] = np.minimum(table["mrr_now"], table["mrr_base"])
    if "plan" in by:
        table["plan"] = _base_plan(movements, base, m0)
    for column in by:
        if column != "plan":
            table[column] = base[column]
    table["customers"] = 1
    keys = list(by) if by else [np.zeros(len(table), dtype=int)]
    out = table.groupby(keys, observed=True)[["customers", "mrr_base", "mrr_retained", "mrr_now"]].sum()
    out["grr"] = out["mrr_retained"] / out["mrr_base"]
    out["nrr"] = out["mrr_now"] / out["mrr_base"]
    if not by:
        out.index = pd.Index(["all"], name="segment")
    return out


def _base_plan(movements: pd.DataFrame, base: pd.DataFrame, m0: pd.Timestamp) -> pd.Series:
    """Plan of the base month's own MRR: the next month's row names it (a base customer always has one)."""
    nxt = movements.loc[movements["month"] == m0 + pd.DateOffset(months=1)].set_index("customer_id")["plan"]
    return nxt.reindex(base.index)


def cohort_retention(movements: pd.DataFrame, *, by: Sequence[str] = ()) -> pd.DataFrame:
    """Share of each cohort still paying k months after its first paying month.

    Parameters
    ----------
    movements : pandas.DataFrame
        From :func:`mrr_movements`.
    by : sequence of str
        Extra segment columns, e.g. ``("channel",)``, beside ``cohort``.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``cohort`` (and ``by``), a ``customers`` column (cohort size) and columns
        ``0, 1, 2, ...`` (months since the cohort's first month): the share of the cohort paying in
        that month (reactivated customers count again), NaN where the month lies after the last
        whole month.
    """
    paying = movements.loc[movements["mrr"] > 0]
    cohort_start = pd.to_datetime(paying["cohort"], format="%Y-%m")
    age = (paying["month"].dt.year - cohort_start.dt.year) * 12 + (paying["month"].dt.month - cohort_start.dt.month)
    keys = ["cohort", *by]
    counts = paying.assign(age=age.to_numpy()).groupby([*keys, "age"], observed=True).size().unstack(fill_value=0)
    size = counts[0]
    share = counts.div(size, axis=0)
    last = pd.Timestamp(movements.attrs.get("last_month", movements["month"].max()))
    starts = pd.to_datetime(share.index.get_level_values("cohort"), format="%Y-%m")
    observed = (last.year - starts.year) * 12 + (last.month - starts.month)
    ages = share.columns.to_numpy()
    share = share.where(ages[None, :] <= np.asarray(observed)[:, None])
    share.insert(0, "customers", size)
    return share


def cac_payback(
    movements: pd.DataFrame,
    customers: pd.DataFrame,
    *,
    gross_margin: float = 0.8,
) -> pd.DataFrame:
    """Months of gross margin that recover the CAC, per channel: observed and by the classic formula.

    Parameters
    ----------
    movements : pandas.DataFrame
        From :func:`mrr_movements`.
    customers : pandas.DataFrame
        ``customer_id``, ``channel`` and ``acquisition_cost`` (currency units); customers without
        a cost are left out.
    gross_margin : float
        m, share of revenue kept as margin, in (0, 1].

    Returns
    -------
    pandas.DataFrame
        Indexed by ``channel``: ``customers``, ``mean_cac``, ``first_mrr`` (mean MRR of the first
        paying month), ``payback_months_formula`` = mean_cac / (m x first_mrr) (no churn, no
        expansion: the classic SaaS figure), ``payback_months_observed``: the first k such that,
        over the customers observed for k months since their first paying month, the summed
        margin of those k months reaches their summed CAC (churn and expansion included; NaN if
        not reached within the history).

    Raises
    ------
    ValueError
        If ``gross_margin`` is outside (0, 1] or ``customers`` lacks a column.
    """
    if not 0 < gross_margin <= 1:
        raise ValueError(f"gross_margin: rule 'in (0, 1]': got {gross_margin!r}")
    missing = {"customer_id", "channel", "acquisition_cost"} - set(customers.columns)
    if missing:
        raise ValueError(
            f"customers: rule 'has columns customer_id, channel, acquisition_cost': missing {sorted(missing)}"
        )
    cac = customers.dropna(subset=["acquisition_cost"]).drop_duplicates("customer_id").set_index("customer_id")
    rows = movements.loc[isin_ids(movements["customer_id"], cac.index) & (movements["mrr"] != 0).to_numpy()]
    cohort_start = pd.to_datetime(rows["cohort"], format="%Y-%m")
    age = ((rows["month"].dt.year - cohort_start.dt.year) * 12
           + (rows["month"].dt.month - cohort_start.dt.month)).to_numpy()
    last = pd.Timestamp(movements.attrs.get("last_month", movements["month"].max()))
    first = rows.loc[age == 0].drop_duplicates("customer_id").set_index("customer_id")
    start = pd.to_datetime(first["cohort"], format="%Y-%m")
    # Months of a customer's history from its first paying month to the last whole month.
    observed = ((last.year - start.dt.year) * 12 + (last.month - start.dt.month) + 1).astype(np.int64)
    n_ages = int(observed.max()) + 1 if len(observed) else 1
    margin = pd.DataFrame({
        "channel": first["channel"].reindex(rows["customer_id"]).to_numpy(),
        "observed": observed.reindex(rows["customer_id"]).to_numpy(),
        "age": age,
        "margin": gross_margin * rows["mrr"].to_numpy(),
    }).dropna(subset=["observed"])
    out = []
    for channel, group in first.groupby("channel", observed=True):
        own = observed.loc[group.index]
        # S[o, a]: margin at age a of the customers observed o months; the margin of the first k
        # months of the customers observed >= k months is R[k, k - 1], R summed over o >= k, a < k.
        mine = margin.loc[margin["channel"] == channel]
        grid = np.zeros((n_ages + 1, n_ages))
        np.add.at(grid, (mine["observed"].to_numpy(dtype=np.int64), mine["age"].to_numpy(dtype=np.int64)),
                  mine["margin"].to_numpy())
        summed = np.cumsum(np.cumsum(grid[::-1], axis=0)[::-1], axis=1)
        cac_by_observed = np.bincount(own.to_numpy(), weights=cac.loc[group.index, "acquisition_cost"].to_numpy(),
                                      minlength=n_ages + 1)
        cac_summed = np.cumsum(cac_by_observed[::-1])[::-1]
        ks = np.arange(1, int(own.max()) + 1)
        reached = ks[summed[ks, ks - 1] >= cac_summed[ks]]
        mean_cac = float(cac.loc[group.index, "acquisition_cost"].mean())
        first_mrr = float(group["mrr"].mean())
        out.append({
            "channel": channel, "customers": len(group), "mean_cac": mean_cac, "first_mrr": first_mrr,
            "payback_months_formula": mean_cac / (gross_margin * first_mrr),
            "payback_months_observed": float(reached[0]) if len(reached) else np.nan,
        })
    return pd.DataFrame(out).set_index("channel")
