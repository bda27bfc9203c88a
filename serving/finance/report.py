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
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

__all__ = [
    "clv_concentration", "fmt_money", "fmt_months", "fmt_ratio", "render_report", "segment_sizes", "tier_sizes",
]

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
        # On a white box: the target and break-even lines pass behind the value, not through it.
        ax.text(min(v, cap) if np.isfinite(v) else cap, yi, f" {fmt_ratio(float(v))}", va="center", fontsize=8,
                bbox=dict(facecolor="white", edgecolor="none", pad=0.5), zorder=3)  # fmt: skip
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
    ax.plot([], [], color="grey", ls="--", lw=0.8, label="mean CAC (dashed)")
    ax.set_xlabel("months since acquisition")
    ax.set_ylabel("cumulative margin per customer")
    # Beside the axes: inside, the legend hid the curves and CAC lines it names.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(alpha=0.3)
    return _data_uri(fig)


def _chart_forecast(forecast: pd.DataFrame) -> str:
    fig, ax = _figure()
    m = np.arange(len(forecast))
    band = dict(alpha=0.2)
    ax.fill_between(m, forecast["revenue_low"], forecast["revenue_high"], color="#1f77b4",
                    label="revenue, 80% interval", **band)
    ax.plot(m, forecast["expected_revenue"], color="#1f77b4", marker="o", label="expected revenue")
    ax.fill_between(m, forecast["margin_low"], forecast["margin_high"], color="#2ca02c",
                    label="margin, 80% interval", **band)
    ax.plot(m, forecast["expected_margin"], color="#2ca02c", marker="o", label="expected margin")
    ax.set_xlabel("calendar month (* = the rest of the scoring date's month)")
    ax.set_ylabel("currency per month")
    labels = [f"{month}*" if partial else str(month) for month, partial in zip(forecast["month"], forecast["partial_month"])]
    ax.set_xticks(m, labels=labels, rotation=45, ha="right")
    ax.set_ylim(bottom=min(0.0, float(forecast["margin_low"].min())))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _data_uri(fig)


