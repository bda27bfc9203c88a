"""The finance report: one self-contained HTML page (inline CSS, charts as embedded PNG images).

Every number on the page is read from the frames of a :class:`serving.finance.BudgetResult`, the same
frames written to the CSV files, and formatted with the helpers below (two decimals, thousands
separators, ``never`` for a payback beyond the lifetime cap, ``–`` for unknown), so a reader can
check each figure against the CSVs.
"""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
import pandas as pd

COLOURS = {"grow": "#2e7d32", "hold": "#f9a825", "cut": "#c62828", "unknown": "#9e9e9e"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222; margin: 0;
       background: #f6f7f9; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 26px; margin-bottom: 4px; } h2 { font-size: 20px; margin-top: 36px;
     border-bottom: 2px solid #e3e6ea; padding-bottom: 4px; }
p.lead { color: #555; margin-top: 0; } p.explain { color: #333; line-height: 1.5; max-width: 900px; }
table { border-collapse: collapse; margin: 12px 0; font-size: 13px; }
th, td { padding: 4px 8px; border-bottom: 1px solid #e3e6ea; text-align: right; white-space: nowrap; }
th { background: #eef1f4; white-space: normal; vertical-align: bottom; }
td.t, th.t { text-align: left; } div.scroll { overflow-x: auto; }
img { max-width: 100%; display: block; margin: 8px 0; }
.kpis { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.kpi { background: #eef1f4; border-radius: 6px; padding: 10px 14px; min-width: 180px; }
.kpi .v { font-size: 20px; font-weight: 600; } .kpi .l { font-size: 12px; color: #555; }
.rec-grow { color: #2e7d32; font-weight: 600; } .rec-cut { color: #c62828; font-weight: 600; }
.rec-hold { color: #a07800; font-weight: 600; } .rec-unknown { color: #777; }
.note { font-size: 12px; color: #666; }
"""


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


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode("ascii")}">'


def _figure(width: float = 9.0, height: float = 4.0):
    # The object-oriented Figure renders with Agg without touching pyplot's global backend state.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot()


def _table(
    table_id: str, header: list[str], rows: list[list[str]], *, text_cols: int = 1, rec_col: int | None = None
) -> str:
    """An HTML table; the first ``text_cols`` columns are left-aligned text, numbers right-aligned.

    ``rec_col`` is the index of a recommendation column, coloured by its value.
    """

    def cls(j: int, cell: str) -> str:
        names = (["t"] if j < text_cols else []) + ([f"rec-{cell}"] if j == rec_col and cell else [])
        return f' class="{" ".join(names)}"' if names else ""

    head = "".join(f"<th{cls(j, '')}>{html.escape(h)}</th>" for j, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(j, c)}>{html.escape(c)}</td>" for j, c in enumerate(row)) + "</tr>" for row in rows
    )
    table = f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


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
    return _png(fig)


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
    return _png(fig)


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
    return _png(fig)


def _chart_clv(clv: np.ndarray) -> str:
    fig, ax = _figure(9, 3.5)
    hi = float(np.quantile(clv, 0.99)) if len(clv) else 1.0
    lo = min(0.0, float(clv.min())) if len(clv) else 0.0
    ax.hist(np.clip(clv, lo, hi), bins=50, color="#1f77b4")
    ax.set_xlabel("predicted remaining CLV per customer (values above the 99th percentile shown in the last bar)")
    ax.set_ylabel("customers")
    return _png(fig)


def _chart_segments(sizes: pd.DataFrame) -> str:
    fig, ax = _figure(9, 0.5 + 0.4 * max(len(sizes), 2))
    y = np.arange(len(sizes))
    ax.barh(y, sizes["customers"], color="#8c564b")
    ax.set_yticks(y, labels=list(sizes["rfm_segment"]))
    ax.invert_yaxis()
    ax.set_xlabel("customers")
    return _png(fig)


def segment_sizes(segments: pd.DataFrame) -> pd.DataFrame:
    """Customers, share, total and mean CLV and mean churn probability per RFM segment, largest first."""
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
    """Customers, total and mean CLV per CLV tier, highest mean CLV first."""
    g = segments.groupby("clv_tier", sort=True)
    out = pd.DataFrame({"customers": g.size(), "total_clv": g["clv"].sum(), "mean_clv": g["clv"].mean()})
    return out.sort_values("mean_clv", ascending=False).reset_index()


def render_report(result) -> str:
    """The HTML page for a :class:`serving.finance.BudgetResult`.

    Parameters
    ----------
    result : BudgetResult
        Frames and headline numbers from :func:`serving.finance.budget`.

    Returns
    -------
    str
        A complete HTML document; tables carry ids (``summary``, ``channels``, ``forecast``,
        ``tiers``, ``segments``, ``cohorts``) so that tests can read them back.
    """
    s = result.summary
    st = s["settings"]
    ch = result.channels
    target = st["target_ratio"]
    esc = html.escape

    band_text = f"{fmt_money(s['forecast_revenue_low'])} – {fmt_money(s['forecast_revenue_high'])}"
    kpis = [
        ("Customers scored", f"{s['customers']:,}"),
        ("Predicted remaining CLV, total", fmt_money(s["total_clv"])),
        (f"Revenue next {s['forecast_months']} months", fmt_money(s["forecast_revenue"])),
        ("80% interval of that revenue", band_text),
        ("LTV:CAC, all channels", fmt_ratio(s["overall_ltv_cac"])),
    ]
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

    channel_rows = []
    for _, r in ch.iterrows():
        channel_rows.append(
            [
                str(r["channel"]),
                f"{int(r['customers']):,}",
                fmt_money(r["mean_cac"]),
                fmt_money(r["total_cac"]),
                fmt_money(r["mean_clv"]),
                fmt_money(r["clv_low"]),
                fmt_money(r["clv_high"]),
                fmt_money(r["realised_margin"]),
                fmt_money(r["mean_ltv"]),
                fmt_ratio(r["ltv_cac"]),
                fmt_money(r["max_allowable_cac"]),
                fmt_months(r["payback_months"]),
                str(r["recommendation"]),
            ]
        )
    channels_table = _table(
        "channels",
        [
            "Channel", "Customers", "Mean CAC", "Total CAC", "Mean CLV", "CLV low", "CLV high",
            "Realised margin", "LTV", "LTV:CAC", "Max allowable CAC", "Payback (months)", "Recommendation",
        ],  # fmt: skip
        channel_rows,
        rec_col=12,
    )

    fc = result.forecast
    forecast_table = _table(
        "forecast",
        ["Month", "From", "To", "Revenue", "Revenue low", "Revenue high", "Margin", "Margin low", "Margin high"],
        [
            [
                str(int(r["month"])), str(r["period_start"]), str(r["period_end"]),
                fmt_money(r["expected_revenue"]), fmt_money(r["revenue_low"]), fmt_money(r["revenue_high"]),
                fmt_money(r["expected_margin"]), fmt_money(r["margin_low"]), fmt_money(r["margin_high"]),
            ]  # fmt: skip
            for _, r in fc.iterrows()
        ],
        text_cols=3,
    )

    tiers = tier_sizes(result.segments)
    tiers_table = _table(
        "tiers",
        ["CLV tier", "Customers", "Total CLV", "Mean CLV"],
        [
            [str(r["clv_tier"]), f"{int(r['customers']):,}", fmt_money(r["total_clv"]), fmt_money(r["mean_clv"])]
            for _, r in tiers.iterrows()
        ],
    )
    sizes = segment_sizes(result.segments)
    segments_table = _table(
        "segments",
        ["RFM segment", "Customers", "Share", "Total CLV", "Mean CLV", "Mean churn probability"],
        [
            [
                str(r["rfm_segment"]), f"{int(r['customers']):,}", f"{100 * r['share']:.1f}%",
                fmt_money(r["total_clv"]), fmt_money(r["mean_clv"]), f"{r['mean_churn_probability']:.2f}",
            ]  # fmt: skip
            for _, r in sizes.iterrows()
        ],
    )
    co = result.cohorts
    cohorts_table = _table(
        "cohorts",
        [
            "Cohort", "Channel", "Customers", "Age (months)", "Mean CAC", "LTV", "LTV:CAC", "Payback (months)",
            "Recommendation",
        ],  # fmt: skip
        [
            [
                str(r["cohort"]), str(r["channel"]), f"{int(r['customers']):,}", str(int(r["age_months"])),
                fmt_money(r["mean_cac"]), fmt_money(r["mean_ltv"]), fmt_ratio(r["ltv_cac"]),
                fmt_months(r["payback_months"]), str(r["recommendation"]),
            ]  # fmt: skip
            for _, r in co.iterrows()
        ],
        text_cols=2,
        rec_col=8,
    )

    kpi_html = "".join(
        f'<div class="kpi"><div class="v">{esc(v)}</div><div class="l">{esc(k)}</div></div>' for k, v in kpis
    )
    years = st["lifetime_horizons"] * st["horizon_days"] / 365
    referral = (
        f"<p class='explain'>Referral credit: customers who referred others are credited "
        f"{100 * st['referral_share']:g}% of the predicted CLV of each customer they referred, minus the referral "
        f"bonus of {fmt_money(st['referral_bonus'])} paid per referral; per customer in "
        f"<code>segments.csv</code> (<code>referral_credit</code>). Channel figures are not adjusted for it.</p>"
        if s.get("total_referral_credit") is not None
        else ""
    )
    seasonality = s.get("forecast_seasonality")
    if seasonality is not None and not np.allclose(seasonality, 1.0):
        months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
        season_text = (
            "Each calendar month is weighted by its share of revenue in past years (1 = an average month; "
            + ", ".join(f"{m} {v:.2f}" for m, v in zip(months, seasonality))
            + ")."
        )
    else:
        season_text = "Past revenue is too short (under 13 complete months) to estimate seasonality: none is applied."
    if s.get("forecast_decay", "bgnbd") == "bgnbd":
        decay_text = (
            f"Each customer's expected spend over {st['horizon_days']:g} days, as the models predict it, sets the level "
            "(for a period of average season); from then on the customer's spend fades as the chance grows that the "
            "customer has stopped buying, estimated from that customer's purchase history (BG/NBD model)."
        )
    else:
        decay_text = (
            f"Each customer's expected spend over {st['horizon_days']:g} days, as the models predict it, sets the level; "
            "in each later period of that length, only the share of customers the models expect to buy again is kept."
        )
    forecast_method = html.escape(f"{decay_text} {season_text}", quote=False)
    body = f"""
<h1>Customer value and acquisition budget</h1>
<p class="lead">Customers as of {esc(s['as_of'])}. Every figure on this page is also in the CSV files next to it
(<code>channels.csv</code>, <code>forecast.csv</code>, <code>segments.csv</code>, <code>cohorts.csv</code>).</p>
<div class="kpis">{kpi_html}</div>
{_table("summary", ["Figure", "Value"], summary_rows)}

<h2>How much may we pay for a customer? LTV:CAC by channel</h2>
<p class="explain"><b>CAC</b> is what we paid to acquire a customer. <b>LTV</b> (lifetime value) is the margin a
customer brings from acquisition on: the margin already earned (<i>realised margin</i>) plus the margin the models
expect over the rest of the customer's life (<i>CLV</i>: gross margin {100 * st['margin']:g}% of expected spend, minus
a cost to serve of {fmt_money(st['cost_to_serve'])} per active customer and period of {st['horizon_days']:g} days,
discounted at {100 * st['annual_discount_rate']:g}% a year, at most {years:.1f} years ahead). <b>LTV:CAC</b> is the mean
LTV divided by the mean CAC: 3 means every unit spent on acquisition brings back 3 units of margin.
<b>Max allowable CAC</b> is the most we can pay per customer and still reach the target ratio of {target:g}.
Recommendation: <b>grow</b> when LTV:CAC is at least {target:g}, <b>cut</b> when it is below 1 (customers do not
even repay what they cost), <b>hold</b> in between. "CLV low / high" is the 80% interval of the channel's mean CLV.</p>
{_chart_ltv_cac(ch, target)}
{channels_table}

<h2>When does a customer pay back?</h2>
<p class="explain">Each line is the average cumulative margin of a channel's customers by month since acquisition:
what they earned so far, then what the models expect (customers who leave stop contributing; later months are
discounted). The dashed line of the same colour is that channel's average CAC; where the two cross is the
<b>payback</b> month in the table above. "never" means the expected margin does not cover the CAC within
{years:.1f} years.</p>
{_chart_payback(result.channel_curves, ch)}

<h2>Revenue and margin of the current customers, next {s['forecast_months']} months</h2>
<p class="explain">Expected revenue and margin per month from the customers we have today (no new customers).
{forecast_method}
The band is an 80% interval: in 8 of 10 simulated futures the month lands inside it. It accounts for which
customers stay, how much each spends, and a shared uncertainty of {100 * st['common_cv']:g}% for effects that move
all customers together. The 80% interval of the {s['forecast_months']}-month total is
{fmt_money(s['forecast_revenue_low'])} to {fmt_money(s['forecast_revenue_high'])}; it is narrower than the sum of the
monthly bands because good and bad months partly offset.</p>
{_chart_forecast(fc)}
{forecast_table}

<h2>How is value spread across customers?</h2>
<p class="explain">Distribution of the predicted remaining CLV per customer, and the CLV tiers (customers ranked
by CLV: the top 10%, the next 10%, ...). Usually a small share of customers carries most of the value.</p>
{_chart_clv(result.segments["clv"].to_numpy(dtype=float))}
{tiers_table}

<h2>Segments</h2>
<p class="explain">RFM segments group customers by how recently they bought (R), how often (F) and how much (M),
each scored 1–5 against the whole base: <i>champions</i> bought recently and often, <i>loyal</i> buy often,
<i>potential_loyalist</i> and <i>promising</i> are recent with room to grow, <i>new</i> bought recently for the first
time, <i>need_attention</i> and <i>about_to_sleep</i> are slipping, <i>at_risk</i> and <i>cannot_lose</i> used to buy
often but not lately, <i>hibernating</i> neither buy often nor recently. Each customer's segment and tier are in
<code>segments.csv</code>, ready for a CRM.</p>
{_chart_segments(sizes)}
{segments_table}
{referral}

<h2>Cohorts</h2>
<p class="explain">Customers grouped by acquisition month and channel. <code>cohorts.csv</code> also holds each cohort's
value curve per customer: realised months (<code>realised_mNN</code>) up to the cohort's age and predicted months
(<code>predicted_mNN</code>) after.</p>
{cohorts_table}
<p class="note">Settings: {esc(', '.join(f'{k}={v}' for k, v in st.items()))}.</p>
"""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Customer value and acquisition budget</title>"
        f"<style>{CSS}</style></head><body><main>{body}</main></body></html>\n"
    )
