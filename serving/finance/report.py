"""The finance report: one self-contained HTML page (inline CSS, charts as embedded PNG images).

Every number on the page is read from a :class:`serving.finance.BudgetResult`, the same frames that
are written to the CSV files, and formatted with the helpers below (two decimals, thousands
separators, ``never`` for a payback beyond the lifetime cap, ``–`` for unknown), so a reader can
check each figure against the CSVs. The markup is the jinja2 template
``serving/finance/templates/report.html.j2`` (autoescaped); this module gives it the formatted
numbers, the table rows and the charts (matplotlib, drawn with the Agg renderer into PNG data URIs).
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

__all__ = ["fmt_money", "fmt_months", "fmt_ratio", "render_report", "segment_sizes", "tier_sizes"]

COLOURS = {"grow": "#2e7d32", "hold": "#f9a825", "cut": "#c62828", "unknown": "#9e9e9e"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
TEMPLATE = "report.html.j2"


def fmt_money(x) -> str:
    """Currency with thousands separators and two decimals; ``–`` when unknown."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.2f}"


def fmt_ratio(x) -> str:
    """A ratio to two decimals; ``∞`` for no cost, ``–`` when unknown."""
    if x is None or math.isnan(x):
        return "–"
    return "∞" if math.isinf(x) else f"{x:.2f}"


def fmt_months(x) -> str:
    """Months to one decimal; ``never`` when the CAC is not recovered within the lifetime cap."""
    if x is None or math.isnan(x):
        return "–"
    return "never" if math.isinf(x) else f"{x:.1f}"


def _data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _figure(width: float = 9.0, height: float = 4.0):
    # The object-oriented Figure renders with Agg without touching pyplot's global backend state.
    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot()


def _chart_ltv_cac(channels: pd.DataFrame, target: float) -> str:
    fig, ax = _figure(9, 0.5 + 0.45 * max(len(channels), 2))
    ratio = channels["ltv_cac"].to_numpy(dtype=float)
    finite = np.where(np.isfinite(ratio), ratio, np.nan)
    cap = np.nanmax(np.append(finite, target)) * 1.15 if len(channels) else target * 1.15
    shown = np.where(np.isinf(ratio), cap, np.nan_to_num(ratio, nan=0.0))
    colours = [COLOURS.get(r, "#9e9e9e") for r in channels["recommendation"]]
    y = np.arange(len(channels))
    ax.barh(y, shown, color=colours)
    ax.set_yticks(y, labels=list(channels["channel"]))
    ax.invert_yaxis()
    ax.axvline(target, color="#333", ls="--", lw=1)
    ax.axvline(1.0, color="#c62828", ls=":", lw=1)
    ax.text(target, -0.7, f" target {target:g}", va="bottom", fontsize=8)
    for yi, v in zip(y, ratio):
        ax.text(min(v, cap) if np.isfinite(v) else cap, yi, f" {fmt_ratio(float(v))}", va="center", fontsize=8)
    ax.set_xlabel("LTV : CAC (value of a customer per unit of acquisition cost)")
    ax.set_xlim(0, cap * 1.1)
    return _data_uri(fig)


def _chart_payback(curves: pd.DataFrame, channels: pd.DataFrame) -> str:
    fig, ax = _figure()
    finite = channels["payback_months"].to_numpy(dtype=float)
    finite = finite[np.isfinite(finite)]
    horizon = int(min(len(curves) - 1, max(24, (finite.max() * 1.5) if len(finite) else 36)))
    months = curves.index.to_numpy()[: horizon + 1]
    for i, row in channels.reset_index(drop=True).iterrows():
        colour = PALETTE[i % len(PALETTE)]
        ax.plot(months, curves[row["channel"]].to_numpy()[: horizon + 1], color=colour, label=row["channel"])
        if np.isfinite(row["mean_cac"]):
            ax.axhline(row["mean_cac"], color=colour, ls="--", lw=0.8)
    ax.set_xlabel("months since acquisition")
    ax.set_ylabel("cumulative margin per customer")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    return _data_uri(fig)


def _chart_forecast(forecast: pd.DataFrame) -> str:
    fig, ax = _figure()
    m = forecast["month"].to_numpy()
    band = dict(alpha=0.2)
    ax.fill_between(m, forecast["revenue_low"], forecast["revenue_high"], color="#1f77b4",
                    label="revenue, 80% interval", **band)
    ax.plot(m, forecast["expected_revenue"], color="#1f77b4", marker="o", label="expected revenue")
    ax.fill_between(m, forecast["margin_low"], forecast["margin_high"], color="#2ca02c",
                    label="margin, 80% interval", **band)
    ax.plot(m, forecast["expected_margin"], color="#2ca02c", marker="o", label="expected margin")
    ax.set_xlabel("month after the scoring date")
    ax.set_ylabel("currency per month")
    ax.set_xticks(m)
    ax.set_ylim(bottom=min(0.0, float(forecast["margin_low"].min())))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _data_uri(fig)