def clv_concentration(clv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative share of total CLV held by the top x share of customers (a cumulative-gains curve).

    Parameters
    ----------
    clv : ndarray of shape (n,)
        Predicted CLV per customer, currency.

    Returns
    -------
    share_of_customers, share_of_clv : ndarray of shape (n + 1,)
        From (0, 0) to (1, 1), customers ordered from the highest CLV down; the CLV share is NaN
        when the total is not positive.
    """
    ordered = np.sort(np.asarray(clv, float))[::-1]
    total = ordered.sum()
    x = np.arange(len(ordered) + 1) / max(len(ordered), 1)
    y = np.concatenate([[0.0], np.cumsum(ordered)]) / total if total > 0 else np.full(len(ordered) + 1, np.nan)
    return x, y


def _chart_clv(clv: np.ndarray) -> str:
    # Most customers' CLV is near zero: a linear histogram is one bar. Counts on a log scale show
    # the tail, and the gains curve says how concentrated the value is.
    fig = Figure(figsize=(11, 3.8))
    hist, gains = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    hi = float(np.quantile(clv, 0.99)) if len(clv) else 1.0
    lo = min(0.0, float(clv.min())) if len(clv) else 0.0
    hist.hist(np.clip(clv, lo, hi), bins=50, color="#1f77b4")
    hist.set_yscale("log")
    hist.set_xlabel("predicted remaining CLV per customer\n(above the 99th percentile: in the last bar)")
    hist.set_ylabel("customers (log scale)")
    x, y = clv_concentration(clv)
    gains.plot(100 * x, 100 * y, color="#1f77b4", label="customers by CLV, highest first")
    gains.plot([0, 100], [0, 100], color="grey", ls=":", lw=0.8, label="equal CLV")
    for top in (10, 20):
        if len(clv) and np.isfinite(y).all():
            share = 100 * float(np.interp(top / 100, x, y))
            gains.annotate(f"top {top}%: {share:.0f}% of CLV", (top, share), textcoords="offset points",
                           xytext=(8, -14 if top == 20 else -4), fontsize=8)  # fmt: skip
            gains.plot([top], [share], "o", color="#1f77b4", ms=4)
    gains.set(xlabel="% of customers", ylabel="% of total CLV", xlim=(0, 100), ylim=(0, 101))
    gains.legend(fontsize=8, loc="lower right")
    gains.grid(alpha=0.3)
    fig.tight_layout()
    return _data_uri(fig)


#: Cohort map colour of a cohort too small for advice (``recommendation_note`` set).
TOO_FEW = ("too few customers", "#dcdcdc")


def _chart_cohorts(cohorts: pd.DataFrame) -> str:
    """Recommendation of each acquisition month (columns) and channel (rows), coloured as in the tables."""
    colours = {**COLOURS, TOO_FEW[0]: TOO_FEW[1]}
    order = list(colours)  # grow, hold, cut, unknown, too few customers
    shown = cohorts["recommendation"].where(cohorts["recommendation"].notna(), TOO_FEW[0])
    grid = cohorts.assign(recommendation=shown).pivot_table(
        index="channel", columns="cohort", values="recommendation", aggfunc="first"
    )
    codes = grid.apply(lambda col: col.map({r: i for i, r in enumerate(order)})).to_numpy(dtype=float)
    fig = Figure(figsize=(11, 0.9 + 0.42 * max(len(grid), 2)))
    ax = fig.subplots()
    cmap = ListedColormap([colours[r] for r in order])
    cmap.set_bad("#ffffff")  # no customer of that channel acquired that month
    ax.imshow(np.ma.masked_invalid(codes), cmap=cmap, vmin=-0.5, vmax=len(order) - 0.5, aspect="auto",
              interpolation="nearest")  # fmt: skip
    ax.set_yticks(np.arange(len(grid)), labels=list(grid.index))
    step = max(1, len(grid.columns) // 16)
    ax.set_xticks(np.arange(0, len(grid.columns), step), labels=list(grid.columns[::step]), rotation=45, ha="right")
    ax.set_xlabel("acquisition month (cohort)")
    handles = [Patch(color=colours[r], label=r) for r in order if (grid == r).any().any()]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return _data_uri(fig)


def _chart_segments(sizes: pd.DataFrame) -> str:
    fig, ax = _figure(9, 0.5 + 0.4 * max(len(sizes), 2))
    y = np.arange(len(sizes))
    ax.barh(y, sizes["customers"], color="#8c564b")
    ax.set_yticks(y, labels=list(sizes["rfm_segment"]))
    ax.invert_yaxis()
    ax.set_xlabel("customers")
    return _data_uri(fig)


def _chart_p_alive(segments: pd.DataFrame, sizes: pd.DataFrame) -> str:
    """Distribution of P(alive) over the customers, and its mean per RFM segment."""
    fig = Figure(figsize=(11, 0.9 + max(3.0, 0.36 * len(sizes))))
    hist, by_segment = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    hist.hist(segments["p_alive"].to_numpy(dtype=float), bins=np.linspace(0, 1, 21), color="#6a3d9a")
    hist.set_xlabel("P(alive): probability the customer has not dropped out")
    hist.set_ylabel("customers")
    hist.set_xlim(0, 1)
    y = np.arange(len(sizes))
    by_segment.barh(y, sizes["mean_p_alive"], color="#6a3d9a")
    by_segment.set_yticks(y, labels=list(sizes["rfm_segment"]))
    by_segment.invert_yaxis()
    by_segment.set_xlim(0, 1)
    by_segment.set_xlabel("mean P(alive)")
    fig.tight_layout()
    return _data_uri(fig)


def _diagnostic_charts(diagnostics: dict[str, pd.DataFrame], horizon_days: float) -> dict[str, str]:
    """The BTYD diagnostics of the champion's training run, drawn as the run drew them (:mod:`training.plots`)."""
    from training import plots  # deferred: only a report with diagnostics draws them

    charts = {}
    expected = diagnostics.get("btyd_frequency_recency_expected")
    alive = diagnostics.get("btyd_frequency_recency_alive")
    if expected is not None and alive is not None:
        charts["frequency_recency"] = _data_uri(
            plots.frequency_recency_plot(expected, alive, horizon_label=f"{horizon_days:g} days")
        )
    if "btyd_calibration_holdout" in diagnostics:
        charts["calibration_holdout"] = _data_uri(plots.calibration_holdout_plot(diagnostics["btyd_calibration_holdout"]))
    if "btyd_tracking" in diagnostics:
        charts["tracking"] = _data_uri(plots.tracking_plot(diagnostics["btyd_tracking"]))
    return charts


def segment_sizes(segments: pd.DataFrame) -> pd.DataFrame:
    """Customers, share, total and mean CLV, mean churn probability and P(alive) per RFM segment, largest first.

    Parameters
    ----------
    segments : DataFrame
        ``segments`` of a BudgetResult: ``rfm_segment``, ``clv`` (currency units),
        ``churn_probability`` and ``p_alive`` (0..1).

    Returns
    -------
    DataFrame
        One row per segment: ``rfm_segment``, ``customers``, ``total_clv``, ``mean_clv``,
        ``mean_churn_probability``, ``mean_p_alive``, ``share`` (of all customers, 0..1).
    """
    g = segments.groupby("rfm_segment", sort=True)
    out = pd.DataFrame(
        {
            "customers": g.size(),
            "total_clv": g["clv"].sum(),
            "mean_clv": g["clv"].mean(),
            "mean_churn_probability": g["churn_probability"].mean(),
            "mean_p_alive": g["p_alive"].mean(),
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


def _segment_definitions() -> dict[str, str]:
    """Each segment's rule in words: the RFM rules of :mod:`serving.segments`, and the two labels outside them."""
    from serving.finance.budget import NOT_SCORED
    from serving.segments import PROSPECT_SEGMENT, segment_definitions

    return {
        **segment_definitions(),
        PROSPECT_SEGMENT: "no purchase yet: valued by the prospect model",
        NOT_SCORED: "acquired by the scoring date but not in the scores: counted at CLV 0",
    }


def _forecast_period(s: dict) -> str:
    """The forecast's dates in words, e.g. ``2024-04-01 to 2025-03-31``."""
    return f"{s['forecast_start']} to {s['forecast_end']}"


def _tables(result) -> dict[str, _Table]:
    """The page's tables as formatted text, by id."""
    s = result.summary
    summary_rows = [
        ["Scoring date", s["as_of"]],
        ["Customers acquired by the scoring date", f"{s['customers']:,}"],
        ["... of them not in the scores (counted at CLV 0)", f"{s.get('customers_not_scored', 0):,}"],
        ["Transactions before acquisition (not in realised margin)",
         f"{s.get('transactions_before_acquisition', 0):,}"],
        ["Predicted remaining CLV, total", fmt_money(s["total_clv"])],
        ["Predicted remaining CLV, mean per customer", fmt_money(s["mean_clv"])],
        ["Realised margin to date, total", fmt_money(s["total_realised_margin"])],
        ["Acquisition cost paid, total", fmt_money(s["total_cac"])],
        ["LTV:CAC, all channels", fmt_ratio(s["overall_ltv_cac"])],
        [f"Expected revenue, {_forecast_period(s)}", fmt_money(s["forecast_revenue"])],
        ["Revenue 80% interval, low", fmt_money(s["forecast_revenue_low"])],
        ["Revenue 80% interval, high", fmt_money(s["forecast_revenue_high"])],
        [f"Expected margin, {_forecast_period(s)}", fmt_money(s["forecast_margin"])],
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
            f"{r['month']} (partial)" if r["partial_month"] else str(r["month"]), str(r["period_start"]),
            str(r["period_end"]), fmt_money(r["expected_revenue"]), fmt_money(r["revenue_low"]),
            fmt_money(r["revenue_high"]), fmt_money(r["expected_margin"]), fmt_money(r["margin_low"]),
            fmt_money(r["margin_high"]), f"{r['expected_active_customers']:,.1f}",
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
            f"{r['mean_p_alive']:.2f}",
        ]  # fmt: skip
        for _, r in segment_sizes(result.segments).iterrows()
    ]
    cohorts = [
        [
            str(r["cohort"]), str(r["channel"]), f"{int(r['customers']):,}", str(int(r["age_months"])),
            fmt_money(r["mean_cac"]), fmt_money(r["mean_ltv"]), fmt_ratio(r["ltv_cac"]),
            f"{r['credibility']:.2f}", fmt_ratio(r["credible_ltv_cac"]), fmt_months(r["payback_months"]),
            str(r["recommendation"]) if pd.notna(r["recommendation"]) else str(r["recommendation_note"]),
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
            [
                "Month", "From", "To", "Revenue", "Revenue low", "Revenue high", "Margin", "Margin low", "Margin high",
                "Customers alive at month end",
            ],  # fmt: skip
            forecast,
            text_cols=3,
        ),
        "tiers": _Table("tiers", ["CLV tier", "Customers", "Total CLV", "Mean CLV"], tiers),
        "segments": _Table(
            "segments",
            ["RFM segment", "Customers", "Share", "Total CLV", "Mean CLV", "Mean churn probability", "Mean P(alive)"],
            segments,
        ),
        "cohorts": _Table(
            "cohorts",
            [
                "Cohort", "Channel", "Customers", "Age (months)", "Mean CAC", "LTV", "LTV:CAC", "Credibility",
                "Credible LTV:CAC", "Payback (months)", "Recommendation",
            ],  # fmt: skip
            cohorts,
            text_cols=2,
            rec_col=10,
        ),
    }


def _pct(x) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def _chart_retention(cohort_retention: pd.DataFrame) -> str:
    """Share still subscribed by months since the first invoice: one line per signup year (mean of its cohorts)."""
    fig, ax = _figure()
    frame = cohort_retention.set_index("cohort")
    ages = [c for c in frame.columns if str(c).isdigit()]
    curves = frame[ages].astype(float)
    curves.columns = [int(c) for c in ages]
    years = pd.Index(frame.index.astype(str).str[:4], name="year")
    for i, (year, group) in enumerate(curves.groupby(years)):
        mean = group.mean(axis=0).dropna()
        ax.plot(mean.index, mean.to_numpy(), color=PALETTE[i % len(PALETTE)], label=f"signed up in {year}")
    ax.set_xlabel("months since the first invoice")
    ax.set_ylabel("share still subscribed")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(alpha=0.3)
    return _data_uri(fig)


def _saas_tables(saas: dict[str, pd.DataFrame]) -> dict[str, _Table]:
    """The subscription section's tables (from :func:`serving.subscription_mode.saas_tables`), by id."""
    bridge = saas["mrr_bridge"].tail(12)
    out = {"saas_mrr": _Table(
        "saas_mrr", ["Month", "MRR at start", "New", "Expansion", "Contraction", "Churned", "Reactivated", "MRR", "ARR",
                     "Customers"],
        [[str(pd.Timestamp(r["month"]).strftime("%Y-%m")), *(fmt_money(r[c]) for c in (
            "mrr_start", "new", "expansion", "contraction", "churned", "reactivated", "mrr", "arr")),
          f"{int(r['customers']):,}"] for _, r in bridge.iterrows()],
    )}
    churn_rows = []
    for kind in ("channel", "plan"):
        for _, r in saas[f"churn_by_{kind}"].iterrows():
            churn_rows.append([kind, str(r[kind]), _pct(r["logo_churn"]), _pct(r["revenue_churn"]),
                               _pct(r["net_revenue_churn"])])
    out["saas_churn"] = _Table("saas_churn", ["By", "Group", "Logo churn / month", "Revenue churn / month",
                                              "Net revenue churn / month"], churn_rows, text_cols=2)
    retention = saas["retention"]
    if len(retention):
        latest = retention.loc[pd.to_datetime(retention["base_month"]) == pd.to_datetime(retention["base_month"]).max()]
        out["saas_retention"] = _Table(
            "saas_retention", ["Channel", "Base month", "Customers", "GRR, 12 months", "NRR, 12 months"],
            [[str(r["channel"]), str(pd.Timestamp(r["base_month"]).strftime("%Y-%m")), f"{int(r['customers']):,}",
              _pct(r["grr"]), _pct(r["nrr"])] for _, r in latest.iterrows()], text_cols=2)
    new = saas["new_subscriber_clv"]
    out["saas_new"] = _Table(
        "saas_new", ["Channel", "Recent signups", "CLV of a new subscriber", "80% interval", "Mean CAC", "LTV:CAC",
                     "Payback, months"],
        [[str(r["channel"]), f"{int(r['signups']):,}", fmt_money(r["clv"]),
          f"{fmt_money(r['clv_lower'])} – {fmt_money(r['clv_upper'])}", fmt_money(r["acquisition_cost"]),
          fmt_ratio(r["ltv_cac"]), fmt_months(r["payback_months"])] for _, r in new.iterrows()])
    payback = saas["cac_payback"]
    if len(payback):
        out["saas_payback"] = _Table(
            "saas_payback", ["Channel", "Customers", "Mean CAC", "First MRR", "Payback, months (CAC / margin of the "
                             "first MRR)", "Payback, months (observed margin)"],
            [[str(r["channel"]), f"{int(r['customers']):,}", fmt_money(r["mean_cac"]), fmt_money(r["first_mrr"]),
              fmt_months(r["payback_months_formula"]), fmt_months(r["payback_months_observed"])]
             for _, r in payback.iterrows()])
    if "clv_by_channel" in saas:
        out["saas_classic"] = _Table(
            "saas_classic", ["Channel", "Subscribers", "MRR", "Mean CLV (contractual)", "Mean CLV (classic)",
                             "Classic / contractual"],
            [[str(r["channel"]), f"{int(r['subscribers']):,}", fmt_money(r["mrr"]), fmt_money(r["clv"]),
              fmt_money(r["clv_classic"]), fmt_ratio(r["classic_over_contractual"])]
             for _, r in saas["clv_by_channel"].iterrows()])
    return out


def render_report(result, saas: dict[str, pd.DataFrame] | None = None) -> str:
    """The HTML page of a :class:`serving.finance.BudgetResult`.

    Parameters
    ----------
    result : BudgetResult
        Frames and headline numbers from :func:`serving.finance.compute_budget`.
    saas : dict of str to DataFrame, optional
        The SaaS tables of a subscription business (:func:`serving.subscription_mode.saas_tables`):
        adds a section with the MRR bridge, logo and revenue churn by channel and plan, GRR and NRR,
        the cohort retention curves, the new subscriber's CLV, LTV:CAC and payback, and the classic
        formula beside the contractual CLV (tables ``saas_*``, one more chart).

    Returns
    -------
    str
        A complete HTML document (template ``report.html.j2``); tables carry ids (``summary``,
        ``channels``, ``forecast``, ``tiers``, ``segments``, ``cohorts``) so that tests can read
        them back; seven charts are embedded as PNG data URIs, and the three BTYD diagnostic charts
        (frequency x recency, calibration vs holdout, tracking) when ``result.diagnostics`` holds
        their tables.
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
        "p_alive": _chart_p_alive(result.segments, segment_sizes(result.segments)),
        "cohorts": _chart_cohorts(result.cohorts),
    }
    diagnostics = _diagnostic_charts(result.diagnostics, st["horizon_days"])
    return _environment().get_template(TEMPLATE).render(
        s=s,
        st=st,
        target=target,
        years=st["lifetime_horizons"] * st["horizon_days"] / 365,
        kpis=[
            ("Customers scored", f"{s['customers']:,}"),
            ("Predicted remaining CLV, total", fmt_money(s["total_clv"])),
            (f"Revenue, {_forecast_period(s)}", fmt_money(s["forecast_revenue"])),
            ("80% interval of that revenue", f"{fmt_money(s['forecast_revenue_low'])} – {fmt_money(s['forecast_revenue_high'])}"),
            ("LTV:CAC, all channels", fmt_ratio(s["overall_ltv_cac"])),
        ],
        tables=_tables(result),
        charts=charts,
        decay=s.get("forecast_decay", "bgnbd"),
        seasonality=list(zip(MONTH_NAMES, seasonality)) if seasonal else None,
        referrals=s.get("total_referral_credit") is not None,
        segment_rules=list(_segment_definitions().items()),
        p_alive=_p_alive_figures(result.segments),
        diagnostics=diagnostics,
        saas=None if saas is None else {"tables": _saas_tables(saas),
                                        "retention_chart": _chart_retention(saas["cohort_retention"])},
    )


def _p_alive_figures(segments: pd.DataFrame) -> dict[str, str]:
    """Headline figures of P(alive) for the page's text: mean, and the shares above 0.5 and below 0.1."""
    p = segments["p_alive"].to_numpy(dtype=float)
    if not len(p):
        return {"mean": "–", "above_half": "–", "below_tenth": "–"}
    return {
        "mean": f"{p.mean():.2f}",
        "above_half": f"{100 * (p > 0.5).mean():.0f}%",
        "below_tenth": f"{100 * (p < 0.1).mean():.0f}%",
    }
