"""The population parameters of the BTYD models fitted at one cutoff: what training stores for serving.

A request for a few customers cannot fit a population model, so the parameters fitted on the whole
history at the training cutoff travel with the champion (in its serving artifact) and are passed
back whenever features are built for scoring.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from features.btyd.bgnbd import BGNBDParams, fit_bgnbd
from features.btyd.gamma_gamma import GammaGammaParams, fit_gamma_gamma
from features.btyd.pareto_nbd import ParetoNBDParams, fit_pareto_nbd
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
    pareto : ParetoNBDParams, optional
        Pareto/NBD, fitted when the features use it (``FeatureConfig.btyd_model``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bgnbd: BGNBDParams
    gamma_gamma: GammaGammaParams
    time_unit_days: float = Field(gt=0)
    pareto: ParetoNBDParams | None = None


def fit_btyd_params(summary: BTYDSummary, *, pareto: bool = False) -> BTYDParams:
    """Fit BG/NBD and Gamma-Gamma (and, with ``pareto``, Pareto/NBD) by maximum likelihood on a BTYD summary.

    Raises
    ------
    ValueError
        If a model cannot be fitted (e.g. no repeat buyer), with the cause.
    """
    x, tx, T = summary.frequency, summary.recency, summary.T
    try:
        bgnbd = fit_bgnbd(x, tx, T)
        gamma_gamma = fit_gamma_gamma(x, summary.monetary_value)
        pareto_nbd = fit_pareto_nbd(x, tx, T) if pareto else None
    except (ValueError, RuntimeError) as exc:
        models = "BG/NBD, Pareto/NBD + Gamma-Gamma" if pareto else "BG/NBD + Gamma-Gamma"
        raise ValueError(f"cannot fit {models} on {x.size} customers: {exc}") from exc
    return BTYDParams(bgnbd=bgnbd, gamma_gamma=gamma_gamma, time_unit_days=summary.time_unit_days, pareto=pareto_nbd)
