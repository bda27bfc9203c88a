"""Segments for CRM: CLV tiers and RFM segments, relative to a reference population.

A :class:`SegmentReference` holds the tier thresholds and RFM quintile edges of one population (a
batch run's scores), so that a single customer scored by the service lands in the same tier as in
that batch run.

RFM segments
------------
Each segment is defined once, in :data:`SEGMENT_RULES` (name, a rule in words, and the same rule as
code); a customer gets the first segment whose rule it meets. The rules read the R and FM scores
(1..5, see :func:`rfm_segment`) and what the models say of the customer: P(alive) (``p_alive``),
``churn_probability`` and lifetime ``clv``. So a customer the models see as gone is ``lost``,
never ``champions``, ``loyal`` or ``cannot_lose``, whatever its past purchases; ``champions`` and
``loyal`` are more likely than not to buy in the next horizon; ``cannot_lose`` still has a CLV in
the top half of the reference population. Without the model's columns the rules are the classic
RFM grid :data:`RFM_SEGMENT_GRID`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_TIER_TOP_SHARES",
    "LOST_CHURN_PROBABILITY",
    "LOST_P_ALIVE",
    "PROSPECT_SEGMENT",
    "ACTIVE_MAX_CHURN_PROBABILITY",
    "RFM_SEGMENTS",
    "RFM_SEGMENT_GRID",
    "SEGMENT_RULES",
    "SegmentInputs",
    "SegmentReference",
    "SegmentRule",
    "assign_segments",
    "clv_tier",
    "clv_tier_thresholds",
    "quintile_edges",
    "quintile_score",
    "rfm_scores",
    "rfm_segment",
    "segment_definitions",
    "segment_inputs",
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
#: ``rfm_segment`` of a customer scored as a prospect (no purchase yet): outside the RFM rules.
PROSPECT_SEGMENT = "prospect"

#: A customer with P(alive) below this is ``lost`` (the dropout model gives it under 10 % chance
#: of still being a customer).
LOST_P_ALIVE = 0.10
#: ... and so is one with at least this churn probability (almost sure not to buy in the horizon).
LOST_CHURN_PROBABILITY = 0.95
#: ``champions`` and ``loyal`` have a churn probability below this: more likely than not to buy.
ACTIVE_MAX_CHURN_PROBABILITY = 0.5


@dataclass(frozen=True)
class SegmentInputs:
    """What the segment rules read, one array of shape (n,) each.

    Attributes
    ----------
    r, fm : ndarray of int
        R score and FM = round-half-up((F + M) / 2), both 1..5.
    p_alive, churn_probability : ndarray of float
        P(alive) and P(no purchase in the horizon), 0..1; 1 and 0 when unknown.
    clv : ndarray of float
        Lifetime CLV, currency units; +inf when unknown.
    clv_median : float
        Median lifetime CLV of the reference population, currency units (−inf when unknown).
    """

    r: np.ndarray
    fm: np.ndarray
    p_alive: np.ndarray
    churn_probability: np.ndarray
    clv: np.ndarray
    clv_median: float


@dataclass(frozen=True)
class SegmentRule:
    """One RFM segment: its name, its rule in words (shown in the report) and as code."""

    name: str
    rule: str
    test: Callable[[SegmentInputs], np.ndarray]


def _lost(x: SegmentInputs) -> np.ndarray:
    return (x.p_alive < LOST_P_ALIVE) | (x.churn_probability >= LOST_CHURN_PROBABILITY)


def _likely_to_buy(x: SegmentInputs) -> np.ndarray:
    return x.churn_probability < ACTIVE_MAX_CHURN_PROBABILITY


#: The RFM segments, in the order they are tried: a customer gets the first whose rule it meets,
#: so each rule also means "and none of the rules above".
SEGMENT_RULES = (
    SegmentRule("lost", f"P(alive) below {LOST_P_ALIVE:g} or churn probability at least {LOST_CHURN_PROBABILITY:g}: "
                "the models see the customer as gone", _lost),
    SegmentRule("champions", f"R = 5 and FM ≥ 4 (bought very recently, often and much), churn probability below "
                f"{ACTIVE_MAX_CHURN_PROBABILITY:g}", lambda x: (x.r == 5) & (x.fm >= 4) & _likely_to_buy(x)),
    SegmentRule("loyal", f"R 3–4 and FM ≥ 4 (buy often and much, fairly recently), churn probability below "
                f"{ACTIVE_MAX_CHURN_PROBABILITY:g}", lambda x: (x.r >= 3) & (x.r <= 4) & (x.fm >= 4) & _likely_to_buy(x)),
    SegmentRule("cannot_lose", "R ≤ 2 and FM = 5 (bought often and much, not lately), CLV at least the median "
                "of the scored customers", lambda x: (x.r <= 2) & (x.fm == 5) & (x.clv >= x.clv_median)),
    SegmentRule("at_risk", "R ≤ 2 and FM ≥ 3 (used to buy often, not lately)", lambda x: (x.r <= 2) & (x.fm >= 3)),
    SegmentRule("new", "R = 5 and FM = 1 (a recent first purchase)", lambda x: (x.r == 5) & (x.fm == 1)),
    SegmentRule("promising", "R = 4 and FM = 1 (recent, little so far)", lambda x: (x.r == 4) & (x.fm == 1)),
    SegmentRule("potential_loyalist", "R ≥ 4 and FM 2–3 (recent, with room to grow)",
                lambda x: (x.r >= 4) & (x.fm >= 2) & (x.fm <= 3)),
    SegmentRule("need_attention", "R ≥ 3 and FM ≥ 3 (good buyers slipping: FM 3 at R = 3, or a churn "
                f"probability of {ACTIVE_MAX_CHURN_PROBABILITY:g} or more)", lambda x: (x.r >= 3) & (x.fm >= 3)),
    SegmentRule("about_to_sleep", "R = 3 and FM ≤ 2 (below average, lapsing)", lambda x: (x.r == 3) & (x.fm <= 2)),
    SegmentRule("hibernating", "R ≤ 2 and FM ≤ 2 (neither recent nor frequent)", lambda x: (x.r <= 2) & (x.fm <= 2)),
)  # fmt: skip
RFM_SEGMENTS = tuple(rule.name for rule in SEGMENT_RULES)


def segment_definitions() -> dict[str, str]:
    """Segment name → its rule in words, in the order the rules are tried (:data:`SEGMENT_RULES`)."""
    return {rule.name: rule.rule for rule in SEGMENT_RULES}


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


def segment_inputs(
    r_score, f_score, m_score, *, p_alive=None, churn_probability=None, clv=None, clv_median: float | None = None
) -> SegmentInputs:
    """The inputs of :data:`SEGMENT_RULES`: FM = round-half-up((F + M) / 2), unknown model columns neutral.

    Raises
    ------
    ValueError
        If R or FM is outside 1..5.
    """
    r = np.asarray(r_score, dtype=int)
    fm = np.floor((np.asarray(f_score, dtype=float) + np.asarray(m_score, dtype=float)) / 2 + 0.5).astype(int)
    if np.any((r < 1) | (r > 5) | (fm < 1) | (fm > 5)):
        raise ValueError("RFM scores must be in 1..5")

    def column(values, neutral: float) -> np.ndarray:
        return np.full(r.shape, neutral) if values is None else np.nan_to_num(_arr(values), nan=neutral)

    return SegmentInputs(
        r=r, fm=fm, p_alive=column(p_alive, 1.0), churn_probability=column(churn_probability, 0.0),
        clv=column(clv, np.inf), clv_median=-np.inf if clv_median is None else float(clv_median),
    )  # fmt: skip


def rfm_segment(
    r_score, f_score, m_score, *, p_alive=None, churn_probability=None, clv=None, clv_median: float | None = None
) -> np.ndarray:
    """RFM segment name of each customer: the first rule of :data:`SEGMENT_RULES` it meets.

    F and M are combined into FM = round-half-up((F + M) / 2). Without ``p_alive``,
    ``churn_probability`` and ``clv`` (or ``clv_median``) the rules that read them hold, and the
    segment is the cell (R, FM) of :data:`RFM_SEGMENT_GRID`.

    Parameters
    ----------
    r_score, f_score, m_score : array-like of int, shape (n,)
        Scores 1..5 (:func:`rfm_scores`).
    p_alive, churn_probability : array-like of float, shape (n,), optional
        P(alive) and P(no purchase in the horizon) of the scores, 0..1.
    clv : array-like of float, shape (n,), optional
        Lifetime CLV, currency units.
    clv_median : float, optional
        Median lifetime CLV of the reference population, currency units (the bar of ``cannot_lose``).

    Returns
    -------
    ndarray of str
        One of ``RFM_SEGMENTS``.
    """
    return assign_segments(segment_inputs(
        r_score, f_score, m_score, p_alive=p_alive, churn_probability=churn_probability, clv=clv, clv_median=clv_median
    ))  # fmt: skip


def assign_segments(x: SegmentInputs) -> np.ndarray:
    """The first rule of :data:`SEGMENT_RULES` each customer meets (every customer meets one).

    Returns
    -------
    ndarray of str, shape (n,)
    """
    out = np.full(x.r.shape, None, dtype=object)
    for rule in SEGMENT_RULES:
        out[(out == None) & rule.test(x)] = rule.name  # noqa: E711 (elementwise)
    return out


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

    def segment_inputs(self, scores) -> SegmentInputs:
        """The inputs of :data:`SEGMENT_RULES` for each row of ``scores`` (a DataFrame or a mapping of arrays).

        ``scores`` has ``recency_days``, ``frequency``, ``monetary_value`` and ``clv``, and
        ``p_alive`` and ``churn_probability`` when known.
        """

        def get(name):
            return scores[name] if name in scores else None

        return segment_inputs(
            quintile_score(-np.asarray(scores["recency_days"], dtype=float), self.recency_edges),
            quintile_score(scores["frequency"], self.frequency_edges),
            quintile_score(scores["monetary_value"], self.monetary_edges),
            p_alive=get("p_alive"), churn_probability=get("churn_probability"), clv=scores["clv"],
            clv_median=self.clv_median,
        )  # fmt: skip

    @property
    def clv_median(self) -> float:
        """Median lifetime CLV of the reference population: the threshold that opens the top 50 %.

        The tier thresholds hold it when ``top_shares`` has 0.5; otherwise −inf (no CLV bar).
        """
        shares = list(self.top_shares)
        return float(self.clv_thresholds[shares.index(0.5)]) if 0.5 in shares else float("-inf")

    def segments(self, scores) -> tuple[np.ndarray, np.ndarray]:
        """CLV tier and RFM segment of each row of ``scores`` (see :meth:`segment_inputs`)."""
        tier = clv_tier(scores["clv"], self.clv_thresholds, top_shares=self.top_shares)
        return tier, assign_segments(self.segment_inputs(scores))
