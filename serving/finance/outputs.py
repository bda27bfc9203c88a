"""Writing a :class:`~serving.finance.budget.BudgetResult`: the CSV files and the HTML report.

The only module of :mod:`serving.finance` that touches files; the computation returns frames.

The CSV files are for people and spreadsheets: :func:`csv_frame` rounds every number to what it
means (money to cents, probabilities to four decimals, months, days, ratios and expected customer
counts to two) and writes no ``inf``. An infinite LTV:CAC (no acquisition cost) or payback (the
CAC is not recovered within the lifetime cap) is an empty cell, with the reason in the column
beside it (:data:`NOTES`). The frames of the result keep full precision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from serving.finance.budget import BudgetResult
from serving.finance.report import fmt_money, fmt_months, fmt_ratio, render_report

__all__ = ["CSV_NAMES", "NOTES", "REPORT_NAME", "csv_frame", "format_channels", "write_budget", "write_report"]

#: The frames of a BudgetResult written as ``<name>.csv``, in this order.
CSV_NAMES = ("channels", "cohorts", "forecast", "segments", "new_customer_clv")
#: File name of the report beside the CSVs.
REPORT_NAME = "report.html"

#: Columns that are not money, with their decimals in the CSV files; every other float column is money (cents).
DECIMALS = {
    "churn_probability": 4,
    "ltv_cac": 2,
    "credible_ltv_cac": 2,
    "credibility": 3,
    "payback_months": 2,
    "expected_active_customers": 2,
    "expected_lifetime_days": 2,
}
#: Columns whose ``inf`` or NaN has a meaning: the note column written beside each, and its text per case.
NOTES = {
    "ltv_cac": ("ltv_cac_note", {"inf": "no acquisition cost", "nan": "acquisition cost unknown"}),
    "credible_ltv_cac": ("credible_ltv_cac_note", {"inf": "no acquisition cost", "nan": "acquisition cost unknown"}),
    "payback_months": (
        "payback_note",
        {"inf": "not recovered within the lifetime cap", "nan": "acquisition cost unknown"},
    ),
}


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` as the CSV files hold it: rounded, no ``inf``, reasons for the empty cells.

    Parameters
    ----------
    frame : DataFrame
        Any frame of a :class:`BudgetResult` (or of scores).

    Returns
    -------
    DataFrame
        The same rows and columns, float columns rounded (money to 2 decimals, the others as
        :data:`DECIMALS` says) with ``±inf`` replaced by NaN (an empty cell); for each column of
        :data:`NOTES` present, a text column right after it giving why a cell is empty (empty
        otherwise).
    """
    out = frame.copy()
    for name in list(out.columns):
        values = out[name]
        if not pd.api.types.is_float_dtype(values):
            continue
        raw = values.to_numpy(dtype=float)
        if name in NOTES:
            note, reasons = NOTES[name]
            text = np.where(np.isinf(raw), reasons["inf"], np.where(np.isnan(raw), reasons["nan"], ""))
            out.insert(out.columns.get_loc(name) + 1, note, text)
        out[name] = np.round(np.where(np.isinf(raw), np.nan, raw), DECIMALS.get(name, 2)) + 0.0  # no "-0.0"
    return out


def format_channels(result: BudgetResult) -> str:
    """The channel table and headline numbers ``clvcast budget`` and the demo print, as plain text.

    Returns
    -------
    str
        A header line (customers, as-of date, the scores' horizon in days, total CLV, LTV:CAC,
        12-month revenue forecast with its interval), then one row per channel: customers, mean
        CAC, mean CLV, LTV:CAC, maximum allowable CAC, payback months and the recommendation,
        formatted as in the report.
    """
    s = result.summary
    head = (
        f"{s['customers']:,} customers as of {s['as_of']}, horizon {s['settings']['horizon_days']:g} days: "
        f"total CLV {fmt_money(s['total_clv'])}, "
        f"LTV:CAC {fmt_ratio(s['overall_ltv_cac'])}; revenue forecast {s['forecast_start']} to {s['forecast_end']} "
        f"{fmt_money(s['forecast_revenue'])} (80% interval {fmt_money(s['forecast_revenue_low'])} - "
        f"{fmt_money(s['forecast_revenue_high'])})"
    )
    ch = result.channels
    table = pd.DataFrame(
        {
            "channel": ch["channel"],
            "customers": ch["customers"].map("{:,}".format),
            "mean CAC": ch["mean_cac"].map(fmt_money),
            "mean CLV": ch["mean_clv"].map(fmt_money),
            "LTV:CAC": ch["ltv_cac"].map(fmt_ratio),
            "max CAC": ch["max_allowable_cac"].map(fmt_money),
            "payback months": ch["payback_months"].map(fmt_months),
            "recommendation": ch["recommendation"],
        }
    )
    return head + "\n" + table.to_string(index=False)


def write_budget(result: BudgetResult, out_dir: str | Path) -> dict[str, Path]:
    """Write the frames of ``result`` as CSV files in ``out_dir``.

    ``new_customer_clv.csv`` keeps its ``channel`` index as the first column (the service reads it
    back with ``index_col``); the other files are written without the positional index. Numbers
    are rounded and ``inf`` written as an empty cell with its reason (:func:`csv_frame`).

    Parameters
    ----------
    result : BudgetResult
        From :func:`serving.finance.compute_budget`.
    out_dir : str or Path
        Directory; created with its parents if missing. Existing files of the same names are replaced.

    Returns
    -------
    dict of str to Path
        The written files by name (:data:`CSV_NAMES`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.csv" for name in CSV_NAMES}
    for name, path in paths.items():
        csv_frame(getattr(result, name)).to_csv(path, index=name == "new_customer_clv")
    return paths


def write_report(result: BudgetResult, path: str | Path, *, saas: dict | None = None) -> Path:
    """Write the HTML report of ``result`` (:func:`serving.finance.report.render_report`) to ``path``.

    Parameters
    ----------
    result : BudgetResult
    path : str or Path
        File to write (UTF-8); its parent directories are created if missing.
    saas : dict of str to DataFrame, optional
        The SaaS tables of a subscription business: their section in the report.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(result, saas=saas), encoding="utf-8")
    return path
