"""Exact TreeSHAP values of a LightGBM booster from per-leaf lookup tables.

LightGBM's ``predict(pred_contrib=True)`` runs path-dependent TreeSHAP row by row: about 1.3 ms
per row for 600 trees of 15 leaves, which is most of the cost of a 100-customer ``/clv`` request.
This module gives the same numbers (to rounding) an order of magnitude faster, by moving the
combinatorics to load time (the "Fast TreeSHAP v2" idea of Yang, 2021) and running the per-row
part as a compiled loop (numba):

For a leaf with value ``v`` whose path splits on the distinct features ``f_1 … f_d``, the
path-dependent value of a coalition ``S`` is ``v · Π_k (o_k if f_k ∈ S else z_k)``, where

- ``z_k`` is the product over the path's splits on ``f_k`` of (rows in the child on the path /
  rows in the node): the share of training rows that would follow the path at those splits, and
- ``o_k`` ∈ {0, 1} says whether the row itself follows the path at every split on ``f_k``.

The Shapley value of ``f_k`` in that product game depends on the row only through the bit
pattern ``(o_1 … o_d)``, so each leaf stores a ``2**d × d`` table, computed once from ``z`` and
``v``. Explaining a row is then: evaluate every split once, form each leaf's pattern, look up and
sum. The tables take ``Σ 2**d · d`` floats (about 3 million, 24 MB, for 600 trees of 15 leaves);
leaves with more than 10 distinct features on their path get none, and a few rows get none at
all: their values are computed from the pattern directly, ``O(d²)`` per leaf, the way LightGBM's
TreeSHAP "unwinds" a path.

Not supported (refused): linear trees and boosters with several trees per iteration (multiclass).
"""

from __future__ import annotations

from math import factorial

import numba
import numpy as np

# LightGBM's kZeroThreshold, a float32 1e-35: |x| at most this counts as zero for zero-as-missing splits.
_ZERO = float(np.float32(1e-35))
# A leaf with d distinct features on its path has a table of 2**d × d floats (built in
# O(2**d d**3)) if d is at most the largest depth, up to 10, whose tables fit 8 million floats
# (64 MB) per booster; deeper leaves are computed directly by the kernels, as for a few rows.
_MAX_TABLE_DEPTH = 10
_TABLE_BUDGET = 8_000_000


