"""Seasonal time: a clock that runs faster in the calendar months when customers buy more.

A customer base whose purchase rate follows the calendar (December 1.4 times an average month) is
a Poisson process of rate lambda * s(month) while alive. Measured on the clock

.. math::

    \\sigma(t) = \\int_0^t s(\\text{month}(u))\\, du

the same process has the constant rate lambda, so the BTYD models apply unchanged in seasonal
time: the summary (t_x, T) and every horizon are measured on the clock. With indices of mean 1 a
year of seasonal time is a year of calendar time, so the dropout rates keep their meaning over
whole years; within a year the dropout clock also follows the season, a small approximation for
indices near 1 (the alternative, purchases on the seasonal clock and dropout on the calendar, has
no closed-form likelihood).

Days are calendar days since 1970-01-01 (:func:`features.dates.day_number`); the clock counts
whole days from the start of a day to the start of another.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MONTHS", "SeasonalClock"]

MONTHS = 12


class SeasonalClock:
    """Seasonal days between calendar days, from one index per calendar month.

    Parameters
    ----------
    indices : sequence of 12 float
        Purchase-rate multiplier of each calendar month, January first; positive and finite.
        Rescaled to mean 1 (a year of seasonal time is then 365.25 days on average).

    Raises
    ------
    ValueError
        If there are not 12 positive finite indices.
    """

    def __init__(self, indices: Sequence[float] = (1.0,) * MONTHS):
        values = np.asarray(indices, dtype=float)
        if values.shape != (MONTHS,) or not np.all(np.isfinite(values)) or not np.all(values > 0):
            raise ValueError(f"seasonality: rule '12 positive finite numbers, January first': got {values.tolist()}")
        self.indices = values / values.mean()

    @property
    def is_flat(self) -> bool:
        """Whether every month has index 1 (seasonal time is calendar time)."""
        return bool(np.allclose(self.indices, 1.0, rtol=0, atol=1e-12))

    def elapsed(self, start_day, end_day) -> np.ndarray:
        """Seasonal days from the start of ``start_day`` to the start of ``end_day``.

        Σ over the calendar days d in [start_day, end_day) of s(month(d)); negative when
        ``end_day`` comes first. Exact for whole days: a month's index is constant over its days.

        Parameters
        ----------
        start_day, end_day : int or array-like of int
            Calendar days since 1970-01-01; broadcast against each other.

        Returns
        -------
        ndarray of float
            Seasonal days (calendar days when the clock is flat).
        """
        start, end = np.broadcast_arrays(np.asarray(start_day, dtype=np.int64), np.asarray(end_day, dtype=np.int64))
        if self.is_flat or start.size == 0:
            return (end - start).astype(float)
        position = self._positions(np.concatenate([start.ravel(), end.ravel()]))
        return (position[start.size :] - position[: start.size]).reshape(start.shape)

    def _positions(self, day: np.ndarray) -> np.ndarray:
        """Seasonal days from the start of 1970-01 (of the earliest month among ``day`` when it is earlier).

        A fixed origin: a customer's seasonal time does not depend on which other days are in the
        call, so a customer scored in a block of customers (or alone, by the service) gets the
        numbers, to the last bit, of the whole book.
        """
        m = day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)  # months since 1970-01
        lo, hi = min(int(m.min()), 0), int(m.max())
        months = np.arange(lo, hi + 1)
        starts = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
        lengths = (months + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) - starts
        index = self.indices[months % MONTHS]  # 1970-01 is a January
        before = np.concatenate([[0.0], np.cumsum(lengths * index)[:-1]])
        i = m - lo
        return before[i] + (day - starts[i]) * index[i]
