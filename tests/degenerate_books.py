"""Degenerate customer books for the robustness sweep (``tests/test_sweep.py``).

Each book is a small set of contract tables, as a user could hand them to clvcast, that sits at an
edge of the data: one customer, nobody buys twice, only refunds, only zero amounts, one day of
history, every purchase on the cutoff, one customer with 10,000 rows, ids in unicode and with
leading zeros. All share the cutoff :data:`CUTOFF`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["BOOKS", "CUTOFF", "write"]

CUTOFF = "2024-06-30"
_END = pd.Timestamp(CUTOFF)
_CHANNELS = ("search", "social", "referral")
_LONG_AGO = _END - pd.Timedelta(days=420)


def _customers(ids, start: pd.Timestamp) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame(
        {
            "customer_id": ids,
            "acquired_at": [(start + pd.Timedelta(days=i % 30)).date().isoformat() for i in range(n)],
            "channel": [_CHANNELS[i % 3] for i in range(n)],
            "acquisition_cost": [10.0 + i % 7 for i in range(n)],
        }
    )


def _repeat_buyers(ids, *, days: int = 400, per_customer: int = 6, seed: int = 0, amount=None) -> pd.DataFrame:
    """``per_customer`` purchases per customer spread over the ``days`` days before the cutoff."""
    rng = np.random.default_rng(seed)
    rows = []
    for cid in ids:
        offsets = np.sort(rng.integers(0, days, per_customer))
        for d in offsets:
            value = float(rng.gamma(2.0, 20.0)) if amount is None else float(amount)
            rows.append((cid, (_END - pd.Timedelta(days=int(d))).isoformat(), round(value, 2)))
    return pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])


def one_customer():
    ids = ["C1"]
    return {"transactions": _repeat_buyers(ids, per_customer=8), "customers": _customers(ids, _LONG_AGO)}


def one_time_buyers():
    ids = [f"O{i}" for i in range(40)]
    return {"transactions": _repeat_buyers(ids, per_customer=1, seed=1), "customers": _customers(ids, _LONG_AGO)}


def all_refunds():
    ids = [f"R{i}" for i in range(30)]
    tx = _repeat_buyers(ids, per_customer=3, seed=2)
    tx["amount"] = -tx["amount"].abs() - 1
    return {"transactions": tx, "customers": _customers(ids, _LONG_AGO)}


def zero_amounts():
    ids = [f"Z{i}" for i in range(30)]
    tx = _repeat_buyers(ids, seed=3, amount=0.0)
    return {"transactions": tx, "customers": _customers(ids, _LONG_AGO)}


def one_day():
    ids = [f"D{i}" for i in range(30)]
    tx = _repeat_buyers(ids, per_customer=2, days=1, seed=4)
    return {"transactions": tx, "customers": _customers(ids, _END).assign(acquired_at=CUTOFF)}


def on_cutoff():
    """Customers acquired long ago whose every purchase is on the cutoff day (late in the day)."""
    ids = [f"K{i}" for i in range(30)]
    tx = _repeat_buyers(ids, per_customer=3, days=1, seed=5)
    tx["timestamp"] = (_END + pd.Timedelta(hours=23, minutes=59)).isoformat()
    return {"transactions": tx, "customers": _customers(ids, _END - pd.Timedelta(days=300))}


def heavy_customer():
    """One customer with 10,000 purchases (several a day) among ordinary ones."""
    ids = [f"H{i}" for i in range(30)]
    tx = _repeat_buyers(ids, seed=6)
    stamps = _END - pd.to_timedelta(np.arange(10_000) * 3600 * 2.5, unit="s")
    heavy = pd.DataFrame({"customer_id": "H0", "timestamp": stamps.map(pd.Timestamp.isoformat), "amount": 12.5})
    customers = _customers(ids, _END - pd.Timedelta(days=1100))
    return {"transactions": pd.concat([tx, heavy], ignore_index=True), "customers": customers}


def unicode_ids():
    """Ids that differ only by leading zeros, and ids in several scripts."""
    ids = ["007", "7", "0007", "ñandú", "客户-1", "Ωmega", "émile", "😀", "Ｆｕｌｌ", "a b"]
    ids = ids + [f"000{i}" for i in range(10, 30)]
    return {"transactions": _repeat_buyers(ids, seed=7), "customers": _customers(ids, _LONG_AGO)}


#: Name -> tables (``transactions`` and ``customers`` frames).
BOOKS = {
    f.__name__: f
    for f in (one_customer, one_time_buyers, all_refunds, zero_amounts, one_day, on_cutoff, heavy_customer, unicode_ids)
}


def write(name: str, root: Path) -> Path:
    """Write book ``name`` as CSV files (ids quoted text) into ``root / name``; return the directory."""
    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    for table, frame in BOOKS[name]().items():
        frame.to_csv(out / f"{table}.csv", index=False)
    return out
