"""The classic models clvcast is judged against, predicted for the same customers as clvcast.

- ``btyd``: BG/NBD + Gamma-Gamma fitted on the history up to the cutoff only. Expected spend =
  expected purchase days in (cutoff, cutoff + H] × expected value of a purchase day; churn score =
  minus the expected purchase days.
- ``pareto``: Pareto/NBD + Gamma-Gamma fitted on the history up to the cutoff only, the same way.
- ``naive``: the historical spend rate × H, i.e. spend to date / tenure_days × H; churn score =
  minus that forecast (the customers who spent fastest are the least likely to stop).

Both are pure functions of the transactions and the cutoff: nothing after the cutoff is read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from features.btyd import (
    BGNBDParams,
    GammaGammaParams,
    ParetoNBDParams,
    bgnbd_expected_purchases,
    bgnbd_expected_purchases_new,
    fit_bgnbd,
    fit_gamma_gamma,
    fit_pareto_nbd,
    gamma_gamma_expected_value,
    pareto_nbd_expected_purchases,
    pareto_nbd_expected_purchases_new,
    summary_from_transactions,
)

BASELINES = ("btyd", "pareto", "naive")


@dataclass(frozen=True)
class BaselineForecast:
    """One baseline's forecast for a set of customers.

    Attributes
    ----------
    expected_spend : Series
        Spend over the horizon, currency units, indexed by ``customer_id``.
    churn_score : Series
        Higher = more likely to churn (not a probability).
    params : dict
        Fitted parameters, for the record.
    """

    expected_spend: pd.Series
    churn_score: pd.Series
    params: dict


def _history(transactions: pd.DataFrame, cutoff) -> pd.DataFrame:
    end = pd.Timestamp(cutoff).normalize() + pd.Timedelta(days=1)
    return transactions.loc[transactions["timestamp"] < end]


def btyd_forecast(
    transactions: pd.DataFrame,
    *,
    cutoff,
    horizon_days: int,
    customers: pd.Index,
    time_unit_days: float = 7.0,
    fitted: tuple[BGNBDParams, GammaGammaParams] | None = None,
) -> BaselineForecast:
    """BG/NBD + Gamma-Gamma expected spend over (cutoff, cutoff + H] for ``customers``.

    Customers in ``customers`` without a purchase before the cutoff get the forecast of a customer
    who just arrived: BG/NBD's E[X(H)] for a new customer times the population mean purchase value.

    Parameters
    ----------
    fitted : (BGNBDParams, GammaGammaParams), optional
        Parameters already fitted on this history in ``time_unit_days`` (the feature code fits the
        same models at the same cutoff); fitted here when omitted.
    """
    summary = summary_from_transactions(_history(transactions, cutoff), cutoff=cutoff, time_unit_days=time_unit_days)
    if summary.empty:
        raise ValueError(f"no purchase before the end of {pd.Timestamp(cutoff).date()}: BG/NBD cannot be fitted")
    x, tx, T, m = (summary[c].to_numpy(float) for c in ("frequency", "recency", "T", "monetary_value"))
    bg, gg = fitted if fitted is not None else (fit_bgnbd(x, tx, T), fit_gamma_gamma(x, m))
    t = horizon_days / time_unit_days
    return _spend_forecast(
        summary, customers, gg,
        purchases=bgnbd_expected_purchases(bg, t, x, tx, T),
        new_purchases=float(np.asarray(bgnbd_expected_purchases_new(bg, t))),
        params={"bgnbd": asdict(bg), "gamma_gamma": asdict(gg)},
    )  # fmt: skip


def _spend_forecast(
    summary: pd.DataFrame, customers: pd.Index, gg: GammaGammaParams, *, purchases: np.ndarray,
    new_purchases: float, params: dict,
) -> BaselineForecast:  # fmt: skip
    """Expected purchases (per row of ``summary``) times Gamma-Gamma's expected value, for ``customers``.

    A customer of ``customers`` absent from ``summary`` (no purchase before the cutoff) gets
    ``new_purchases`` times the population mean purchase value.
    """
    m = summary["monetary_value"].to_numpy(float)
    x = summary["frequency"].to_numpy(float)
    value = pd.Series(gamma_gamma_expected_value(gg, x, m), index=summary.index)
    population_value = float(np.asarray(gamma_gamma_expected_value(gg, np.zeros(1), np.zeros(1)))[0])
    purchases = pd.Series(purchases, index=summary.index).reindex(customers).fillna(new_purchases)
    value = value.reindex(customers).fillna(population_value)
    return BaselineForecast(
        expected_spend=(purchases * value).rename("expected_spend"),
        churn_score=(-purchases).rename("churn_score"),
        params=params,
    )


def pareto_forecast(
    transactions: pd.DataFrame,
    *,
    cutoff,
    horizon_days: int,
    customers: pd.Index,
    time_unit_days: float = 7.0,
    gamma_gamma: GammaGammaParams | None = None,
    pareto: ParetoNBDParams | None = None,
) -> BaselineForecast:
    """Pareto/NBD + Gamma-Gamma expected spend over (cutoff, cutoff + H] for ``customers``.

    Expected purchase days (Fader and Hardie 2005, "A note on deriving the Pareto/NBD model",
    Section 6) times the Gamma-Gamma expected value of a purchase day; churn score = minus the
    expected purchase days. Customers without a purchase before the cutoff get a new customer's
    forecast, as in :func:`btyd_forecast`.

    Parameters
    ----------
    gamma_gamma : GammaGammaParams, optional
        Already fitted on this history (the BTYD features fit the same model); fitted here when omitted.
    pareto : ParetoNBDParams, optional
        Already fitted on this history in ``time_unit_days`` (the lifetime model fits the same
        model); fitted here when omitted.
    """
    summary = summary_from_transactions(_history(transactions, cutoff), cutoff=cutoff, time_unit_days=time_unit_days)
    if summary.empty:
        raise ValueError(f"no purchase before the end of {pd.Timestamp(cutoff).date()}: Pareto/NBD cannot be fitted")
    x, tx, T, m = (summary[c].to_numpy(float) for c in ("frequency", "recency", "T", "monetary_value"))
    pn = pareto if pareto is not None else fit_pareto_nbd(x, tx, T)
    gg = gamma_gamma if gamma_gamma is not None else fit_gamma_gamma(x, m)
    t = horizon_days / time_unit_days
    return _spend_forecast(
        summary, customers, gg,
        purchases=pareto_nbd_expected_purchases(pn, t, x, tx, T),
        new_purchases=float(np.asarray(pareto_nbd_expected_purchases_new(pn, t))),
        params={"pareto_nbd": asdict(pn), "gamma_gamma": asdict(gg)},
    )  # fmt: skip


def naive_forecast(transactions: pd.DataFrame, *, cutoff, horizon_days: int, customers: pd.Index) -> BaselineForecast:
    """Historical spend rate × H: net spend to date / tenure × H, for ``customers``.

    The rate is per observed day: from the first purchase day through the cutoff day, both
    included (``tenure_days + 1``), so a customer who arrived on the cutoff day has one observed day
    rather than a division by zero. Customers without a transaction before the cutoff forecast 0.
    """
    history = _history(transactions, cutoff)
    cutoff_day = pd.Timestamp(cutoff).normalize()
    per = history.groupby("customer_id", observed=True).agg(total=("amount", "sum"), first=("timestamp", "min"))
    observed_days = (cutoff_day - per["first"].dt.floor("D")).dt.days + 1
    spend = (per["total"].clip(lower=0) / observed_days * horizon_days).reindex(customers).fillna(0.0)
    return BaselineForecast(
        expected_spend=spend.rename("expected_spend"),
        churn_score=(-spend).rename("churn_score"),
        params={},
    )


def baseline_forecasts(
    transactions: pd.DataFrame,
    *,
    cutoff,
    horizon_days: int,
    customers: pd.Index,
    time_unit_days: float = 7.0,
    fitted: tuple[BGNBDParams, GammaGammaParams] | None = None,
    pareto: ParetoNBDParams | None = None,
) -> dict[str, BaselineForecast]:
    """The baselines, keyed by name (``btyd``, ``pareto``, ``naive``); ``fitted`` as in :func:`btyd_forecast`,
    ``pareto`` as in :func:`pareto_forecast`."""
    return {
        "btyd": btyd_forecast(
            transactions,
            cutoff=cutoff,
            horizon_days=horizon_days,
            customers=customers,
            time_unit_days=time_unit_days,
            fitted=fitted,
        ),
        "pareto": pareto_forecast(
            transactions,
            cutoff=cutoff,
            horizon_days=horizon_days,
            customers=customers,
            time_unit_days=time_unit_days,
            gamma_gamma=fitted[1] if fitted is not None else None,
            pareto=pareto,
        ),
        "naive": naive_forecast(transactions, cutoff=cutoff, horizon_days=horizon_days, customers=customers),
    }
