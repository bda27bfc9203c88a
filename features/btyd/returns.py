"""Returns of churned subscribers: a split-population geometric model of the months to a return.

When a subscription ends (its last paid period is over), the subscriber is, with probability
``share`` (rho), one who will come back some day; such a subscriber returns in month ``j = 1, 2, ...``
after the end of the paid period with probability ``rate * (1 - rate) ** (j - 1)`` (a geometric
gap), the others never do. This is the mixture ("cure") model of survival analysis [1]_ in
discrete time, the split-population model of recidivism [2]_:

    P(J = j) = rho a (1 - a) ** (j - 1),     P(no return within m months) = 1 - rho + rho (1 - a) ** m.

Fitted by maximum likelihood on every subscription that ended before the cutoff: one that was
followed by another of the same customer contributes its gap (months from the end of its paid
period to the next first invoice, at least 1), the others the months they were watched without a
return (censored). A return restarts a subscription at tenure 0 (its first invoice at the return).

What a contractual CLV needs from it is the expected discount factor of the return seen from the
end of a subscription, ``D_ret = E[g ** J ; a return] = rho a g / (1 - (1 - a) g)`` with ``g`` the
discount factor per month (:meth:`ReturnParams.discounted`). With ``C`` the value of a subscription
from its first invoice and ``D_end = E[g ** T]`` the discount factor of its end ``T`` periods after
that invoice, a subscriber whose returns are worth what its first subscription was worth has the
value ``C / (1 - D_end D_ret)`` (the geometric series of its returns), for given ``C`` and ``D_end``:
under a gamma frailty they depend on it, and :mod:`serving.contractual` takes the series per value
of the frailty before averaging over it.

Why hand-written: two parameters of a closed-form likelihood; scipy does the optimisation.

References
----------
.. [1] Farewell, V. T. (1982). The use of mixture models for the analysis of survival data with
   long-term survivors. *Biometrics* 38(4), 1041-1046.
.. [2] Schmidt, P. and Witte, A. D. (1989). Predicting criminal recidivism using "split population"
   survival time models. *Journal of Econometrics* 40(1), 141-159.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit

from features.subscription import MEAN_MONTH_DAYS

__all__ = ["ReturnParams", "fit_returns", "return_gaps"]


@dataclass(frozen=True)
class ReturnParams:
    """Split-population geometric returns (see the module docstring).

    Attributes
    ----------
    share : float
        rho, the share of ended subscriptions whose subscriber comes back, in [0, 1].
    rate : float
        a, the monthly probability that such a subscriber returns, in (0, 1].
    ended : int
        Ended subscriptions the fit saw.
    returned : int
        Of them, those followed by a return before the cutoff.
    """

    share: float
    rate: float
    ended: int = 0
    returned: int = 0

    def discounted(self, discount_factor: float) -> float:
        """E[g ** J ; a return]: the expected discount factor of a return from the end of a subscription.

        Parameters
        ----------
        discount_factor : float
            g, per month, in (0, 1].
        """
        g = float(discount_factor)
        return float(self.share * self.rate * g / (1.0 - (1.0 - self.rate) * g))

    def to_dict(self) -> dict:
        return {"share": float(self.share), "rate": float(self.rate), "ended": int(self.ended),
                "returned": int(self.returned)}  # fmt: skip

    @classmethod
    def from_dict(cls, data) -> ReturnParams:
        return cls(share=float(data["share"]), rate=float(data["rate"]), ended=int(data.get("ended", 0)),
                   returned=int(data.get("returned", 0)))  # fmt: skip


def return_gaps(spells: pd.DataFrame, cutoff) -> pd.DataFrame:
    """Months from the end of each ended subscription to its subscriber's return, or watched without one.

    Parameters
    ----------
    spells : DataFrame
        :func:`features.subscription.subscription_spells` (``customer_id``, ``spell``,
        ``started_at``, ``paid_through``, ``ended``).
    cutoff : date-like
        End of the history (the end of this day).

    Returns
    -------
    DataFrame
        One row per ended subscription: ``months`` (float; whole months, at least 1, to the next
        subscription's first invoice, or watched up to the cutoff) and ``returned`` (bool).
    """
    end = pd.Timestamp(cutoff) + pd.Timedelta(days=1)
    ordered = spells.sort_values(["customer_id", "spell"])
    nxt = ordered.groupby("customer_id", sort=False)["started_at"].shift(-1)
    ended = ordered["ended"].to_numpy(dtype=bool)
    paid = ordered["paid_through"].to_numpy(dtype="datetime64[ns]")[ended]
    following = nxt.to_numpy(dtype="datetime64[ns]")[ended]
    returned = ~np.isnat(following)
    until = np.where(returned, following, np.datetime64(end, "ns"))
    months = (until - paid) / np.timedelta64(1, "D") / MEAN_MONTH_DAYS
    # A return is dated by its month (at least the first after the end); a censored watch counts the
    # whole months it lasted.
    months = np.where(returned, np.maximum(np.round(months), 1.0), np.maximum(np.floor(months), 0.0))
    return pd.DataFrame({"months": months, "returned": returned})


def fit_returns(gaps: pd.DataFrame) -> ReturnParams | None:
    """Maximum-likelihood rho and a of the split-population geometric (module docstring).

    Parameters
    ----------
    gaps : DataFrame
        :func:`return_gaps`.

    Returns
    -------
    ReturnParams or None
        None when no subscription ended or none was followed by a return (rho = 0: nothing to add).

    Raises
    ------
    RuntimeError
        If the optimiser does not converge to finite parameters.
    """
    months = gaps["months"].to_numpy(dtype=float)
    returned = gaps["returned"].to_numpy(dtype=bool)
    if not len(months) or not returned.any():
        return None
    # Identical rows collapse: (months, returned) takes few values.
    keys, counts = np.unique(np.c_[months, returned], axis=0, return_counts=True)
    m, r, w = keys[:, 0], keys[:, 1].astype(bool), counts.astype(float)

    def loss(z: np.ndarray) -> float:
        rho, a = expit(z[0]), expit(z[1])
        with np.errstate(divide="ignore"):
            log_back = np.log(rho) + np.log(a) + (m - 1) * np.log1p(-a)
            log_not = np.log((1 - rho) + rho * np.exp(m * np.log1p(-a)))
        ll = np.where(r, log_back, log_not)
        return float(-(w * ll).sum() / w.sum())

    share0 = returned.mean()
    rate0 = 1.0 / max(months[returned].mean(), 1.0)
    z0 = np.log([max(share0, 1e-3) / (1 - min(share0, 0.999)), rate0 / (1 - min(rate0, 0.999))])
    result = minimize(loss, z0, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 4000})
    rho, a = expit(result.x[0]), expit(result.x[1])
    if not (np.isfinite(rho) and np.isfinite(a)):
        raise RuntimeError(f"returns: the fit did not converge ({result.message})")
    return ReturnParams(share=float(rho), rate=float(a), ended=int(len(months)), returned=int(returned.sum()))
