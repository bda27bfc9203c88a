"""Segments for CRM: CLV tiers and RFM segments, relative to a reference population.

A :class:`SegmentReference` holds the tier thresholds and RFM quintile edges of one population (a
batch run's scores), so that a single customer scored by the service lands in the same tier as in
that batch run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_TIER_TOP_SHARES",
    "RFM_SEGMENTS",
    "RFM_SEGMENT_GRID",
    "SegmentReference",
    "clv_tier",
    "clv_tier_thresholds",
    "quintile_edges",
    "quintile_score",
    "rfm_scores",
    "rfm_segment",
    "tier_labels",
]

#: Default CLV tiers: the top 10 %, the next 10 %, the next 30 %, the bottom 50 % of customers.
DEFAULT_TIER_TOP_SHARES = (0.10, 0.20, 0.50)

#: RFM segment of each (R score, FM score) cell, both scores 1..5, rows R = 1..5, columns FM = 1..5.
#: The usual RFM grid: recent and frequent = champions; frequent but lapsing = at risk / cannot lose;
#: recent one-time buyers = new; neither = hibernating.
RFM_SEGMENT_GRID = (
    ("hibernating", "hibernating", "at_risk", "at_risk", "cannot_lose"),  # R = 1
    ("hibernating", "hibernating", "at_risk", "at_risk", "cannot_lose"),  # R = 2
    ("about_to_sleep", "about_to_sleep", "need_attention", "loyal", "loyal"),  # R = 3
    ("promising", "potential_loyalist", "potential_loyalist", "loyal", "loyal"),  # R = 4
    ("new", "potential_loyalist", "potential_loyalist", "champions", "champions"),  # R = 5
)
RFM_SEGMENTS = (
    "champions", "loyal", "potential_loyalist", "new", "promising", "need_attention",
    "about_to_sleep", "at_risk", "cannot_lose", "hibernating",
)  # fmt: skip


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


def clv_tier_thresholds(clv, *, top_shares: tuple[float, ...] = DEFAULT_TIER_TOP_SHARES) -> np.ndarray:
    """CLV values that open each tier: the (1 − share) quantiles of a reference population.

    Keep the thresholds of the scored base to tier single customers later (e.g. in the service)
    against the same population.

    Parameters
    ----------
    clv : array-like
        CLV of the reference population.
    top_shares : tuple of float
        Increasing cumulative shares from the top, e.g. (0.1, 0.2, 0.5).

    Returns
    -------
    ndarray
        Decreasing thresholds, one per share.
    """
    shares = np.asarray(top_shares, dtype=float)
    if not (np.all(np.diff(shares) > 0) and shares[0] > 0 and shares[-1] < 1):
        raise ValueError(f"top_shares must increase strictly inside (0, 1), got {top_shares}")
    return np.quantile(_arr(clv), 1.0 - shares)


def tier_labels(top_shares: tuple[float, ...] = DEFAULT_TIER_TOP_SHARES) -> list[str]:
    """Tier names from the shares: (0.1, 0.2, 0.5) → top 10%, next 10%, next 30%, bottom 50%."""
    pct = [round(100 * s) for s in top_shares]
    labels = [f"top {pct[0]}%"] + [f"next {b - a}%" for a, b in zip(pct, pct[1:])]
    return labels + [f"bottom {100 - pct[-1]}%"]


def clv_tier(
    clv, thresholds=None, *, top_shares: tuple[float, ...] = DEFAULT_TIER_TOP_SHARES
) -> np.ndarray:
    """CLV tier of each customer.

    A customer is in the first tier whose threshold its CLV reaches (CLV ≥ threshold); ties at a
    threshold go to the higher tier.

    Parameters
    ----------
    clv : array-like
        CLV per customer.
    thresholds : array-like, optional
        From :func:`clv_tier_thresholds` of a reference population; default: of ``clv`` itself.
    top_shares : tuple of float
        Shares that name the tiers (and define the default thresholds).

    Returns
    -------
    ndarray of str
        Labels from :func:`tier_labels`, e.g. ``"top 10%"``.
    """
    values = _arr(clv)
    if thresholds is None:
        thresholds = clv_tier_thresholds(values, top_shares=top_shares)
    thresholds = _arr(thresholds)
    # Number of thresholds above the value = tier index: 0 for the top tier.
    index = np.searchsorted(-thresholds, -values, side="right")
    return np.asarray(tier_labels(top_shares), dtype=object)[index]


def quintile_edges(values) -> np.ndarray:
    """The 20/40/60/80 % quantiles of a reference population, the edges of quintile scores."""
    return np.quantile(_arr(values), [0.2, 0.4, 0.6, 0.8])


def quintile_score(values, edges=None) -> np.ndarray:
    """Quintile score 1..5: 1 + the number of edges strictly below the value.

    Tied values always share a score; a mass at the bottom (say 60 % one-time buyers with frequency
    0) all score 1, and the next value up jumps to the score its rank deserves.

    Parameters
    ----------
    values : array-like
        Values to score (higher = better).
    edges : array-like, optional
        From :func:`quintile_edges` of a reference population; default: of ``values`` itself.

    Returns
    -------
    ndarray of int
        Scores in 1..5.
    """
    v = _arr(values)
    edges = quintile_edges(v) if edges is None else _arr(edges)
    return 1 + np.searchsorted(edges, v, side="left")


def rfm_scores(recency_days, frequency, monetary_value, *, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """R, F and M quintile scores (1..5, 5 = best).

    R scores the negated recency (recent = high), F the frequency, M the monetary value.

    Parameters
    ----------
    recency_days, frequency, monetary_value : array-like
        The RFM vocabulary of the design (days since last purchase, repeat purchase days, mean spend
        per purchase day).
    reference : DataFrame, optional
        Population whose quintiles define the scores (columns ``recency_days``, ``frequency``,
        ``monetary_value``); default: the inputs themselves.

    Returns
    -------
    DataFrame
        Columns ``r_score``, ``f_score``, ``m_score`` (int).
    """
    r, f, m = _arr(recency_days), _arr(frequency), _arr(monetary_value)
    ref = (
        (r, f, m)
        if reference is None
        else (_arr(reference["recency_days"]), _arr(reference["frequency"]), _arr(reference["monetary_value"]))
    )
    return pd.DataFrame(
        {
            "r_score": quintile_score(-r, quintile_edges(-ref[0])),
            "f_score": quintile_score(f, quintile_edges(ref[1])),
            "m_score": quintile_score(m, quintile_edges(ref[2])),
        }
    )


def rfm_segment(r_score, f_score, m_score) -> np.ndarray:
    """RFM segment name from the three scores.

    F and M are combined into FM = round-half-up((F + M) / 2); the cell (R, FM) of
    ``RFM_SEGMENT_GRID`` names the segment: e.g. R ≥ 4 and FM ≥ 4 champions (R = 4 only with
    FM ≥ 4 is loyal), R = 5 with FM = 1 new, R ≤ 2 with FM ≤ 2 hibernating, R ≤ 2 with FM 3–4 at
    risk, R ≤ 2 with FM = 5 cannot lose.

    Returns
    -------
    ndarray of str
        One of ``RFM_SEGMENTS``.
    """
    r = np.asarray(r_score, dtype=int)
    fm = np.floor((np.asarray(f_score, dtype=float) + np.asarray(m_score, dtype=float)) / 2 + 0.5).astype(int)
    if np.any((r < 1) | (r > 5) | (fm < 1) | (fm > 5)):
        raise ValueError("RFM scores must be in 1..5")
    return np.asarray(RFM_SEGMENT_GRID, dtype=object)[r - 1, fm - 1]


@dataclass(frozen=True)
class SegmentReference:
    """Tier thresholds and RFM quintile edges of a reference population.

    Parameters
    ----------
    clv_thresholds : tuple of float
        Lifetime CLV that opens each tier, decreasing (:func:`clv_tier_thresholds`).
    recency_edges : tuple of float
        Quintile edges of ``-recency_days`` (recent = high score).
    frequency_edges, monetary_edges : tuple of float
        Quintile edges of ``frequency`` and ``monetary_value``.
    top_shares : tuple of float
        Cumulative tier shares from the top that name the tiers.
    """

    clv_thresholds: tuple[float, ...]
    recency_edges: tuple[float, ...]
    frequency_edges: tuple[float, ...]
    monetary_edges: tuple[float, ...]
    top_shares: tuple[float, ...] = DEFAULT_TIER_TOP_SHARES

    @classmethod
    def from_scores(cls, scores, *, top_shares: tuple[float, ...] = DEFAULT_TIER_TOP_SHARES) -> SegmentReference:
        """Reference of a scored population.

        Parameters
        ----------
        scores : DataFrame or mapping of arrays
            With ``clv``, ``recency_days``, ``frequency`` and ``monetary_value``; rows without a
            ``frequency`` (prospects) are left out of the reference.
        """
        # Buyers only: a prospect (no purchase: NaN frequency) has no RFM values to rank.
        buyers = np.isfinite(np.asarray(scores["frequency"], dtype=float))
        if not buyers.all():
            scores = {k: np.asarray(scores[k])[buyers] for k in ("clv", "recency_days", "frequency", "monetary_value")}
        if len(scores["clv"]) == 0:
            raise ValueError("a segment reference needs at least one scored customer with a purchase")

        def edges(values) -> tuple[float, ...]:
            return tuple(float(x) for x in quintile_edges(values))

        return cls(
            clv_thresholds=tuple(float(x) for x in clv_tier_thresholds(scores["clv"], top_shares=top_shares)),
            recency_edges=edges(-np.asarray(scores["recency_days"], dtype=float)),
            frequency_edges=edges(scores["frequency"]),
            monetary_edges=edges(scores["monetary_value"]),
            top_shares=tuple(top_shares),
        )

    def to_dict(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentReference:
        return cls(**{k: tuple(float(x) for x in v) for k, v in data.items()})

    def segments(self, scores) -> tuple[np.ndarray, np.ndarray]:
        """CLV tier and RFM segment of each row of ``scores`` (a DataFrame or a mapping of arrays)."""
        tier = clv_tier(scores["clv"], self.clv_thresholds, top_shares=self.top_shares)
        rfm = rfm_segment(
            quintile_score(-np.asarray(scores["recency_days"], dtype=float), self.recency_edges),
            quintile_score(scores["frequency"], self.frequency_edges),
            quintile_score(scores["monetary_value"], self.monetary_edges),
        )
        return tier, rfm
