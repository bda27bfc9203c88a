"""The monitor report: one self-contained HTML page (inline CSS, charts as embedded PNG images).

Every number comes from the :class:`~serving.monitor.compute.MonitorResult` that ``summary.json``
is written from, formatted here (money with two decimals and thousands separators, shares as
percentages, ``–`` for undefined). The markup is the jinja2 template ``templates/report.html.j2``
(autoescaped), as for the finance report; charts are drawn by matplotlib's Agg renderer into PNG
data URIs.
"""

from __future__ import annotations

import base64
import functools
import io
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined
from matplotlib.figure import Figure

from serving.finance.report import PALETTE, fmt_money
from serving.monitor.compute import MonitorResult

__all__ = ["fmt_number", "fmt_share", "render_report"]

TEMPLATE = "report.html.j2"
THRESHOLD_COLOURS = {"warn": "#f9a825", "alert": "#c62828"}
#: Feature drift rows shown in the chart.
DRIFT_CHART_FEATURES = 15


def fmt_share(x, digits: int = 1) -> str:
    """A share as a signed-free percentage (0.125 → ``12.5%``); ``–`` when undefined."""
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}%"


def fmt_number(x, spec: str = ".3f") -> str:
    """A number with ``spec``; ``–`` when undefined."""
    return "–" if x is None or not math.isfinite(float(x)) else format(float(x), spec)


def _data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _figure(width: float = 9.0, height: float = 3.6):
    # The object-oriented Figure renders with Agg without touching pyplot's global state.
    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot()


def _dates(values) -> np.ndarray:
    return pd.to_datetime(pd.Series(list(values))).to_numpy()


def _chart_book(book: pd.DataFrame) -> str:
    fig, ax = _figure()
    x = _dates(book["as_of"])
    ax.plot(x, book["total_clv"], marker="o", color=PALETTE[0], label="total CLV")
    ax.set_ylabel("total CLV")
    other = ax.twinx()
    other.plot(x, book["mean_clv"], marker="s", color=PALETTE[1], label="mean CLV per customer")
    other.set_ylabel("mean CLV per customer")
    ax.legend(loc="upper left", fontsize=8)
    other.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _data_uri(fig)


def _chart_channels(channels: pd.DataFrame) -> str:
    fig = Figure(figsize=(9.0, 3.6))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i, (name, g) in enumerate(channels.groupby("segment", sort=True)):
        colour = PALETTE[i % len(PALETTE)]
        x = _dates(g["as_of"])
        left.plot(x, g["mean_expected_spend"], marker="o", ms=3, color=colour, label=name)
        right.plot(x, g["mean_churn_probability"], marker="o", ms=3, color=colour, label=name)
    left.set_title("mean expected spend", fontsize=10)
    right.set_title("mean churn probability", fontsize=10)
    left.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    return _data_uri(fig)


def _chart_drift(features: pd.DataFrame, psi_warn: float, psi_alert: float) -> str:
    top = features.head(DRIFT_CHART_FEATURES)
    fig, ax = _figure(9, 0.5 + 0.3 * max(len(top), 2))
    y = np.arange(len(top))
    colours = [THRESHOLD_COLOURS.get(s, "#1f77b4") for s in top["status"]]
    ax.barh(y, top["psi"], color=colours)
    ax.set_yticks(y, labels=list(top["column"]), fontsize=8)
    ax.invert_yaxis()
    ax.axvline(psi_warn, color=THRESHOLD_COLOURS["warn"], ls="--", lw=1)
    ax.axvline(psi_alert, color=THRESHOLD_COLOURS["alert"], ls="--", lw=1)
    ax.set_xlabel("PSI against the reference (dashed: warn and alert thresholds)")
    return _data_uri(fig)


def _chart_performance(performance: pd.DataFrame) -> str:
    fig, ax = _figure()
    x = np.arange(len(performance))
    ax.bar(x - 0.2, performance["total_predicted"], width=0.4, color=PALETTE[0], label="predicted")
    ax.bar(x + 0.2, performance["total_actual"], width=0.4, color=PALETTE[2], label="realised")
    ax.set_xticks(x, labels=[str(d) for d in performance["as_of"]], rotation=45, fontsize=8)
    ax.set_ylabel("spend over the horizon")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _data_uri(fig)


