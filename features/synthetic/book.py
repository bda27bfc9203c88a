"""A synthetic book on disk: contract tables plus the latent truth that generated them.

Shared by every generator of :mod:`features.synthetic`: a book is written as Parquet tables, a
``ground_truth.parquet`` and a ``dataset.json`` describing how it was made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from features.contract import Tables
from features.io import write_tables
from features.io.parquet_files import write_parquet

__all__ = ["SyntheticBook", "read_book", "write_book"]


@dataclass(frozen=True)
class SyntheticBook:
    """A generated book: contract tables, latent truth and the settings that produced them.

    Attributes
    ----------
    tables : Tables
        ``transactions``, ``events`` and ``customers`` with the contract's normalised dtypes.
    truth : pandas.DataFrame
        Latent parameters, one row per customer indexed by ``customer_id`` (see :func:`generate`).
        ``truth.attrs`` holds the seasonality and the period, which :func:`oracle_expected_spend`
        reads.
    settings : dict
        ``n_customers``, ``seed``, ``start``, ``end`` and the whole :class:`SyntheticConfig`.
    """

    tables: Tables
    truth: pd.DataFrame
    settings: dict = field(default_factory=dict)



def write_book(book: SyntheticBook, out_dir: str | Path) -> Path:
    """Write a book as Parquet files plus a ``dataset.json`` that describes it.

    Parameters
    ----------
    book : SyntheticBook
        The book to write.
    out_dir : str or Path
        Directory to write into; created if missing. Existing files of the same names are replaced.

    Returns
    -------
    Path
        The directory, holding ``transactions.parquet``, ``events.parquet``, ``customers.parquet``,
        ``ground_truth.parquet`` (``truth`` with ``customer_id`` as a column) and ``dataset.json``
        (generation settings, row counts, period and seasonality). Every Parquet page carries a
        checksum (:func:`features.io.write_tables`), verified when the book is read.

    Raises
    ------
    ValueError
        If the directory already holds one of the tables as CSV (see :func:`features.io.write_tables`).
    """
    out = Path(out_dir)
    tables = book.tables
    write_tables(tables, out)
    write_parquet(book.truth.reset_index(), out / "ground_truth.parquet")
    meta = {
        "description": "Synthetic customer book with known ground truth (clvcast features.synthetic).",
        "files": {
            "transactions": "transactions.parquet",
            "events": "events.parquet",
            "customers": "customers.parquet",
            "ground_truth": "ground_truth.parquet",
        },
        "rows": {
            "transactions": len(tables.transactions),
            "events": len(tables.events),
            "customers": len(tables.customers),
        },
        "truth_attrs": dict(book.truth.attrs),
        "settings": book.settings,
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return out


def read_book(path: str | Path) -> SyntheticBook:
    """Read a book written by :func:`write_book`, with the truth's ``attrs`` restored.

    Parameters
    ----------
    path : str or Path
        Directory written by :func:`write_book`.

    Returns
    -------
    SyntheticBook
    """
    path = Path(path)
    meta = json.loads((path / "dataset.json").read_text())
    # Checksums are verified: a damaged page raises instead of reading as plausible-looking numbers.
    tables = Tables(
        transactions=pd.read_parquet(path / "transactions.parquet", page_checksum_verification=True),
        events=pd.read_parquet(path / "events.parquet", page_checksum_verification=True),
        customers=pd.read_parquet(path / "customers.parquet", page_checksum_verification=True),
    )
    truth = pd.read_parquet(path / "ground_truth.parquet", page_checksum_verification=True).set_index("customer_id")
    truth.attrs = dict(meta["truth_attrs"])
    return SyntheticBook(tables=tables, truth=truth, settings=meta["settings"])
