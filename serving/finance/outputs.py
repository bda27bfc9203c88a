"""Writing a :class:`~serving.finance.budget.BudgetResult`: the CSV files and the HTML report.

The only module of :mod:`serving.finance` that touches files; the computation returns frames.
"""

from __future__ import annotations

from pathlib import Path

from serving.finance.budget import BudgetResult
from serving.finance.report import render_report

__all__ = ["CSV_NAMES", "REPORT_NAME", "write_budget", "write_report"]

#: The frames of a BudgetResult written as ``<name>.csv``, in this order.
CSV_NAMES = ("channels", "cohorts", "forecast", "segments", "new_customer_clv")
#: File name of the report beside the CSVs.
REPORT_NAME = "report.html"


def write_budget(result: BudgetResult, out_dir: str | Path) -> dict[str, Path]:
    """Write the frames of ``result`` as CSV files in ``out_dir``.

    ``new_customer_clv.csv`` keeps its ``channel`` index as the first column (the service reads it
    back with ``index_col``); the other files are written without the positional index.

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
        getattr(result, name).to_csv(path, index=name == "new_customer_clv")
    return paths


def write_report(result: BudgetResult, path: str | Path) -> Path:
    """Write the HTML report of ``result`` (:func:`serving.finance.report.render_report`) to ``path``.

    Parameters
    ----------
    result : BudgetResult
    path : str or Path
        File to write (UTF-8); its parent directories are created if missing.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(result), encoding="utf-8")
    return path