def _chart_calibration(calibration: pd.DataFrame) -> str:
    fig, ax = _figure(5, 4)
    ax.plot([0, 1], [0, 1], color="#999", ls="--", lw=1)
    ax.plot(calibration["mean_predicted"], calibration["observed_rate"], marker="o", color=PALETTE[3])
    ax.set_xlabel("mean predicted churn probability")
    ax.set_ylabel("realised churn rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    return _data_uri(fig)


@dataclass(frozen=True)
class _Table:
    """An HTML table's text: the first ``text_cols`` columns are text (left-aligned), the rest numbers."""

    id: str
    header: list[str]
    rows: list[list[str]]
    text_cols: int = 1


def _pivot(segments: pd.DataFrame, value: str, fmt) -> tuple[list[str], list[list[str]]]:
    table = segments.pivot(index="as_of", columns="segment", values=value)
    header = ["Scoring date", *[str(c) for c in table.columns]]
    rows = [[str(d), *[fmt(v) for v in r]] for d, r in zip(table.index, table.to_numpy(), strict=True)]
    return header, rows


def _tables(result: MonitorResult) -> dict[str, _Table | None]:
    c = result.config
    book = _Table("book", ["Scoring date", "Customers", "Total CLV", "Mean CLV", "Mean churn probability",
                           "Total expected spend", "Mean expected spend"], [
        [str(r["as_of"]), f"{int(r['customers']):,}", fmt_money(r["total_clv"]), fmt_money(r["mean_clv"]),
         fmt_number(r["mean_churn_probability"]), fmt_money(r["total_expected_spend"]), fmt_money(r["mean_expected_spend"])]
        for _, r in result.book.iterrows()
    ])  # fmt: skip
    out: dict[str, _Table | None] = {"book": book}
    empty = pd.DataFrame(columns=["as_of", "segment", "mean_clv", "mean_expected_spend", "mean_churn_probability"])
    channels = result.segments.get("channel", empty)
    for key, value, fmt, title in (
        ("channel_clv", "mean_clv", fmt_money, "Mean CLV"),
        ("channel_spend", "mean_expected_spend", fmt_money, "Mean expected spend"),
        ("channel_churn", "mean_churn_probability", fmt_number, "Mean churn probability"),
    ):
        header, rows = _pivot(channels, value, fmt)
        out[key] = _Table(key, [f"{title} — {header[0]}", *header[1:]], rows)
    for key, column in (("tier", "clv_tier"), ("rfm", "rfm_segment")):
        header, rows = _pivot(result.segments.get(column, empty), "mean_clv", fmt_money)
        out[key] = _Table(key, [f"Mean CLV by {column} — {header[0]}", *header[1:]], rows)
    if result.migration is not None:
        m = result.migration
        out["migration"] = _Table("migration", ["Previous \\ latest", *[str(x) for x in m.columns]],
                                  [[str(i), *[f"{int(v):,}" for v in row]] for i, row in zip(m.index, m.to_numpy())])  # fmt: skip
    else:
        out["migration"] = None
    out["moves"] = _Table("moves", ["Segment", "Metric", "Customers", "Change", "Rest of book", "Difference", "z", "Status"], [
        [f"{r['segment_column']}={r['segment']}", str(r["metric"]), f"{int(r['customers']):,}", fmt_share(r["change"]),
         fmt_share(r["rest_change"]), fmt_share(r["difference"]), fmt_number(r["z"], "+.1f"),
         "alert" if r["alerts"] else "ok"]
        for _, r in result.moves.iterrows()
    ], text_cols=2)  # fmt: skip

    def drift(table_id, frame, with_importance):
        if frame is None:
            return None
        header = ["Column", "PSI", "KS D", "KS p-value", "Missing", "Missing (reference)"]
        header += ["Gain share"] if with_importance else []
        rows = []
        for _, r in frame.iterrows():
            row = [str(r["column"]), fmt_number(r["psi"]), fmt_number(r["ks_statistic"]), fmt_number(r["ks_pvalue"], ".2g"),
                   fmt_share(r["missing_share"]), fmt_share(r["reference_missing_share"])]  # fmt: skip
            row += [fmt_share(r["importance"])] if with_importance else []
            rows.append([*row, str(r["status"]), "yes" if r["alerts"] else "no"])
        return _Table(table_id, [*header, "Status", "Alerts"], rows)

    out["prediction_drift"] = drift("prediction_drift", result.prediction_drift, False)
    out["feature_drift"] = drift("feature_drift", result.feature_drift, True)

    def perf_rows(frame, first):
        return [
            [str(r[first]), f"{int(r['customers']):,}", fmt_money(r["mae"]), fmt_number(r["gini"]), fmt_number(r["churn_auc"]),
             fmt_number(r["mean_churn_probability"]), fmt_number(r["churn_rate"]), fmt_money(r["total_predicted"]),
             fmt_money(r["total_actual"]), fmt_share(r["bias"])]  # fmt: skip
            for _, r in frame.iterrows()
        ]

    perf_header = ["Customers", "MAE", "Gini", "Churn AUC", "Mean churn probability", "Churn rate",
                   "Total predicted", "Total actual", "Bias"]  # fmt: skip
    if len(result.performance):
        p = result.performance
        rows = perf_rows(p, "as_of")
        for row, auc in zip(rows, p["holdout_churn_auc"], strict=True):
            row.insert(5, fmt_number(auc))
        header = ["Scoring date", *perf_header]
        header.insert(5, "Holdout AUC")
        out["performance"] = _Table("performance", header, rows)
        for key, column in (("performance_channel", "channel"), ("performance_tier", "clv_tier")):
            frame = result.performance_by_segment.get(column)
            out[key] = None if frame is None else _Table(key, [column, *perf_header], perf_rows(frame, "segment"))
        bias = result.segment_bias
        out["segment_bias"] = _Table("segment_bias", ["Segment", "Customers", "Realised / predicted", "Rest of book",
                                                      "Difference", "z", "Status"], [
            [f"{r['segment_column']}={r['segment']}", f"{int(r['customers']):,}", fmt_share(r["realised_share"]),
             fmt_share(r["rest_realised_share"]), fmt_share(r["difference"]), fmt_number(r["z"], "+.1f"),
             "alert" if r["alerts"] else "ok"]
            for _, r in bias.iterrows()
        ])  # fmt: skip
        cal = result.calibration
        out["calibration"] = _Table("calibration", ["Probability bin", "Customers", "Mean predicted", "Realised rate"], [
            [f"{r['bin_lower']:.1f}–{r['bin_upper']:.1f}", f"{int(r['customers']):,}", fmt_number(r["mean_predicted"]),
             fmt_number(r["observed_rate"])]
            for _, r in cal.iterrows()
        ])  # fmt: skip
    else:
        for key in ("performance", "performance_channel", "performance_tier", "segment_bias", "calibration"):
            out[key] = None
    out["thresholds"] = _Table("thresholds", ["Setting", "Value"], [[k, str(v)] for k, v in c.model_dump().items()])
    return out


@functools.cache
def _environment() -> Environment:
    # Built on first use, not at import; autoescape: every value is text, the markup is the template's.
    return Environment(
        loader=PackageLoader("serving.monitor", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_report(result: MonitorResult) -> str:
    """The HTML page of a monitor run.

    Parameters
    ----------
    result : MonitorResult

    Returns
    -------
    str
        A complete HTML document; the status box has id ``status`` and every table an id
        (``book``, ``channel_clv``, ``moves``, ``prediction_drift``, ``feature_drift``,
        ``performance``, ``segment_bias``, ``thresholds``, ...) so that tests can read them back.
    """
    c = result.config
    latest = result.latest
    charts = {
        "book": _chart_book(result.book),
        "channels": _chart_channels(result.segments["channel"]) if "channel" in result.segments else None,
        "drift": None if result.feature_drift is None else _chart_drift(result.feature_drift, c.psi_warn, c.psi_alert),
        "performance": _chart_performance(result.performance) if len(result.performance) else None,
        "calibration": None if result.calibration is None else _chart_calibration(result.calibration),
    }
    th = {
        **c.model_dump(),
        "segment_change_alert_pct": fmt_share(c.segment_change_alert, 0),
        "segment_bias_alert_pct": fmt_share(c.segment_bias_alert, 0),
        "bias_alert_pct": fmt_share(c.bias_alert, 0),
        "drift_min_importance_pct": fmt_share(c.drift_min_importance, 0),
    }
    return _environment().get_template(TEMPLATE).render(
        latest={k: latest[k] for k in ("as_of", "churn_model_version", "spend_model_version", "horizon_days")},
        n_scorings=len(result.scorings),
        data_end=result.data_end,
        alerts=[a.message for a in result.alerts],
        notes=result.notes,
        previous_as_of=result.previous_as_of,
        reference_as_of=result.reference_as_of,
        latest_matured=result.latest_matured,
        tables=_tables(result),
        charts=charts,
        th=th,
    )
