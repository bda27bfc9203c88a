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
from serving.contractual import (
    ContractualModel,
    ContractualSettings,
    cost_per_month,
    fit_contractual,
    new_subscriber_clv,
    score_contractual,
)
from serving.finance.saas import (
    cac_payback,
    churn_rates,
    cohort_retention,
    mrr_bridge,
    mrr_movements,
    net_revenue_retention,
)
from serving.finance.acquisition import UNKNOWN_CHANNEL
from serving.scores import Scores
from training.config import Config

__all__ = [
    "CLV_CROSS_CHECK", "SAAS_TABLES", "clv_by_channel", "contractual_settings", "fit_subscription_model",
    "new_subscriber_curves", "saas_tables", "scoring_model", "subscription_scores", "write_frames",
]

#: Files ``clvcast budget`` writes in subscription mode, ``<name>.csv``, in this order.
SAAS_TABLES = (
    "mrr_bridge", "churn_by_channel", "churn_by_plan", "churn_by_cohort", "retention", "cohort_retention",
    "cac_payback", "new_subscriber_clv",
)
#: With subscription scores, :func:`saas_tables` adds this one: the scores' contractual CLV beside the
#: classic ARPU x margin / churn, per channel.
CLV_CROSS_CHECK = "clv_by_channel"


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
        cost_to_serve=cost_per_month(config.clv.cost_to_serve, h),
        annual_discount_rate=config.clv.annual_discount_rate,
        billing_months=sub.billing_months,
        plans=dict(sub.plans) or None,
        segment_by=tuple(sub.segment_by),
        min_churned=sub.min_churned,
        grace_days=sub.grace_days,
        late_tenure_periods=sub.late_tenure_periods,
        survival=sub.survival,
        hazard_bands=tuple(sub.hazard_bands),
        returns=sub.returns,
    )


def fit_subscription_model(tables: Tables, *, cutoff, config: Config, horizon_days: int | None = None):
    """The contractual model of the configuration fitted on the history up to a cutoff.

    Returns
    -------
    serving.contractual.ContractualModel

    Raises
    ------
    ValueError
        If no subscription ended by the cutoff, or a setting breaks its rule.
    """
    return fit_contractual(tables, cutoff=cutoff, settings=contractual_settings(config, horizon_days=horizon_days))


def scoring_model(tables: Tables, *, cutoff, config: Config, champion):
    """The contractual model a scoring uses, or None for a retail scoring.

    The mode is the configuration's ``business``, else (``auto``) the champion's: its training run
    detected or was told it. The model is fitted on the history up to ``cutoff`` with the champion's
    horizon.

    Parameters
    ----------
    tables : Tables
    cutoff : date-like
    config : Config
    champion : training.registry.Champion

    Returns
    -------
    serving.contractual.ContractualModel or None
    """
    business = config.business if config.business != "auto" else champion.serving.config.business
    if business != "subscription":
        return None
    return fit_subscription_model(tables, cutoff=cutoff, config=config, horizon_days=champion.horizon_days)


def subscription_scores(
    tables: Tables, *, cutoff, config: Config, horizon_days: int | None = None, model=None
) -> pd.DataFrame:
    """Contractual churn, spend, lifetime and CLV of every customer with an invoice, as of a cutoff.

    Parameters
    ----------
    tables : Tables
        Invoices, ``cancel`` events and customers (validated contract tables).
    cutoff : date-like
    config : Config
    horizon_days : int, optional
        H; default ``training.horizon_days``.
    model : ContractualModel, optional
        Fitted already (:func:`fit_subscription_model`); default: fitted here.

    Returns
    -------
    pandas.DataFrame
        :func:`serving.contractual.score_contractual`'s frame with ``customer_id`` as a column,
        without the curves (the scores hold them).

    Raises
    ------
    ValueError
        If no subscription ended by the cutoff, or a setting breaks its rule.
    """
    model = model or fit_subscription_model(tables, cutoff=cutoff, config=config, horizon_days=horizon_days)
    frame = score_contractual(model, tables).reset_index()
    return frame.drop(columns=["expected_spend_curve", "expected_margin_curve"])


