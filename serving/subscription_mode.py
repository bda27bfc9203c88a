"""Subscription mode (``business: subscription``): the contractual scores and the SaaS finance tables.

What ``clvcast score`` and ``clvcast budget`` add for a subscription business, as frames
(:func:`subscription_scores`, :func:`saas_tables`) and as CSV files (:func:`write_frames`). The
arithmetic lives in :mod:`serving.contractual` and :mod:`serving.finance.saas`; this module only
turns the configuration into their settings and names the outputs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.contract import Tables
from serving.contractual import ContractualSettings, fit_contractual, new_subscriber_clv, score_contractual
from serving.finance.saas import (
    cac_payback,
    churn_rates,
    cohort_retention,
    mrr_bridge,
    mrr_movements,
    net_revenue_retention,
)
from training.config import Config

__all__ = ["SAAS_TABLES", "contractual_settings", "saas_tables", "subscription_scores", "write_frames"]

_MEAN_MONTH_DAYS = 365.2425 / 12
#: Files ``clvcast budget`` writes in subscription mode, ``<name>.csv``, in this order.
SAAS_TABLES = (
    "mrr_bridge", "churn_by_channel", "churn_by_plan", "churn_by_cohort", "retention", "cohort_retention",
    "cac_payback", "new_subscriber_clv",
)


def contractual_settings(config: Config, *, horizon_days: int | None = None) -> ContractualSettings:
    """The contractual model's settings from the configuration.

    H is ``training.horizon_days`` (or ``horizon_days``: the scores' own); m and d come from
    ``clv``; ``clv.cost_to_serve`` (per active customer per horizon) becomes a cost per month,
    ``c * 30.44 / H``; billing, plans and segments from ``subscription``.

    Parameters
    ----------
    config : Config
    horizon_days : int, optional

    Returns
    -------
    ContractualSettings

    Raises
    ------
    ValueError
        If a setting breaks a rule of :class:`~serving.contractual.ContractualSettings` (a margin of
        0, a discount rate outside (0, 1)).
    """
    h = int(horizon_days or config.training.horizon_days)
    sub = config.subscription
    return ContractualSettings(
        horizon_days=h,
        gross_margin=config.clv.gross_margin,
        cost_to_serve=config.clv.cost_to_serve * _MEAN_MONTH_DAYS / h,
        annual_discount_rate=config.clv.annual_discount_rate,
        billing_months=sub.billing_months,
        plans=dict(sub.plans) or None,
        segment_by=tuple(sub.segment_by),
        min_churned=sub.min_churned,
        grace_days=sub.grace_days,
        late_tenure_periods=sub.late_tenure_periods,
    )


def subscription_scores(tables: Tables, *, cutoff, config: Config, horizon_days: int | None = None) -> pd.DataFrame:
    """Contractual churn, spend, lifetime and CLV of every customer with an invoice, as of a cutoff.

    Parameters
    ----------
    tables : Tables
        Invoices, ``cancel`` events and customers (validated contract tables).
    cutoff : date-like
    config : Config
    horizon_days : int, optional
        H; default ``training.horizon_days``.

    Returns
    -------
    pandas.DataFrame
        :func:`serving.contractual.score_contractual`'s frame with ``customer_id`` as a column.

    Raises
    ------
    ValueError
        If no subscription ended by the cutoff, or a setting breaks its rule.
    """
    settings = contractual_settings(config, horizon_days=horizon_days)
    model = fit_contractual(tables, cutoff=cutoff, settings=settings)
    return score_contractual(model, tables).reset_index()


def saas_tables(tables: Tables, *, cutoff, config: Config, horizon_days: int | None = None) -> dict[str, pd.DataFrame]:
    """The SaaS finance tables of :data:`SAAS_TABLES` as of a cutoff.

    ``retention`` holds GRR and NRR over 12 months for every base month with 12 months after it,
    for the whole book and per channel; the churn tables pool the 12 months before the cutoff.

    Parameters
    ----------
    tables : Tables
    cutoff : date-like
    config : Config
    horizon_days : int, optional
        H of the new subscribers' churn probability.

    Returns
    -------
    dict of str to pandas.DataFrame
        One frame per name of :data:`SAAS_TABLES`, index reset into columns.
    """
    settings = contractual_settings(config, horizon_days=horizon_days)
    movements = mrr_movements(tables, cutoff=cutoff, billing_months=settings.billing_months, plans=settings.plans)
    last = pd.Timestamp(movements.attrs["last_month"])
    since = last - pd.DateOffset(months=11)
    retention = []
    for base in pd.date_range(movements["month"].min(), last - pd.DateOffset(months=12), freq="MS"):
        for by in ((), ("channel",)):
            frame = net_revenue_retention(movements, base_month=base, months=12, by=by).reset_index()
            frame = frame.rename(columns={"segment": "channel"}) if not by else frame
            retention.append(frame.assign(base_month=base))
    out = {
        "mrr_bridge": mrr_bridge(movements),
        "churn_by_channel": churn_rates(movements, by=("channel",), since=since),
        "churn_by_plan": churn_rates(movements, by=("plan",), since=since),
        "churn_by_cohort": churn_rates(movements, by=("cohort",), since=since),
        "retention": (pd.concat(retention, ignore_index=True) if retention else pd.DataFrame()),
        "cohort_retention": cohort_retention(movements),
        "cac_payback": (cac_payback(movements, tables.customers, gross_margin=settings.gross_margin)
                        if tables.customers is not None and "acquisition_cost" in tables.customers else pd.DataFrame()),
        "new_subscriber_clv": new_subscriber_clv(fit_contractual(tables, cutoff=cutoff, settings=settings), tables),
    }
    return {name: frame.reset_index() if name != "retention" else frame for name, frame in out.items()}


def write_frames(frames: dict[str, pd.DataFrame], out_dir: str | Path) -> dict[str, Path]:
    """Write each frame as ``<out_dir>/<name>.csv`` (created if missing) without a positional index.

    Returns
    -------
    dict of str to Path
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, frame in frames.items():
        path = out / f"{name}.csv"
        frame.to_csv(path, index=False)
        written[name] = path
    return written
