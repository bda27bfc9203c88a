"""Returns of churned subscribers (features.btyd.returns) and their value in the contractual CLV."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.btyd.returns import ReturnParams, fit_returns, return_gaps


def _gaps(n: int, share: float, rate: float, seed: int) -> pd.DataFrame:
    """Ended subscriptions watched 0-36 months; a returner comes back after a geometric gap (>= 1)."""
    rng = np.random.default_rng(seed)
    watched = rng.integers(0, 37, n).astype(float)
    gap = rng.geometric(rate, n).astype(float)
    back = (rng.random(n) < share) & (gap <= watched)
    return pd.DataFrame({"months": np.where(back, gap, watched), "returned": back})


def test_the_fit_recovers_the_share_and_the_rate():
    fitted = fit_returns(_gaps(40_000, share=0.2, rate=0.1, seed=0))
    assert fitted.share == pytest.approx(0.2, rel=0.08)
    assert fitted.rate == pytest.approx(0.1, rel=0.08)
    assert fitted.ended == 40_000 and 0 < fitted.returned < 40_000 * 0.2


def test_no_return_seen_is_no_return_model():
    assert fit_returns(pd.DataFrame({"months": [3.0, 7.0], "returned": [False, False]})) is None
    assert fit_returns(pd.DataFrame({"months": pd.Series([], dtype=float), "returned": pd.Series([], dtype=bool)})) is None


def test_the_discounted_return_is_the_sum_of_its_series():
    p = ReturnParams(share=0.15, rate=0.2)
    g = 1.1 ** (-1 / 12)
    j = np.arange(1, 5_000)
    assert p.discounted(g) == pytest.approx(np.sum(0.15 * 0.2 * 0.8 ** (j - 1) * g**j), rel=1e-12)
    assert ReturnParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_gaps_are_counted_from_the_end_of_the_paid_period():
    ts = pd.to_datetime
    spells = pd.DataFrame({
        "customer_id": ["a", "a", "b", "c"], "spell": [0, 1, 0, 0],
        "started_at": ts(["2023-01-05", "2023-07-05", "2023-01-10", "2023-03-01"]),
        "paid_through": ts(["2023-04-05", "2023-10-05", "2023-06-10", "2024-01-01"]),
        "ended": [True, True, True, False],
    })
    gaps = return_gaps(spells, "2023-12-31")
    # a's first subscription: back 3 months after its paid period; a's second and b: watched, not back.
    assert gaps["returned"].tolist() == [True, False, False]
    assert gaps["months"].tolist() == [3.0, 2.0, 6.0]