def saas_tables(
    tables: Tables, *, cutoff, config: Config, horizon_days: int | None = None, scores: Scores | None = None
) -> dict[str, pd.DataFrame]:
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
    scores : Scores, optional
        Subscription scores of the same cutoff: adds :data:`CLV_CROSS_CHECK` (:func:`clv_by_channel`).

    Returns
    -------
    dict of str to pandas.DataFrame
        One frame per name of :data:`SAAS_TABLES` (and :data:`CLV_CROSS_CHECK`), index reset into
        columns.
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
    if scores is not None:
        out[CLV_CROSS_CHECK] = clv_by_channel(scores.frame)
    return {name: frame.reset_index() if name != "retention" else frame for name, frame in out.items()}


def clv_by_channel(frame: pd.DataFrame) -> pd.DataFrame:
    """The contractual CLV of the running subscribers beside the classic formula, per channel.

    Parameters
    ----------
    frame : pandas.DataFrame
        Subscription scores (``channel``, ``subscription_state``, ``mrr``, ``churn_probability``,
        ``clv``, ``clv_classic``).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``channel`` (``unknown`` when missing), then ``all``: ``subscribers`` (active or
        reactivated), ``mrr`` (their total, currency units per month), ``clv`` (mean contractual
        lifetime CLV, discounted margin over the survival curve), ``clv_classic`` (mean of
        m x MRR / the segment's monthly logo churn, undiscounted) and ``classic_over_contractual``.
    """
    running = frame.loc[frame["subscription_state"].isin(["active", "reactivated"]).to_numpy()]
    channel = running["channel"].astype(object).where(running["channel"].notna(), UNKNOWN_CHANNEL)
    rows = []
    for name, group in [*running.groupby(channel.to_numpy(), sort=True), ("all", running)]:
        clv, classic = float(group["clv"].mean()), float(group["clv_classic"].mean())
        rows.append({"channel": name, "subscribers": len(group), "mrr": float(group["mrr"].sum()), "clv": clv,
                     "clv_classic": classic, "classic_over_contractual": classic / clv if clv > 0 else float("nan")})
    return pd.DataFrame(rows).set_index("channel")


def new_subscriber_curves(tables: Tables, scores: Scores) -> pd.DataFrame:
    """The CLV of a customer who subscribes on the scoring date, per channel, for ``clvcast budget``.

    From the contractual model the scores hold (scoring as of their date with their horizon and
    CLV arithmetic: :func:`serving.contractual.new_subscriber_clv`), in the frame
    :func:`serving.finance.compute_budget` takes as ``new_customers``: ``new_customer_clv.csv`` and
    ``POST /acquisition_budget`` then carry the same CLV as the scores.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``channel``: ``clv_from_acquisition`` (from signup, first invoice included),
        ``first_order_margin`` (the first invoice's), ``clv_lower`` / ``clv_upper`` (after the first
        invoice), ``basis`` ``"contractual"``; currency units.

    Raises
    ------
    ValueError
        If the scores are not a subscription scoring.
    """
    run = scores.run
    if run.business != "subscription" or run.contractual is None:
        raise ValueError("scores: rule 'a subscription scoring (clvcast score with business: subscription)': "
                         f"got business {run.business!r}")
    model = ContractualModel.from_dict(run.contractual).scoring_at(
        as_of=run.as_of, horizon_days=run.horizon_days, gross_margin=run.clv.gross_margin,
        cost_to_serve_per_horizon=run.clv.cost_to_serve, annual_discount_rate=run.clv.annual_discount_rate,
    )
    table = new_subscriber_clv(model, tables, interval_coverage=run.interval_coverage)
    first = table["first_invoice_margin"]
    return pd.DataFrame({
        "clv_from_acquisition": table["clv"], "first_order_margin": first,
        "clv_lower": table["clv_lower"] - first, "clv_upper": table["clv_upper"] - first, "basis": "contractual",
    }, index=table.index)


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
