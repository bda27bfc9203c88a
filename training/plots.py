"""Evaluation plots of a run. Figures are built with ``matplotlib.figure.Figure`` directly, which
renders with Agg and never touches pyplot's global state or the display backend."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from training import metrics


def calibration_plot(churned: np.ndarray, probability: np.ndarray, *, n_bins: int = 10) -> Figure:
    """Observed churn rate against mean predicted probability per bin, with the diagonal."""
    table = metrics.calibration_table(churned, probability, n_bins=n_bins)
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    ax.plot(table["mean_predicted"], table["observed_rate"], marker="o", label="clvcast")
    ax.set(xlabel="mean predicted churn probability", ylabel="observed churn rate", xlim=(0, 1), ylim=(0, 1))
    ax.set_title("Churn calibration (holdout)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def gains_plot(actual: np.ndarray, predictions: dict[str, np.ndarray]) -> Figure:
    """Cumulative share of actual spend captured by the top customers of each ranking."""
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    perfect = metrics.cumulative_gains(actual, actual)
    ax.plot(perfect["share_customers"], perfect["share_actual"], color="black", linewidth=1, label="perfect")
    for name, pred in predictions.items():
        g = metrics.cumulative_gains(actual, pred)
        gini = metrics.normalized_gini(actual, pred)
        ax.plot(g["share_customers"], g["share_actual"], label=f"{name} (Gini {gini:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="random")
    ax.set(xlabel="share of customers (highest predicted first)", ylabel="share of actual spend")
    ax.set_title("Cumulative gains (holdout)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def decile_plot(actual: np.ndarray, predictions: dict[str, np.ndarray]) -> Figure:
    """Predicted vs actual total spend per decile of each model's prediction."""
    fig = Figure(figsize=(8, 4.5))
    axes = np.atleast_1d(fig.subplots(1, len(predictions), sharey=True))
    for ax, (name, pred) in zip(axes, predictions.items()):
        table = metrics.decile_table(actual, pred)
        x = np.arange(len(table))
        ax.bar(x - 0.2, table["actual"], width=0.4, label="actual")
        ax.bar(x + 0.2, table["predicted"], width=0.4, label="predicted")
        ax.set_xticks(x, [str(d) for d in table.index])
        ax.set(xlabel="decile of predicted spend", title=f"{name} (MAPE {metrics.decile_mape(actual, pred):.2f})")
    axes[0].set_ylabel("total spend in the horizon (log scale)")
    # Log scale: the top decile holds most of the spend and would flatten the others to nothing.
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    return fig


def importance_plot(importance: pd.DataFrame, *, top: int = 20) -> Figure:
    """Gain importance of the top features, one panel per model."""
    fig = Figure(figsize=(10, max(3, 0.3 * min(top, len(importance)) + 1)))
    axes = fig.subplots(1, len(importance.columns))
    for ax, model in zip(np.atleast_1d(axes), importance.columns):
        shares = (importance[model] / (importance[model].sum() or 1.0)).sort_values().tail(top)
        ax.barh(shares.index.astype(str), shares.to_numpy())
        ax.set(xlabel="share of total gain", title=f"{model} model")
    fig.tight_layout()
    return fig


def frequency_recency_plot(expected: pd.DataFrame, alive: pd.DataFrame, *, horizon_label: str) -> Figure:
    """Heatmaps of expected purchases and P(alive) over frequency x recency (:mod:`training.diagnostics`)."""
    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    for ax, frame, title, cmap in (
        (axes[0], expected, f"expected purchase days in the next {horizon_label}", "viridis"),
        (axes[1], alive, "P(alive)", "magma"),
    ):
        image = ax.imshow(
            frame.to_numpy(), origin="lower", aspect="auto", cmap=cmap,
            extent=(frame.columns.min(), frame.columns.max(), frame.index.min() - 0.5, frame.index.max() + 0.5),
        )  # fmt: skip
        fig.colorbar(image, ax=ax)
        ax.set(xlabel="recency t_x (time units: first to last purchase)", ylabel="frequency x (repeat purchase days)",
               title=title)
    fig.suptitle("BG/NBD over frequency and recency, for customers observed for T")
    fig.tight_layout()
    return fig


def calibration_holdout_plot(table: pd.DataFrame) -> Figure:
    """Mean actual vs predicted holdout purchase days per calibration frequency."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    x = np.arange(len(table))
    ax.plot(x, table["actual"], marker="o", label="actual")
    ax.plot(x, table["predicted"], marker="s", linestyle="--", label="BG/NBD")
    ax.set_xticks(x, table.index.tolist())
    ax.set(xlabel="purchase days in calibration (frequency)", ylabel="mean purchase days in the holdout")
    ax.set_title("Calibration vs holdout purchases")
    ax.legend()
    fig.tight_layout()
    return fig


def tracking_plot(tracking: pd.DataFrame) -> Figure:
    """Actual vs expected repeat purchase days of the population, incremental and cumulative."""
    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    x = pd.to_datetime(tracking["period_start"])
    split = x[tracking["holdout"].to_numpy()].min() if tracking["holdout"].any() else None
    for ax, (actual, expected, title) in zip(axes, (
        ("actual", "expected", "repeat purchase days per period"),
        ("actual_cumulative", "expected_cumulative", "cumulative repeat purchase days"),
    )):  # fmt: skip
        ax.plot(x, tracking[actual], label="actual")
        ax.plot(x, tracking[expected], linestyle="--", label="BG/NBD")
        if split is not None:
            ax.axvline(split, color="grey", linestyle=":", label="end of calibration")
        ax.set(title=title, xlabel="period")
        ax.tick_params(axis="x", labelrotation=30)
    axes[0].legend()
    fig.tight_layout()
    return fig
