"""Point-in-time features: one row per customer known at a cutoff, computed from the history only.

Composition only: the history is prepared once (:mod:`features.history`), every family of
:mod:`features.families` computes its columns from it, and :func:`features.spec.assemble` lays them
out as declared (:mod:`features.schema`). ``cutoff`` is a date, the last day of history: a row is
history when its ``timestamp`` is before the end of that day. Rows after it never influence a feature.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from features.btyd import BTYDParams
from features.config import FeatureConfig
from features.contract import Tables
from features.families import FAMILIES
from features.families import btyd as btyd_family
from features.history import History, buyer_ids, customer_blocks, prepare_history
from features.schema import feature_schema
from features.spec import assemble

__all__ = ["build_features", "family_features", "feature_blocks", "feature_columns", "fit_btyd"]


def feature_columns(h: History, config: FeatureConfig, btyd: BTYDParams | None = None) -> tuple[dict, BTYDParams]:
    """Every feature column of ``config`` for the customers of ``h``, and the BTYD parameters used.

    ``btyd`` omitted: fitted on ``h`` (:func:`features.families.btyd.fit`).
    """
    params = btyd if btyd is not None else btyd_family.fit(h, config)
    columns: dict = {}
    for name, family in FAMILIES.items():
        columns.update(family.columns(h, config, params) if name == btyd_family.NAME else family.columns(h, config))
    return columns, params


def family_features(
    name: str, tables: Tables, *, cutoff, config: FeatureConfig = FeatureConfig(), btyd: BTYDParams | None = None
) -> pd.DataFrame:
    """The columns of one feature family (a key of :data:`features.families.FAMILIES`).

    Parameters and return as :func:`build_features`, restricted to the family's columns. ``btyd``
    is only read by the ``"btyd"`` family (fitted on this history when omitted).

    Raises
    ------
    KeyError
        For an unknown family name.
    """
    if name not in FAMILIES:
        raise KeyError(f"unknown feature family {name!r}; known: {sorted(FAMILIES)}")
    family = FAMILIES[name]
    h = prepare_history(tables, cutoff)
    if name == btyd_family.NAME:
        values = family.columns(h, config, btyd if btyd is not None else family.fit(h, config))
    else:
        values = family.columns(h, config)
    return assemble(h.ids, family.schema(config), values)


def fit_btyd(tables: Tables, *, cutoff, config: FeatureConfig = FeatureConfig()) -> BTYDParams:
    """Fit BG/NBD and Gamma-Gamma on the history up to the end of the cutoff day.

    The BTYD summary follows :func:`features.btyd.summary_from_transactions`: x = repeat purchase
    days, t_x and T in units of ``config.btyd_time_unit_days``, monetary value = mean value of the
    repeat purchase days (refunds excluded).

    Raises
    ------
    ValueError
        If no customer is known at the cutoff or the models cannot be fitted (e.g. no repeat buyer).
    """
    return btyd_family.fit(prepare_history(tables, cutoff), config)


def build_features(
    tables: Tables, *, cutoff, config: FeatureConfig = FeatureConfig(), btyd: BTYDParams | None = None
) -> pd.DataFrame:
    """All features of every customer known at ``cutoff``, from the history up to that day only.

    Parameters
    ----------
    tables : Tables
        Normalised input tables (:mod:`features.contract`); ``events`` and ``customers`` optional.
    cutoff : date, str or Timestamp
        Last day of history (:func:`features.dates.parse_cutoff`): rows with
        ``timestamp < cutoff + 1 day`` are used, nothing later.
    config : FeatureConfig
        Decides the columns (see :func:`features.schema.feature_schema`).
    btyd : BTYDParams, optional
        BG/NBD + Gamma-Gamma parameters. When omitted they are fitted on this history, which needs
        a population; serving passes the parameters stored at training time instead.

    Returns
    -------
    pandas.DataFrame
        One row per customer with at least one purchase (amount >= 0) on or before the cutoff day,
        indexed by ``customer_id`` (string, sorted), with exactly the columns and dtypes of
        ``feature_schema(config)`` in that order.

    Raises
    ------
    ValueError
        If the cutoff precedes every purchase, or the BTYD fit fails.
    """
    specs = feature_schema(config)
    h = prepare_history(tables, cutoff)
    columns, _ = feature_columns(h, config, btyd)
    return assemble(h.ids, specs, columns)


def feature_blocks(
    tables: Tables, *, cutoff, config: FeatureConfig = FeatureConfig(), btyd: BTYDParams | None = None, block_customers: int
) -> Iterator[pd.DataFrame]:
    """The rows of :func:`build_features`, ``block_customers`` customers at a time (in the same order).

    The BTYD parameters, when not given, are fitted once on the whole history (as
    :func:`build_features` does); each block's features are then built from its customers' rows only
    (:func:`features.history.customer_blocks`), so the memory follows the block, not the book, and
    the rows concatenated are :func:`build_features`'s to the last bit.

    Raises
    ------
    ValueError
        As :func:`build_features`; on fewer than 1 customer per block.
    """
    if btyd is None:
        btyd = fit_btyd(tables, cutoff=cutoff, config=config)  # raises when no customer is known
    for block in customer_blocks(tables, buyer_ids(tables.transactions, cutoff), block_customers):
        yield build_features(block, cutoff=cutoff, config=config, btyd=btyd)
