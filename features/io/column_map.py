"""Column mapping: the source's column names onto the contract's, from a mapping, a file or ``table.src=dst`` pairs."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from features.contract import TABLE_SPECS

__all__ = ["ColumnMap", "parse_column_map"]

ColumnMap = dict[str, dict[str, str]]
"""Per-table renames, ``{table: {source column: contract column}}``."""


def parse_column_map(spec: Mapping | str | os.PathLike | Iterable[str] | None) -> ColumnMap:
    """Turn a column mapping given in any accepted form into ``{table: {source column: contract column}}``.

    Parameters
    ----------
    spec : mapping, str, path, iterable of str or None
        - A mapping, per table (``{"transactions": {"cust": "customer_id"}}``) or flat
          (``{"cust": "customer_id"}``, applied to every table that has such a column), or both mixed.
        - A path to a ``.json``, ``.yaml`` or ``.yml`` file holding such a mapping, optionally under a
          top-level ``column_map`` key.
        - A command-line string of comma-separated ``[table.]source=target`` items, e.g.
          ``"transactions.cust=customer_id,ts=timestamp"``; an iterable of such strings (a repeated
          flag) is merged in order.
        - ``None``: no renames.

    Returns
    -------
    dict of str to dict of str to str
        Renames per table; per-table entries win over flat ones for the same source column.

    Raises
    ------
    ValueError
        On an unknown table name, a malformed item, or two source columns mapped to one target.
    FileNotFoundError
        When ``spec`` names a file that does not exist.
    """
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return _normalise_column_map(spec, origin="column_map")
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and "=" not in spec):
        return _normalise_column_map(_read_column_map_file(Path(spec)), origin=str(spec))
    if isinstance(spec, str):
        return _normalise_column_map(_parse_column_map_items(spec.split(",")), origin=repr(spec))
    items = [item for s in spec for item in str(s).split(",")]
    return _normalise_column_map(_parse_column_map_items(items), origin=repr(list(spec)))


def _read_column_map_file(path: Path) -> Mapping:
    if not path.is_file():
        raise FileNotFoundError(f"column map file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    elif path.suffix.lower() in (".yaml", ".yml"):
        data = yaml.safe_load(text) or {}
    else:
        raise ValueError(f"column map file {path}: expected a .json, .yaml or .yml file")
    if not isinstance(data, Mapping):
        raise ValueError(f"column map file {path}: expected a mapping at the top level")
    if set(data) == {"column_map"}:
        data = data["column_map"]
    return data


def _parse_column_map_items(items: Iterable[str]) -> dict:
    flat: dict[str, str] = {}
    per_table: dict[str, dict[str, str]] = {}
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        source, sep, target = item.partition("=")
        source, target = source.strip(), target.strip()
        if not sep or not source or not target:
            raise ValueError(f"column map item {raw!r}: expected [table.]source=target")
        table, dot, column = source.partition(".")
        # A dot only names a table when the prefix is one: "order.value=amount" is a flat rename.
        if dot and table in TABLE_SPECS and column:
            per_table.setdefault(table, {})[column] = target
        else:
            flat[source] = target
    return {**flat, **per_table}


def _normalise_column_map(data: Mapping, *, origin: str) -> ColumnMap:
    flat: dict[str, str] = {}
    per_table: ColumnMap = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            if key not in TABLE_SPECS:
                raise ValueError(
                    f"{origin}: unknown table {key!r} (tables: {', '.join(TABLE_SPECS)})"
                )
            for source, target in value.items():
                per_table.setdefault(key, {})[_map_name(source, origin)] = _map_name(target, origin)
        elif isinstance(value, str):
            flat[_map_name(key, origin)] = _map_name(value, origin)
        else:
            raise ValueError(f"{origin}: {key!r} maps to {value!r}; expected a column name or a table mapping")
    result: ColumnMap = {}
    for table in TABLE_SPECS:
        renames = {**flat, **per_table.get(table, {})}
        for target, count in Counter(renames.values()).items():
            if count > 1:
                sources = [s for s, t in renames.items() if t == target]
                raise ValueError(f"{origin}: table {table}: columns {sources} are all mapped to {target!r}")
        if renames:
            result[table] = renames
    return result


def _map_name(name: object, origin: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{origin}: column names must be non-empty strings, got {name!r}")
    return name.strip()
