"""Holdout metrics for spend forecasts and churn scores: small pure functions of arrays.

Spend metrics follow google/lifetime_value: normalized Gini compares the ranking a model makes with
the best possible ranking of the actual values; decile MAPE checks that the totals of each decile of
predicted spend match what those customers really spent (what a budget built on the forecast needs).

Churn metrics take a score where higher means *more likely to churn* (a probability for clvcast;
minus expected purchases for BG/NBD).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats
from sklearn import metrics as skm

N_DECILES = 10


def _pair(actual: ArrayLike, predicted: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(actual, dtype=float)
    p = np.asarray(predicted, dtype=float)
    if a.shape != p.shape or a.ndim != 1:
        raise ValueError(f"actual and predicted must be 1-d of equal length, got {a.shape} and {p.shape}")
    if a.size == 0:
        raise ValueError("metrics need at least one row")
    if not (np.isfinite(a).all() and np.isfinite(p).all()):
        raise ValueError("actual and predicted must be finite")
    return a, p


def mae(actual: ArrayLike, predicted: ArrayLike) -> float:
    """Mean absolute error, in the unit of spend."""
    a, p = _pair(actual, predicted)
    return float(np.mean(np.abs(a - p)))


def rmse(actual: ArrayLike, predicted: ArrayLike) -> float:
    """Root mean squared error, in the unit of spend."""
    a, p = _pair(actual, predicted)
    return float(np.sqrt(np.mean((a - p) ** 2)))


def gini_from_ranking(actual: ArrayLike, ranking_score: ArrayLike) -> float:
    """Gini coefficient of the cumulative-gains curve of ``actual`` sorted by ``ranking_score``.

    Twice the area between the gains curve (share of total actual captured by the top-k customers)
    and the diagonal. Ties in the score are broken by the original order after a stable sort on
    the score descending, so a constant score gives a Gini near 0 on shuffled data.
    """
    a, s = _pair(actual, ranking_score)
    total = a.sum()
    if total == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    gains = np.cumsum(a[order]) / total
    n = a.size
    # Area under the gains curve by the trapezoid rule on points k/n, k = 0..n.
    area = (np.sum(gains) - gains[-1] / 2) / n
    return float(2 * area - 1)


def normalized_gini(actual: ArrayLike, predicted: ArrayLike) -> float:
    """Gini of the predicted ranking divided by the Gini of the perfect ranking on ``actual``.

    1 for a perfect ranking, about 0 for a random one, -1 for the reversed one.
    """
    perfect = gini_from_ranking(actual, actual)
    if not perfect or math.isnan(perfect):
        return float("nan")
    return gini_from_ranking(actual, predicted) / perfect


def spearman(actual: ArrayLike, predicted: ArrayLike) -> float:
    """Spearman rank correlation; NaN when either side is constant."""
    a, p = _pair(actual, predicted)
    if np.all(a == a[0]) or np.all(p == p[0]):
        return float("nan")
    return float(stats.spearmanr(a, p).statistic)


def decile_table(actual: ArrayLike, predicted: ArrayLike, n_bins: int = N_DECILES) -> pd.DataFrame:
    """Totals per decile of predicted spend, highest decile first.

    Customers are sorted by prediction (descending, stable) and split into ``n_bins`` groups of
    equal size (sizes differ by at most one), so ties never make a decile empty.

    Returns
    -------
    DataFrame
        Indexed by ``decile`` (1 = highest predicted), columns ``customers``, ``predicted``,
        ``actual`` (sums) and ``ape`` (|predicted − actual| / |actual|; NaN where actual is 0).
    """
    a, p = _pair(actual, predicted)
    order = np.argsort(-p, kind="stable")
    bins = np.empty(a.size, dtype=int)
    bins[order] = np.arange(a.size) * n_bins // a.size + 1
    frame = pd.DataFrame({"decile": bins, "predicted": p, "actual": a})
    table = frame.groupby("decile").agg(
        customers=("actual", "size"), predicted=("predicted", "sum"), actual=("actual", "sum")
    )
    # |actual| in the denominator: with refunds a decile's net total can be negative, and an
    # error measure must not turn negative with it.
    with np.errstate(divide="ignore", invalid="ignore"):
        ape = np.abs(table["predicted"] - table["actual"]) / np.abs(table["actual"])
    table["ape"] = ape.where(table["actual"] != 0)
    return table


def decile_mape(actual: ArrayLike, predicted: ArrayLike, n_bins: int = N_DECILES) -> float:
    """Mean over deciles of predicted spend of |sum predicted − sum actual| / |sum actual|.

    Deciles whose actual total is 0 are left out (their relative error is undefined); 0 for a
    perfect forecast. Deciles of customers who mostly do not buy again have totals near 0 (or
    negative, with refunds), so their relative errors can dominate the mean on sparse books.
    """
    ape = decile_table(actual, predicted, n_bins)["ape"].dropna()
    return float(ape.mean()) if len(ape) else float("nan")


def _labels(churned: ArrayLike, score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y, s = _pair(churned, score)
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("churn labels must be 0 or 1")
    return y.astype(int), s


def churn_auc(churned: ArrayLike, score: ArrayLike) -> float:
    """ROC AUC of a churn score (higher = more likely to churn); NaN if only one class is present."""
    y, s = _labels(churned, score)
    if y.min() == y.max():
        return float("nan")
    return float(skm.roc_auc_score(y, s))


def pr_auc(churned: ArrayLike, score: ArrayLike) -> float:
    """Average precision of a churn score for the churn class; NaN if only one class is present."""
    y, s = _labels(churned, score)
    if y.min() == y.max():
        return float("nan")
    return float(skm.average_precision_score(y, s))


def brier(churned: ArrayLike, probability: ArrayLike) -> float:
    """Brier score of churn probabilities (mean squared error against the 0/1 label)."""
    y, p = _labels(churned, probability)
    return float(np.mean((p - y) ** 2))


def log_loss(churned: ArrayLike, probability: ArrayLike, eps: float = 1e-6) -> float:
    """Mean negative log-likelihood of churn probabilities, clipped to [eps, 1 − eps]."""
    y, p = _labels(churned, probability)
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def calibration_table(churned: ArrayLike, probability: ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """Mean predicted vs observed churn rate per equal-width probability bin.

    Returns
    -------
    DataFrame
        One row per non-empty bin: ``bin_lower``, ``bin_upper``, ``customers``, ``mean_predicted``,
        ``observed_rate``.
    """
    y, p = _labels(churned, probability)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    frame = pd.DataFrame({"bin": idx, "p": p, "y": y})
    table = frame.groupby("bin").agg(customers=("y", "size"), mean_predicted=("p", "mean"), observed_rate=("y", "mean"))
    table.insert(0, "bin_upper", edges[table.index + 1])
    table.insert(0, "bin_lower", edges[table.index])
    return table.reset_index(drop=True)


def cumulative_gains(actual: ArrayLike, ranking_score: ArrayLike, n_points: int = 101) -> pd.DataFrame:
    """Share of total actual captured by the top share of customers ranked by ``ranking_score``.

    Returns
    -------
    DataFrame
        ``share_customers`` (0..1 in ``n_points`` steps) and ``share_actual``.
    """
    a, s = _pair(actual, ranking_score)
    order = np.argsort(-s, kind="stable")
    gains = np.concatenate([[0.0], np.cumsum(a[order])]) / (a.sum() or 1.0)
    x = np.linspace(0, 1, n_points)
    return pd.DataFrame({"share_customers": x, "share_actual": gains[np.round(x * a.size).astype(int)]})


def spend_metrics(actual: ArrayLike, predicted: ArrayLike) -> dict[str, float]:
    """All spend metrics of one forecast: mae, rmse, gini, spearman, decile_mape, totals."""
    a, p = _pair(actual, predicted)
    return {
        "mae": mae(a, p),
        "rmse": rmse(a, p),
        "gini": normalized_gini(a, p),
        "spearman": spearman(a, p),
        "decile_mape": decile_mape(a, p),
        "total_predicted": float(p.sum()),
        "total_actual": float(a.sum()),
    }


def churn_metrics(churned: ArrayLike, score: ArrayLike, *, is_probability: bool) -> dict[str, float]:
    """Churn metrics of one score: auc and pr_auc always; brier and log_loss for probabilities."""
    out = {"churn_auc": churn_auc(churned, score), "churn_pr_auc": pr_auc(churned, score)}
    if is_probability:
        out["churn_brier"] = brier(churned, score)
        out["churn_log_loss"] = log_loss(churned, score)
    return out
