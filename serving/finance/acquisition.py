"""The value of a customer just acquired, per channel, and what that allows to pay for one.

:func:`new_customer_clv` is computed by ``clvcast budget`` (``new_customer_clv.csv``);
:func:`acquisition_budget` answers the service's ``POST /acquisition_budget`` from that table, so
this module stays light (numpy, pandas and the CLV arithmetic only).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from serving import clv as C

__all__ = ["UNKNOWN_CHANNEL", "acquisition_budget", "new_customer_clv"]

#: Label of customers without an acquisition channel.
UNKNOWN_CHANNEL = "unknown"


def new_customer_clv(
    scores: pd.DataFrame, *, max_age_days: float = 90, realised_margin: pd.Series | None = None
) -> pd.DataFrame:
    """Expected value of a customer just acquired, per channel.

    The mean, over customers acquired at most ``max_age_days`` before the scoring date, of their
    value from acquisition: the realised margin so far (if given) plus the predicted CLV. Young
    customers stand in for new ones because the models scored them at (nearly) acquisition age.

    Parameters
    ----------
    scores : DataFrame
        Scores (n rows) with ``customer_id``, ``as_of``, ``acquired_at``, ``channel``, ``clv``
        (currency units).
    max_age_days : float
        Largest age at the scoring date, in days, of a customer counted as new.
    realised_margin : Series, optional
        Realised margin since acquisition (currency units) indexed by ``customer_id``; missing = 0.

    Returns
    -------
    DataFrame
        Indexed by ``channel`` (missing channel = ``"unknown"``), columns ``customers`` and
        ``new_customer_clv`` (currency units); channels without young customers are absent.
    """
    as_of = pd.to_datetime(scores["as_of"]).dt.normalize()
    age = (as_of - pd.to_datetime(scores["acquired_at"]).dt.normalize()).dt.days
    young = scores.loc[(age <= max_age_days).to_numpy()]
    value = young["clv"].to_numpy(dtype=float)
    if realised_margin is not None:
        value = value + young["customer_id"].map(realised_margin).fillna(0.0).to_numpy(dtype=float)
    channel = young["channel"].astype("str").where(young["channel"].notna(), UNKNOWN_CHANNEL)
    out = pd.DataFrame({"channel": channel.to_numpy(), "value": value}).groupby("channel", sort=True)["value"]
    return pd.DataFrame({"customers": out.size(), "new_customer_clv": out.mean()})


def acquisition_budget(
    channels: list[Mapping],
    new_clv_by_channel: pd.DataFrame | Mapping[str, float],
    *,
    target_ratio: float,
) -> list[dict]:
    """LTV:CAC, maximum allowable CAC and a recommendation for each proposed channel and CAC.

    With V the new-customer CLV of the channel: LTV:CAC = V / CAC, maximum allowable CAC =
    max(V / target, 0), recommendation by :func:`serving.clv.recommendation` (the design's "CAC
    decisions").

    Parameters
    ----------
    channels : list of mapping
        Each with ``channel`` (str) and ``cac`` (float ≥ 0, the cost per acquired customer).
    new_clv_by_channel : DataFrame or mapping
        From :func:`new_customer_clv` (columns ``customers``, ``new_customer_clv``), or a plain
        ``{channel: clv}``.
    target_ratio : float
        Target LTV:CAC.

    Returns
    -------
    list of dict
        Per input channel: ``channel``, ``cac``, ``new_customer_clv``, ``ltv_cac``,
        ``max_allowable_cac``, ``recommendation``, ``basis`` (``"channel"``, or ``"overall"`` for a
        channel without recently acquired customers, which gets the customer-weighted mean over all
        channels) and ``note``.

    Raises
    ------
    KeyError
        A channel without ``channel`` or ``cac``.
    ValueError
        ``target_ratio`` ≤ 0 (with at least one channel), or a ``cac`` that does not convert to float.
    """
    if isinstance(new_clv_by_channel, pd.DataFrame):
        values = new_clv_by_channel["new_customer_clv"].astype(float)
        weights = new_clv_by_channel["customers"].astype(float)
        overall = float(np.average(values, weights=weights)) if weights.sum() > 0 else float("nan")
        by_channel = values.to_dict()
    else:
        by_channel = {str(k): float(v) for k, v in new_clv_by_channel.items()}
        overall = float(np.mean(list(by_channel.values()))) if by_channel else float("nan")
    out = []
    for item in channels:
        name, cac = str(item["channel"]), float(item["cac"])
        known = name in by_channel
        value = by_channel[name] if known else overall
        ratio = float(C.ltv_cac_ratio(value, cac))
        out.append(
            {
                "channel": name,
                "cac": cac,
                "new_customer_clv": value,
                "ltv_cac": ratio,
                "max_allowable_cac": float(C.max_allowable_cac(value, target_ratio=target_ratio)),
                "recommendation": str(C.recommendation(ratio, target_ratio=target_ratio)[()]),
                "basis": "channel" if known else "overall",
                "note": ""
                if known
                else f"no recently acquired customers from channel '{name}': used the mean over all channels",
            }
        )
    return out