class TreeShap:
    """Per-row SHAP contributions of a fitted LightGBM booster, equal to ``pred_contrib=True``.

    Parameters
    ----------
    booster : lightgbm.Booster
        A fitted tree model (no linear trees). All trees are used: build it from a booster whose
        extra trees beyond an early-stopping best iteration were dropped, or pass
        ``num_iteration``.
    num_iteration : int, optional
        Use only the first ``num_iteration`` trees (as ``Booster.predict(num_iteration=…)``).

    Attributes
    ----------
    n_features : int
        Columns the booster expects.
    table_size : int
        Floats held in the lookup tables.
    table_depth : int
        Leaves with at most this many distinct features on their path have a table.
    """

    def __init__(self, booster, *, num_iteration: int | None = None):
        model = booster.dump_model(num_iteration=num_iteration)
        if int(model.get("num_tree_per_iteration", 1)) != 1:
            raise ValueError(
                f"TreeShap explains one output per row; this booster has {model['num_tree_per_iteration']} trees "
                "per iteration (multiclass): use booster.predict(X, pred_contrib=True)"
            )
        self.n_features = int(model["max_feature_idx"]) + 1
        nodes: dict[str, list] = {k: [] for k in ("feature", "threshold", "categorical", "default_left", "missing")}
        left_categories: dict[int, np.ndarray] = {}
        # One record per (leaf, distinct feature on its path) = a "slot"; one per path split = an "entry".
        leaves: list[tuple[float, list[int], list[float]]] = []  # value, slot features, z per slot
        entry_node: list[int] = []
        entry_left: list[bool] = []
        entry_slot: list[int] = []
        n_slots = 0
        constant = 0.0

        for tree in model["tree_info"]:
            stack = [(tree["tree_structure"], [])]  # (node, path of (node id, went left, feature, fraction))
            while stack:
                node, path = stack.pop()
                if "leaf_value" in node:
                    if "leaf_coeff" in node:
                        raise ValueError("TreeShap does not support linear trees (linear_tree=true)")
                    if not path:
                        constant += float(node["leaf_value"])  # a tree without splits: no feature moves it
                        continue
                    features: list[int] = []
                    zero: list[float] = []
                    for node_id, went_left, feature, fraction in path:
                        if feature in features:
                            k = features.index(feature)
                            zero[k] *= fraction
                        else:
                            k = len(features)
                            features.append(feature)
                            zero.append(fraction)
                        entry_node.append(node_id)
                        entry_left.append(went_left)
                        entry_slot.append(n_slots + k)
                    leaves.append((float(node["leaf_value"]), features, zero))
                    n_slots += len(features)
                    continue
                node_id = len(nodes["feature"])
                nodes["feature"].append(int(node["split_feature"]))
                nodes["missing"].append(node["missing_type"])
                nodes["default_left"].append(bool(node["default_left"]))
                if node["decision_type"] == "==":
                    nodes["categorical"].append(True)
                    nodes["threshold"].append(np.nan)
                    left_categories[node_id] = np.array([int(c) for c in str(node["threshold"]).split("||")], dtype=np.int64)
                elif node["decision_type"] == "<=":
                    nodes["categorical"].append(False)
                    nodes["threshold"].append(float(node["threshold"]))
                else:
                    raise ValueError(f"unsupported split decision type {node['decision_type']!r}")
                count = float(node["internal_count"])
                for child, went_left in ((node["left_child"], True), (node["right_child"], False)):
                    child_count = float(child["internal_count"] if "internal_count" in child else child["leaf_count"])
                    fraction = child_count / count if count > 0 else 0.0
                    stack.append((child, [*path, (node_id, went_left, nodes["feature"][-1], fraction)]))

        missing = np.array(nodes["missing"], dtype=object)
        categorical = np.array(nodes["categorical"], dtype=bool)
        cat_nodes = np.flatnonzero(categorical)
        width = 1 + max((int(c.max()) for c in left_categories.values() if c.size), default=0)
        # Row r of the membership table = categorical split r, column = category code: the code
        # goes left. Codes beyond the table, negative or NaN go right, as in LightGBM.
        membership = np.zeros((len(cat_nodes), width), dtype=np.bool_)
        for rank, node in enumerate(cat_nodes):
            membership[rank, left_categories[int(node)]] = True
        cat_rank = np.full(len(categorical), -1, dtype=np.int64)
        cat_rank[cat_nodes] = np.arange(len(cat_nodes))
        self._splits = (
            np.array(nodes["feature"], dtype=np.int64),
            np.array(nodes["threshold"], dtype=np.float64),
            np.array(nodes["default_left"], dtype=np.bool_),
            missing == "NaN",
            missing == "Zero",
            cat_rank,
            membership,
        )
        # Path splits grouped by slot: slot j checks entries slot_first_entry[j] … [j + 1] − 1.
        entry_slot_arr = np.array(entry_slot, dtype=np.int64)
        order = np.argsort(entry_slot_arr, kind="stable")
        self._entries = (
            np.searchsorted(entry_slot_arr[order], np.arange(n_slots + 1)).astype(np.int64),
            np.array(entry_node, dtype=np.int64)[order],
            np.array(entry_left, dtype=np.bool_)[order],
        )

        depth = np.array([len(f) for _, f, _ in leaves], dtype=np.int64)
        values = np.array([v for v, _, _ in leaves], dtype=np.float64)
        # A leaf's table is 2**d rows × d columns, stored flat: the value of the leaf's k-th
        # feature for pattern p is table[start + p · d + k]. Start −1: no table (d too large).
        full_size = (1 << np.minimum(depth, _MAX_TABLE_DEPTH + 1)) * depth
        self.table_depth = next(
            c for c in range(_MAX_TABLE_DEPTH, -1, -1) if full_size[depth <= c].sum() <= _TABLE_BUDGET
        )
        tabled = depth <= self.table_depth
        sizes = np.where(tabled, full_size, 0)
        table_start = np.where(tabled, np.concatenate([[0], np.cumsum(sizes)[:-1]]), -1).astype(np.int64)
        table = np.empty(int(sizes.sum()), dtype=np.float64)
        for d in np.unique(depth[tabled]):
            group = np.flatnonzero(depth == d)
            zero = np.array([leaves[i][2] for i in group], dtype=np.float64)
            index = table_start[group][:, None] + np.arange((1 << d) * d)[None, :]
            table[index.ravel()] = _leaf_tables(values[group], zero).reshape(len(group), -1).ravel()
        self._leaves = (
            depth,
            np.concatenate([[0], np.cumsum(depth)[:-1]]).astype(np.int64),  # first slot
            values,
            table_start,
            np.array([f for _, features, _ in leaves for f in features], dtype=np.int64),  # slot feature
            np.array([z for _, _, zero in leaves for z in zero], dtype=np.float64),  # slot zero fraction
            table,
            _shapley_weights(int(depth.max(initial=1))),
        )
        self._all_leaves = np.arange(len(depth), dtype=np.int64)
        self._untabled = np.flatnonzero(~tabled).astype(np.int64)
        self._constant = constant
        self.objective = str(model.get("objective", "")).split(" ")[0]
        self.table_size = int(table.size)
        # Compile (or load from numba's cache) both kernels now, not on a first request.
        for rows in (1, TABLE_ROWS):
            self.raw_score_and_contributions(np.zeros((rows, self.n_features)))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """SHAP value of every feature for every row of ``X`` (without LightGBM's bias column).

        Parameters
        ----------
        X : ndarray of shape (n_rows, n_features)
            The booster's input, float (NaN = missing, categorical columns as integer codes).

        Returns
        -------
        ndarray of shape (n_rows, n_features)
            Equal to ``booster.predict(X, pred_contrib=True)[:, :-1]`` up to float rounding.
        """
        return self.raw_score_and_contributions(X)[1]

    def raw_score_and_contributions(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The raw score (``predict(raw_score=True)``) and the SHAP values of each row, in one pass.

        The raw score is the sum of the values of the leaves each row reaches (the leaves whose
        whole path the row follows), so it comes free with the patterns.

        Returns
        -------
        raw_score : ndarray of shape (n_rows,)
        contributions : ndarray of shape (n_rows, n_features)
        """
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (n, {self.n_features}), got {X.shape}")
        raw = np.full(len(X), self._constant)
        out = np.empty((len(X), self.n_features))
        # Blocks of rows bound the decision matrix (splits × rows booleans, ~8 KB per row).
        for start in range(0, len(X), _BLOCK_ROWS):
            rows = slice(start, start + _BLOCK_ROWS)
            left = _decisions(X[rows], *self._splits)
            block_raw = np.zeros(left.shape[1])
            block_out = np.zeros((self.n_features, left.shape[1]))  # features × rows: kernels add along rows
            if left.shape[1] >= TABLE_ROWS:
                _from_tables(left, *self._entries, *self._leaves, block_raw, block_out)
                _direct(left, self._untabled, *self._entries, *self._leaves, block_raw, block_out)
            else:
                _direct(left, self._all_leaves, *self._entries, *self._leaves, block_raw, block_out)
            raw[rows] += block_raw
            out[rows] = block_out.T
        return raw, out


@numba.njit(cache=True, nogil=True)
def _decisions(X, feature, threshold, default_left, nan_missing, zero_missing, cat_rank, membership):
    """Whether each row goes left at each split, as LightGBM decides (tree.h): (splits, rows)."""
    n_rows = X.shape[0]
    left = np.empty((len(feature), n_rows), dtype=np.bool_)
    n_codes = membership.shape[1]
    for s in range(len(feature)):
        for r in range(n_rows):
            value = X[r, feature[s]]
            if cat_rank[s] >= 0:
                # LightGBM casts to int (toward zero: -0.5 is code 0); NaN and negative codes go right.
                left[s, r] = (not np.isnan(value)) and -1.0 < value < n_codes and membership[cat_rank[s], int(value)]
                continue
            is_nan = np.isnan(value)
            if is_nan and not nan_missing[s]:
                value = 0.0
            if (zero_missing[s] and abs(value) <= _ZERO) or (nan_missing[s] and is_nan):
                left[s, r] = default_left[s]
            else:
                left[s, r] = value <= threshold[s]
    return left


@numba.njit(cache=True, nogil=True)
def _from_tables(
    left, slot_first_entry, entry_node, entry_left,
    depth, first_slot, leaf_value, table_start, slot_feature, slot_zero, table, weights,
    raw, out,
):  # fmt: skip
    """Leaf by leaf, each row's pattern and its table look-ups (batches; leaves with a table).

    Leaves outside, rows inside: a leaf's table is read from memory once per call and stays in
    cache for all the rows; the inner loops over rows are branch-free and vectorise.
    """
    n_rows = left.shape[1]
    pattern = np.empty(n_rows, dtype=np.int64)
    follows = np.empty(n_rows, dtype=np.int64)
    for leaf in range(len(depth)):
        if table_start[leaf] < 0:
            continue  # no table: the caller runs _direct on these leaves
        d = depth[leaf]
        first = first_slot[leaf]
        pattern[:] = 0
        for k in range(d):
            follows[:] = 1
            for e in range(slot_first_entry[first + k], slot_first_entry[first + k + 1]):
                node = entry_node[e]
                went_left = entry_left[e]
                for r in range(n_rows):
                    follows[r] &= left[node, r] == went_left
            for r in range(n_rows):
                pattern[r] |= follows[r] << k
        full = (1 << d) - 1
        value = leaf_value[leaf]
        start = table_start[leaf]
        for r in range(n_rows):
            if pattern[r] == full:
                raw[r] += value
            pattern[r] = start + pattern[r] * d
        for k in range(d):
            f = slot_feature[first + k]
            for r in range(n_rows):
                out[f, r] += table[pattern[r] + k]


@numba.njit(cache=True, nogil=True)
def _direct(
    left, leaves, slot_first_entry, entry_node, entry_left,
    depth, first_slot, leaf_value, table_start, slot_feature, slot_zero, table, weights,
    raw, out,
):  # fmt: skip
    """The values of ``leaves`` without tables: for a few rows, and for leaves too deep for one.

    The tables are tens of megabytes; one row touches a cache line of each leaf's table, and
    between requests those lines are gone from cache, so for a few rows it is faster to compute
    each leaf's Shapley values from its pattern: the polynomial Π_j (z_j + o_j t), divided by
    each feature's factor (LightGBM's "unwound" path sums), weighted by s!(d−1−s)!/d!.
    """
    o = np.empty(weights.shape[0])
    poly = np.empty(weights.shape[0] + 1)
    for r in range(left.shape[1]):
        for leaf in leaves:
            d = depth[leaf]
            first = first_slot[leaf]
            reached = True
            poly[0] = 1.0
            for j in range(d):
                ok = 1.0
                for e in range(slot_first_entry[first + j], slot_first_entry[first + j + 1]):
                    if left[entry_node[e], r] != entry_left[e]:
                        ok = 0.0
                        break
                o[j] = ok
                reached = reached and ok == 1.0
                z = slot_zero[first + j]
                poly[j + 1] = poly[j] * ok
                for s in range(j, 0, -1):
                    poly[s] = poly[s] * z + poly[s - 1] * ok
                poly[0] = poly[0] * z
            value = leaf_value[leaf]
            if reached:
                raw[r] += value
            w = weights[d]
            # Features the row does not follow (o = 0): poly = z · quotient, so the weighted sum
            # of the quotient is the same sum over poly, divided by z, shared by all of them.
            shared = 0.0
            for s in range(d):
                shared += w[s] * poly[s]
            for k in range(d):
                z = slot_zero[first + k]
                if o[k] == 1.0:  # poly = (t + z) · quotient: the quotient from the top down
                    q = poly[d]
                    total = w[d - 1] * q
                    for s in range(d - 1, 0, -1):
                        q = poly[s] - z * q
                        total += w[s - 1] * q
                elif z > 0.0:
                    total = shared / z
                else:  # z = 0 and o = 0: the product without feature k, term by term
                    total = 0.0
                    for s in range(d):
                        total += w[s] * _coefficient_without(slot_zero, o, first, d, k, s)
                out[slot_feature[first + k], r] += value * (o[k] - z) * total


@numba.njit(cache=True, nogil=True)
def _coefficient_without(slot_zero, o, first, d, k, s):
    """Coefficient of t**s in Π_{j≠k} (z_j + o_j t) (the rare z_k = 0 case; O(d²))."""
    c = np.zeros(d + 1)
    c[0] = 1.0
    m = 0
    for j in range(d):
        if j == k:
            continue
        zj = slot_zero[first + j]
        m += 1
        for t in range(m, 0, -1):
            c[t] = c[t] * zj + c[t - 1] * o[j]
        c[0] = c[0] * zj
    return c[s]


def _shapley_weights(max_d: int) -> np.ndarray:
    """``[d, s]`` = s!(d−1−s)!/d!: the Shapley weight of a coalition of s of the other d − 1 players."""
    weights = np.zeros((max_d + 1, max_d))
    for d in range(1, max_d + 1):
        for s in range(d):
            weights[d, s] = factorial(s) * factorial(d - 1 - s) / factorial(d)
    return weights


TABLE_ROWS = 8  # from this many rows on, the tables are faster than the direct computation
_BLOCK_ROWS = 2048


def _leaf_tables(values: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """Shapley values of the product game of each leaf, for every pattern of ``o``.

    Parameters
    ----------
    values : ndarray of shape (L,)
        Leaf values ``v``.
    zero : ndarray of shape (L, d)
        ``z_k``: share of training rows following the path on the k-th distinct feature.

    Returns
    -------
    ndarray of shape (L, 2**d, d)
        ``[l, p, k]`` = ``v (o_k − z_k) Σ_s s!(d−1−s)!/d! · e_s``, with ``o_j`` = bit ``j`` of
        ``p`` and ``e_s`` the coefficient of ``t**s`` in ``Π_{j≠k} (z_j + o_j t)``.
    """
    n_leaves, d = zero.shape
    ones = ((np.arange(1 << d)[:, None] >> np.arange(d)[None, :]) & 1).astype(np.float64)  # (P, d)
    weight = np.array([factorial(s) * factorial(d - 1 - s) / factorial(d) for s in range(d)])
    out = np.empty((n_leaves, 1 << d, d))
    for k in range(d):
        poly = np.zeros((n_leaves, 1 << d, d))
        poly[:, :, 0] = 1.0
        for j in range(d):
            if j == k:
                continue
            z = zero[:, j][:, None, None]
            o = ones[:, j][None, :, None]
            shifted = np.zeros_like(poly)
            shifted[:, :, 1:] = poly[:, :, :-1]
            poly = poly * z + shifted * o
        out[:, :, k] = values[:, None] * (ones[None, :, k] - zero[:, k][:, None]) * (poly @ weight)
    return out
