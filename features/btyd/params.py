"""The population parameters of the BTYD models fitted at one cutoff: what training stores for serving.

A request for a few customers cannot fit a population model, so the parameters fitted on the whole
history at the training cutoff travel with the champion (in its serving artifact) and are passed
back whenever features are built for scoring.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from features.btyd.bgnbd import BGNBDParams, fit_bgnbd
from features.btyd.gamma_gamma import GammaGammaParams, fit_gamma_gamma
from features.btyd.summary import BTYDSummary

__all__ = ["BTYDParams", "fit_btyd_params"]


class BTYDParams(BaseModel):
    """BG/NBD and Gamma-Gamma parameters fitted on the history up to one cutoff.

    Parameters
    ----------
    bgnbd : BGNBDParams
    gamma_gamma : GammaGammaParams
    time_unit_days : float
        Days per time unit of the fit (``alpha`` is per unit); must match the feature config.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bgnbd: BGNBDParams
    gamma_gamma: GammaGammaParams
    time_unit_days: float = Field(gt=0)


def fit_btyd_params(summary: BTYDSummary) -> BTYDParams:
    """Fit BG/NBD and Gamma-Gamma by maximum likelihood on a BTYD summary.

    Raises
    ------
    ValueError
        If either model cannot be fitted (e.g. no repeat buyer), with the cause.
    """
    try:
        bgnbd = fit_bgnbd(summary.frequency, summary.recency, summary.T)
        gamma_gamma = fit_gamma_gamma(summary.frequency, summary.monetary_value)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"cannot fit BG/NBD + Gamma-Gamma on {summary.frequency.size} customers: {exc}") from exc
    return BTYDParams(bgnbd=bgnbd, gamma_gamma=gamma_gamma, time_unit_days=summary.time_unit_days)
