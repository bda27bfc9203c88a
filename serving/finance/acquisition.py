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
    scores: pd.DataFrame,
    *,
    max_age_days: float = 90,
    realised_margin: pd.Series | None = None,
    curves: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Expected value of a customer just acquired, per channel.

    With ``curves`` (the champion's spend curve of a customer just acquired through each channel,
    :func:`serving.lifetime.new_customer_curves`): the value from acquisition, ``clv_from_acquisition``
    = margin of the first order + discounted margin of the curve over the cap, the same machinery
    as every customer's CLV (``basis`` ``"champion"``). Without it, the older estimate: the mean,
    over customers acquired at most ``max_age_days`` before the scoring date, of the realised
    margin so far (if given) plus the predicted CLV (``basis`` ``"young customers"``).

    Parameters
    ----------
    scores : DataFrame
        Scores (n rows) with ``customer_id``, ``as_of``, ``acquired_at``, ``channel``, ``clv``
        (currency units).
    max_age_days : float
        Largest age at the scoring date, in days, of a customer counted as new.
    realised_margin : Series, optional
        Realised margin since acquisition (currency units) indexed by ``customer_id``; missing = 0.
    curves : DataFrame, optional
        Indexed by channel, with ``clv_from_acquisition``, ``first_order_margin``, ``clv_lower``,
        ``clv_upper`` (currency units), optionally ``basis`` (default ``"champion"``; the
        contractual model's curves of a subscription scoring say ``"contractual"``).

    Returns
    -------
    DataFrame
        Indexed by ``channel`` (missing channel = ``"unknown"``), columns ``customers`` (customers
        acquired at most ``max_age_days`` before the scoring date), ``new_customer_clv`` (currency
        units) and ``basis``; with ``curves`` also ``new_customer_clv_lower`` and ``_upper`` (80 %
        interval) for every channel of ``curves``. Without ``curves``, channels without young
        customers are absent.
    """
    as_of = pd.to_datetime(scores["as_of"]).dt.normalize()
    age = (as_of - pd.to_datetime(scores["acquired_at"]).dt.normalize()).dt.days
    young = scores.loc[(age <= max_age_days).to_numpy()]
    channel = young["channel"].astype("str").where(young["channel"].notna(), UNKNOWN_CHANNEL)
    if curves is not None:
        counts = channel.value_counts().reindex(curves.index, fill_value=0)
        first = curves["first_order_margin"].to_numpy(dtype=float)
        return pd.DataFrame(
            {"customers": counts.to_numpy(), "new_customer_clv": curves["clv_from_acquisition"].to_numpy(dtype=float),
             "new_customer_clv_lower": first + curves["clv_lower"].to_numpy(dtype=float),
             "new_customer_clv_upper": first + curves["clv_upper"].to_numpy(dtype=float),
             "basis": curves["basis"].to_numpy(dtype=object) if "basis" in curves else "champion"},
            index=pd.Index(curves.index, name="channel"),
        ).sort_index()  # fmt: skip
    value = young["clv"].to_numpy(dtype=float)
    if realised_margin is not None:
        value = value + young["customer_id"].map(realised_margin).fillna(0.0).to_numpy(dtype=float)
    out = pd.DataFrame({"channel": channel.to_numpy(), "value": value}).groupby("channel", sort=True)["value"]
    return pd.DataFrame({"customers": out.size(), "new_customer_clv": out.mean(), "basis": "young customers"})


def acquisition_budget(
    channels: list[Mapping],
    new_clv_by_channel: pd.DataFrame | Mapping[str, float],
    *,
    target_ratio: float,
) -> list[dict]:
    """LTV:CAC, maximum allowable CAC and a recommendation for each proposed channel and CAC.

    With V the new-customer CLV of the channel: LTV:CAC = V / CAC, maximum allowable CAC =
    max(V / target, 0), recommendation by :func:`serving.clv.recommendation` (the design's "CAC
    decisions"). ``channels.csv`` takes its acquisition decision from this function at each
    channel's mean CAC, so the two agree for the same channel and CAC.

    - A channel without a new-customer CLV is answered as unknown: ``new_customer_clv``,
      ``ltv_cac`` and ``max_allowable_cac`` None, recommendation ``unknown``, basis ``unknown``
      (no figure borrowed from other channels: a new channel's customers may be worth anything).
    - A CAC of 0: LTV:CAC is undefined (None); the recommendation is ``grow`` when V > 0 (any
      positive value meets any target at no cost) and ``cut`` otherwise.

    Parameters
    ----------
    channels : list of mapping
        Each with ``channel`` (str) and ``cac`` (float ≥ 0, the cost per acquired customer).
    new_clv_by_channel : DataFrame or mapping
        From :func:`new_customer_clv` (indexed by channel, column ``new_customer_clv``), or a plain
        ``{channel: clv}`` (currency units).
    target_ratio : float
        Target LTV:CAC (> 0).

    Returns
    -------
    list of dict
        Per input channel, in input order: ``channel``, ``cac``, ``new_customer_clv``, ``ltv_cac``,
        ``max_allowable_cac``, ``recommendation``, ``basis`` (``"channel"`` or ``"unknown"``) and
        ``note``.

    Raises
    ------
    KeyError
        A channel without ``channel`` or ``cac``.
    ValueError
        ``target_ratio`` ≤ 0 (with at least one channel), a ``cac`` that does not convert to float,
        or a negative or non-finite ``cac``.
    """
    if isinstance(new_clv_by_channel, pd.DataFrame):
        by_channel = new_clv_by_channel["new_customer_clv"].astype(float).to_dict()
    else:
        by_channel = {str(k): float(v) for k, v in new_clv_by_channel.items()}
    out = []
    for item in channels:
        name, cac = str(item["channel"]), float(item["cac"])
        if not (np.isfinite(cac) and cac >= 0):
            raise ValueError(f"channel {name!r}: rule 'cac is a finite number >= 0': got {cac}")
        if name not in by_channel:
            known = ", ".join(sorted(by_channel)) or "none"
            out.append({
                "channel": name, "cac": cac, "new_customer_clv": None, "ltv_cac": None, "max_allowable_cac": None,
                "recommendation": "unknown", "basis": "unknown",
                "note": f"no new-customer CLV for channel '{name}' (channels known: {known}): no recommendation",
            })  # fmt: skip
            continue
        value = by_channel[name]
        max_cac = float(C.max_allowable_cac(value, target_ratio=target_ratio))
        if cac == 0:
            ratio, decision = None, "grow" if value > 0 else "cut"
            note = "CAC 0: LTV:CAC is undefined; " + ("any positive CLV meets the target" if value > 0 else "the CLV is not positive")
        else:
            ratio = float(C.ltv_cac_ratio(value, cac))
            decision, note = str(C.recommendation(ratio, target_ratio=target_ratio)[()]), ""
        out.append({
            "channel": name, "cac": cac, "new_customer_clv": value, "ltv_cac": ratio, "max_allowable_cac": max_cac,
            "recommendation": decision, "basis": "channel", "note": note,
        })  # fmt: skip
    return out
