"""A subscription book on disk with its per-customer truth at a cutoff.

:func:`features.synthetic.write_book` stores a book's latent parameters; a subscription book is
also judged by :func:`~features.synthetic.subscription.subscription_truth` at a cutoff (true
P(cancel), expected spend, lifetime CLV), which this module writes beside it as
``subscription_truth.parquet`` so that tests, benchmarks and the demo read it without recomputing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from features.io.parquet_files import write_parquet
from features.synthetic.book import SyntheticBook, write_book
from features.synthetic.subscription import SubscriptionTruth, generate_subscription, subscription_truth

__all__ = ["TRUTH_FILE", "read_subscription_truth", "write_subscription_book"]

TRUTH_FILE = "subscription_truth.parquet"
_SETTINGS_FILE = "subscription_truth.json"


def write_subscription_book(
    out_dir: str | Path,
    n_customers: int,
    *,
    seed: int = 0,
    start: str = "2021-01-01",
    end: str = "2024-12-31",
    truth_cutoff=None,
    horizon_days: int = 182,
) -> tuple[SyntheticBook, SubscriptionTruth]:
    """Generate a subscription book and write it with its truth at a cutoff.

    Parameters
    ----------
    out_dir : str or Path
        Directory to write into (created if missing).
    n_customers, seed, start, end
        As in :func:`~features.synthetic.subscription.generate_subscription`.
    truth_cutoff : date-like, optional
        Cutoff of the truth; default one year before ``end`` (the day-of-year kept).
    horizon_days : int
        Horizon H of the truth's ``churn_probability`` and ``expected_spend``, in days.

    Returns
    -------
    (SyntheticBook, SubscriptionTruth)
        The book, written as by :func:`~features.synthetic.write_book`, and its truth, written as
        ``subscription_truth.parquet`` (``truth.customers`` with ``customer_id`` as a column: one row
        per customer acquired by the cutoff) and ``subscription_truth.json`` (its settings: cutoff,
        horizon_days, gross_margin, annual_discount_rate, max_months).

    Raises
    ------
    ValueError
        If a setting breaks the generator's or the truth's rules, or the cutoff lies outside the period.
    """
    book = generate_subscription(n_customers, seed=seed, start=start, end=end)
    cutoff = pd.Timestamp(end) - pd.DateOffset(years=1) if truth_cutoff is None else pd.Timestamp(truth_cutoff)
    truth = subscription_truth(book, cutoff=cutoff, horizon_days=horizon_days)
    out = write_book(book, out_dir)
    write_parquet(truth.customers.reset_index(), out / TRUTH_FILE)
    (out / _SETTINGS_FILE).write_text(json.dumps(truth.settings, indent=2) + "\n")
    return book, truth


def read_subscription_truth(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read the truth written by :func:`write_subscription_book`.

    Parameters
    ----------
    path : str or Path
        The book's directory.

    Returns
    -------
    (pandas.DataFrame, dict)
        ``truth.customers`` indexed by ``customer_id``, and its settings.

    Raises
    ------
    FileNotFoundError
        If the directory holds no subscription truth.
    """
    path = Path(path)
    frame = pd.read_parquet(path / TRUTH_FILE, page_checksum_verification=True).set_index("customer_id")
    return frame, json.loads((path / _SETTINGS_FILE).read_text())