def _chart_clv(clv: np.ndarray) -> str:
    fig, ax = _figure(9, 3.5)
    hi = float(np.quantile(clv, 0.99)) if len(clv) else 1.0
    lo = min(0.0, float(clv.min())) if len(clv) else 0.0
    ax.hist(np.clip(clv, lo, hi), bins=50, color="#1f77b4")
    ax.set_xlabel("predicted remaining CLV per customer (values above the 99th percentile shown in the last bar)")
    ax.set_ylabel("customers")
    return _data_uri(fig)


def _chart_segments(sizes: pd.DataFrame) -> str:
    fig, ax = _figure(9, 0.5 + 0.4 * max(len(sizes), 2))
    y = np.arange(len(sizes))
    ax.barh(y, sizes["customers"], color="#8c564b")
    ax.set_yticks(y, labels=list(sizes["rfm_segment"]))
    ax.invert_yaxis()
    ax.set_xlabel("customers")
    return _data_uri(fig)


def segment_sizes(segments: pd.DataFrame) -> pd.DataFrame:
    """Customers, share, total and mean CLV and mean churn probability per RFM segment, largest first.

    Parameters
    ----------
    segments : DataFrame
        ``segments`` of a BudgetResult: ``rfm_segment``, ``clv`` (currency units), ``churn_probability``.

    Returns
    -------
    DataFrame
        One row per segment: ``rfm_segment``, ``customers``, ``total_clv``, ``mean_clv``,
        ``mean_churn_probability``, ``share`` (of all customers, 0..1).
    """
    g = segments.groupby("rfm_segment", sort=True)
    out = pd.DataFrame(
        {
            "customers": g.size(),
            "total_clv": g["clv"].sum(),
            "mean_clv": g["clv"].mean(),
            "mean_churn_probability": g["churn_probability"].mean(),
        }
    )
    out["share"] = out["customers"] / max(len(segments), 1)
    return out.sort_values(["customers", "total_clv"], ascending=False).reset_index()


def tier_sizes(segments: pd.DataFrame) -> pd.DataFrame:
    """Customers, total and mean CLV per CLV tier, highest mean CLV first.

    Returns
    -------
    DataFrame
        One row per ``clv_tier`` of ``segments``: ``customers``, ``total_clv``, ``mean_clv``.
    """
    g = segments.groupby("clv_tier", sort=True)
    out = pd.DataFrame({"customers": g.size(), "total_clv": g["clv"].sum(), "mean_clv": g["clv"].mean()})
    return out.sort_values("mean_clv", ascending=False).reset_index()



@dataclass(frozen=True)
class _Table:
    """An HTML table's content: the first ``text_cols`` columns are text (left-aligned), the rest
    numbers; ``rec_col`` is the index of a recommendation column, coloured by its value."""

    id: str
    header: list[str]
    rows: list[list[str]]
    text_cols: int = 1
    rec_col: int | None = None


