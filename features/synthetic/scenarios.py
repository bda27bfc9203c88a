"""Scenarios: transforms of a generated book that stage a change in customer behaviour.

The generators are measuring instruments and keep their dynamics; a scenario edits the tables of a
book they made, after the fact, so that monitoring can be tested on a change whose date, size and
segment are known. It is a test helper, not a model of how customers change: the thinning below
removes purchases at random and leaves everything else (acquisitions, order values, dropout) as
generated, and the book's ``truth`` still describes the book before the change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract import Tables
from features.dates import parse_cutoff

__all__ = ["thin_channel_purchases"]

#: Event types whose rate scales with the purchase rate in :mod:`features.synthetic.retail`.
PURCHASE_DRIVEN_EVENTS = ("session",)


def thin_channel_purchases(tables: Tables, *, channel: str, start, keep_share: float = 0.5, seed: int = 0) -> Tables:
    """The book with the repeat purchases of one acquisition channel thinned from ``start`` on.

    Each transaction row of a customer of ``channel`` dated on or after ``start`` is kept with
    probability ``keep_share``, so the channel's repeat purchase rate is multiplied by
    ``keep_share`` from that day (a Poisson process thinned independently stays Poisson with the
    rate scaled). Refund rows are thinned the same way: the tables do not link a refund to its
    purchase, and thinning them alike keeps the refunded share of spend as generated. A customer's
    first purchase is never removed: it is the acquisition, and thinning it would remove customers
    rather than purchases. ``session`` events of the same customers after ``start`` are thinned
    alike, since the generator draws sessions at a rate that grows with the purchase rate; other
    events are kept.

    Parameters
    ----------
    tables : Tables
        A book's tables (e.g. ``generate(...).tables``) with ``customers.channel``.
    channel : str
        Acquisition channel whose customers buy less.
    start : date-like
        First day of the change (rows at or after 00:00 of this day are thinned).
    keep_share : float
        Share of rows kept, in [0, 1]; 0.5 halves the purchase rate.
    seed : int
        Seed of the random choice of rows.

    Returns
    -------
    Tables
        New tables; ``customers`` unchanged, transactions and events in their original order.

    Raises
    ------
    ValueError
        Without a ``customers.channel`` column, for a channel that no customer has, or a
        ``keep_share`` outside [0, 1].
    """
    if not 0.0 <= keep_share <= 1.0:
        raise ValueError(f"keep_share: rule 'in [0, 1]': got {keep_share!r}")
    customers = tables.customers
    if customers is None or "channel" not in customers.columns:
        raise ValueError("thin_channel_purchases: needs customers.channel")
    members = set(customers.loc[customers["channel"] == channel, "customer_id"].astype(str))
    if not members:
        raise ValueError(f"channel: rule 'a channel of customers.channel': no customer of {channel!r}")
    begin = pd.Timestamp(parse_cutoff(start))
    rng = np.random.default_rng(seed)

    # Positions, not labels: the rows are found by position whatever index the frame carries.
    tx = tables.transactions.reset_index(drop=True)
    in_channel = tx["customer_id"].astype(str).isin(members).to_numpy()
    # The first purchase (amount >= 0) of each customer is the acquisition: always kept.
    purchases = tx.loc[tx["amount"] >= 0, ["customer_id", "timestamp"]]
    first = purchases.groupby("customer_id", sort=False)["timestamp"].idxmin()
    is_first = np.zeros(len(tx), dtype=bool)
    is_first[first.to_numpy()] = True
    candidate = in_channel & (tx["timestamp"] >= begin).to_numpy() & ~is_first
    drop = candidate & (rng.random(len(tx)) >= keep_share)
    transactions = tx.loc[~drop]

    events = tables.events
    if events is not None:
        events = events.reset_index(drop=True)
        candidate = (
            events["customer_id"].astype(str).isin(members).to_numpy()
            & (events["timestamp"] >= begin).to_numpy()
            & events["event_type"].isin(PURCHASE_DRIVEN_EVENTS).to_numpy()
        )
        events = events.loc[~(candidate & (rng.random(len(events)) >= keep_share))]
    return Tables(transactions=transactions, events=events, customers=customers)