@functools.cache
def _environment() -> Environment:
    # Built on first use, not at import; autoescape: every value is text, the markup is the template's.
    env = Environment(
        loader=PackageLoader("serving.finance", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(money=fmt_money, ratio=fmt_ratio, months=fmt_months, num=format)
    return env


def _tables(result) -> dict[str, _Table]:
    """The page's tables as formatted text, by id."""
    s = result.summary
    summary_rows = [
        ["Scoring date", s["as_of"]],
        ["Customers scored", f"{s['customers']:,}"],
        ["Predicted remaining CLV, total", fmt_money(s["total_clv"])],
        ["Predicted remaining CLV, mean per customer", fmt_money(s["mean_clv"])],
        ["Realised margin to date, total", fmt_money(s["total_realised_margin"])],
        ["Acquisition cost paid, total", fmt_money(s["total_cac"])],
        ["LTV:CAC, all channels", fmt_ratio(s["overall_ltv_cac"])],
        [f"Expected revenue, next {s['forecast_months']} months", fmt_money(s["forecast_revenue"])],
        ["Revenue 80% interval, low", fmt_money(s["forecast_revenue_low"])],
        ["Revenue 80% interval, high", fmt_money(s["forecast_revenue_high"])],
        [f"Expected margin, next {s['forecast_months']} months", fmt_money(s["forecast_margin"])],
    ]
    if s.get("total_referral_credit") is not None:
        summary_rows.append(["Referral credit, total", fmt_money(s["total_referral_credit"])])
    channels = [
        [
            str(r["channel"]), f"{int(r['customers']):,}", fmt_money(r["mean_cac"]), fmt_money(r["total_cac"]),
            fmt_money(r["mean_clv"]), fmt_money(r["clv_low"]), fmt_money(r["clv_high"]),
            fmt_money(r["realised_margin"]), fmt_money(r["mean_ltv"]), fmt_ratio(r["ltv_cac"]),
            fmt_money(r["max_allowable_cac"]), fmt_months(r["payback_months"]), str(r["recommendation"]),
        ]  # fmt: skip
        for _, r in result.channels.iterrows()
    ]
    forecast = [
        [
            str(int(r["month"])), str(r["period_start"]), str(r["period_end"]),
            fmt_money(r["expected_revenue"]), fmt_money(r["revenue_low"]), fmt_money(r["revenue_high"]),
            fmt_money(r["expected_margin"]), fmt_money(r["margin_low"]), fmt_money(r["margin_high"]),
        ]  # fmt: skip
        for _, r in result.forecast.iterrows()
    ]
    tiers = [
        [str(r["clv_tier"]), f"{int(r['customers']):,}", fmt_money(r["total_clv"]), fmt_money(r["mean_clv"])]
        for _, r in tier_sizes(result.segments).iterrows()
    ]
    segments = [
        [
            str(r["rfm_segment"]), f"{int(r['customers']):,}", f"{100 * r['share']:.1f}%",
            fmt_money(r["total_clv"]), fmt_money(r["mean_clv"]), f"{r['mean_churn_probability']:.2f}",
        ]  # fmt: skip
        for _, r in segment_sizes(result.segments).iterrows()
    ]
    cohorts = [
        [
            str(r["cohort"]), str(r["channel"]), f"{int(r['customers']):,}", str(int(r["age_months"])),
            fmt_money(r["mean_cac"]), fmt_money(r["mean_ltv"]), fmt_ratio(r["ltv_cac"]),
            fmt_months(r["payback_months"]), str(r["recommendation"]),
        ]  # fmt: skip
        for _, r in result.cohorts.iterrows()
    ]
    return {
        "summary": _Table("summary", ["Figure", "Value"], summary_rows),
        "channels": _Table(
            "channels",
            [
                "Channel", "Customers", "Mean CAC", "Total CAC", "Mean CLV", "CLV low", "CLV high",
                "Realised margin", "LTV", "LTV:CAC", "Max allowable CAC", "Payback (months)", "Recommendation",
            ],  # fmt: skip
            channels,
            rec_col=12,
        ),
        "forecast": _Table(
            "forecast",
            ["Month", "From", "To", "Revenue", "Revenue low", "Revenue high", "Margin", "Margin low", "Margin high"],
            forecast,
            text_cols=3,
        ),
        "tiers": _Table("tiers", ["CLV tier", "Customers", "Total CLV", "Mean CLV"], tiers),
        "segments": _Table(
            "segments", ["RFM segment", "Customers", "Share", "Total CLV", "Mean CLV", "Mean churn probability"], segments
        ),
        "cohorts": _Table(
            "cohorts",
            [
                "Cohort", "Channel", "Customers", "Age (months)", "Mean CAC", "LTV", "LTV:CAC", "Payback (months)",
                "Recommendation",
            ],  # fmt: skip
            cohorts,
            text_cols=2,
            rec_col=8,
        ),
    }


def render_report(result) -> str:
    """The HTML page of a :class:`serving.finance.BudgetResult`.

    Parameters
    ----------
    result : BudgetResult
        Frames and headline numbers from :func:`serving.finance.compute_budget`.

    Returns
    -------
    str
        A complete HTML document (template ``report.html.j2``); tables carry ids (``summary``,
        ``channels``, ``forecast``, ``tiers``, ``segments``, ``cohorts``) so that tests can read
        them back, and five charts are embedded as PNG data URIs.
    """
    s = result.summary
    st = s["settings"]
    target = st["target_ratio"]
    seasonality = s.get("forecast_seasonality")
    seasonal = seasonality is not None and not np.allclose(seasonality, 1.0)
    charts = {
        "ltv_cac": _chart_ltv_cac(result.channels, target),
        "payback": _chart_payback(result.channel_curves, result.channels),
        "forecast": _chart_forecast(result.forecast),
        "clv": _chart_clv(result.segments["clv"].to_numpy(dtype=float)),
        "segments": _chart_segments(segment_sizes(result.segments)),
    }
    return _environment().get_template(TEMPLATE).render(
        s=s,
        st=st,
        target=target,
        years=st["lifetime_horizons"] * st["horizon_days"] / 365,
        kpis=[
            ("Customers scored", f"{s['customers']:,}"),
            ("Predicted remaining CLV, total", fmt_money(s["total_clv"])),
            (f"Revenue next {s['forecast_months']} months", fmt_money(s["forecast_revenue"])),
            ("80% interval of that revenue", f"{fmt_money(s['forecast_revenue_low'])} – {fmt_money(s['forecast_revenue_high'])}"),
            ("LTV:CAC, all channels", fmt_ratio(s["overall_ltv_cac"])),
        ],
        tables=_tables(result),
        charts=charts,
        decay=s.get("forecast_decay", "bgnbd"),
        seasonality=list(zip(MONTH_NAMES, seasonality)) if seasonal else None,
        referrals=s.get("total_referral_credit") is not None,
    )
