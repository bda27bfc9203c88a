"""Exact TreeSHAP from lookup tables agrees with LightGBM's own ``pred_contrib``."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from training.treeshap import TreeShap


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Numeric columns with NaN and exact zeros, and a categorical column with 6 codes."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    X[rng.random(n) < 0.15, 0] = np.nan
    X[rng.random(n) < 0.3, 1] = 0.0
    X[:, 2] = rng.exponential(size=n).round(1)  # many ties
    X[:, 4] = rng.integers(0, 6, size=n)
    y = X[:, 1] * 2 + np.nan_to_num(X[:, 0]) + (X[:, 4] % 3) - X[:, 2] + rng.normal(scale=0.5, size=n)
    return X, y


def _rows(seed: int) -> np.ndarray:
    """Rows to explain, with the awkward values: NaN everywhere, zeros, unseen and negative codes."""
    X, _ = _data(300, seed)
    X[:5] = np.nan
    X[5:10, 1] = 0.0
    X[10:16, 4] = [7, -1, 2.5, 99, np.nan, -0.5]  # -0.5 is code 0 for LightGBM (cast toward zero)
    return X


@pytest.mark.parametrize(
    "params",
    [
        {"objective": "regression", "num_leaves": 15, "min_child_samples": 5},
        {"objective": "binary", "num_leaves": 31, "min_child_samples": 3},
        {"objective": "tweedie", "num_leaves": 7, "min_child_samples": 20, "zero_as_missing": True},
        {"objective": "regression", "num_leaves": 63, "min_child_samples": 2, "max_depth": -1},
    ],
    ids=["regression", "binary", "tweedie-zero-missing", "deep"],
)
def test_contributions_equal_lightgbm(params):
    X, y = _data(3000, seed=1)
    if params["objective"] == "binary":
        y = (y > np.median(y)).astype(int)
    if params["objective"] == "tweedie":
        y = np.maximum(y, 0)
    booster = lgb.train(
        {**params, "verbosity": -1, "seed": 0, "num_threads": 1, "min_data_per_group": 5, "cat_smooth": 1},
        lgb.Dataset(X, y, categorical_feature=[4]),
        num_boost_round=60,
    )
    rows = _rows(seed=2)
    expected = booster.predict(rows, pred_contrib=True)[:, :-1]
    explainer = TreeShap(booster)
    batched = explainer.contributions(rows)  # look-up tables
    few = np.vstack([explainer.contributions(rows[i : i + 3]) for i in range(0, len(rows), 3)])  # direct
    for got in (batched, few):
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert np.abs(batched).max() > 0.1  # the comparison is not between zeros


def test_uses_the_early_stopping_iteration_as_predict_does():
    X, y = _data(2000, seed=3)
    valid = lgb.Dataset(X[1500:], y[1500:], categorical_feature=[4])
    booster = lgb.train(
        {"objective": "regression", "learning_rate": 0.5, "verbosity": -1, "num_threads": 1},
        lgb.Dataset(X[:1500], y[:1500], categorical_feature=[4]),
        num_boost_round=300,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(5, verbose=False)],
        keep_training_booster=True,  # keeps the trees after the best iteration
    )
    assert 0 < booster.best_iteration < booster.num_trees()
    rows = _rows(seed=4)
    expected = booster.predict(rows, pred_contrib=True)[:, :-1]
    np.testing.assert_allclose(TreeShap(booster).contributions(rows), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(TreeShap(booster).contributions(rows[:1]), expected[:1], rtol=1e-9, atol=1e-12)


def test_stump_contribution_is_the_value_minus_its_expectation():
    # One split x0 <= 0.5 with 30 rows left (value 1) and 70 right (value 2):
    # E = 0.3·1 + 0.7·2 = 1.7, so φ(x0) = 1 − 1.7 on the left and 2 − 1.7 on the right.
    X = np.r_[np.zeros(30), np.ones(70)][:, None]
    y = np.r_[np.ones(30), 2 * np.ones(70)]
    booster = lgb.train(
        {"objective": "regression", "learning_rate": 1.0, "num_leaves": 2, "min_child_samples": 1,
         "min_data_in_bin": 1, "boost_from_average": False, "verbosity": -1},
        lgb.Dataset(X, y),
        num_boost_round=1,
    )
    phi = TreeShap(booster).contributions(np.array([[0.0], [1.0]]))  # (the direct path: 2 rows)
    np.testing.assert_allclose(phi[:, 0], [1 - 1.7, 2 - 1.7], atol=1e-12)


def test_trees_without_splits_contribute_nothing():
    X, y = _data(50, seed=5)
    booster = lgb.train(
        {"objective": "regression", "min_child_samples": 1000, "verbosity": -1}, lgb.Dataset(X, y), num_boost_round=3
    )
    assert TreeShap(booster).table_size == 0
    np.testing.assert_array_equal(TreeShap(booster).contributions(X[:4]), np.zeros((4, 5)))


def test_rejects_a_matrix_of_the_wrong_width():
    X, y = _data(500, seed=6)
    booster = lgb.train({"objective": "regression", "verbosity": -1}, lgb.Dataset(X, y), num_boost_round=2)
    with pytest.raises(ValueError, match=r"shape \(n, 5\)"):
        TreeShap(booster).contributions(X[:, :4])


def test_raw_score_is_the_boosters():
    X, y = _data(3000, seed=7)
    booster = lgb.train(
        {"objective": "tweedie", "num_leaves": 15, "verbosity": -1, "num_threads": 1},
        lgb.Dataset(X, np.maximum(y, 0), categorical_feature=[4]),
        num_boost_round=80,
    )
    rows = _rows(seed=8)
    bias = booster.predict(rows, pred_contrib=True)[:, -1]
    explainer = TreeShap(booster)
    for block in (rows, rows[:2]):  # the table and the direct path
        raw, contributions = explainer.raw_score_and_contributions(block)
        np.testing.assert_allclose(raw, booster.predict(block, raw_score=True), rtol=1e-12, atol=1e-12)
        # SHAP's efficiency: the bias column plus the contributions add up to the raw score.
        np.testing.assert_allclose(bias[: len(block)] + contributions.sum(axis=1), raw, rtol=1e-9, atol=1e-12)


def test_large_inputs_are_explained_in_blocks(monkeypatch):
    import training.treeshap as treeshap

    X, y = _data(1000, seed=9)
    booster = lgb.train({"objective": "regression", "verbosity": -1}, lgb.Dataset(X, y), num_boost_round=20)
    explainer = TreeShap(booster)
    monkeypatch.setattr(treeshap, "_BLOCK_ROWS", 71)  # 1000 rows = 14 blocks by the tables, 6 rows directly
    raw, contributions = explainer.raw_score_and_contributions(X)
    np.testing.assert_allclose(contributions, booster.predict(X, pred_contrib=True)[:, :-1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(raw, booster.predict(X, raw_score=True), rtol=1e-12, atol=1e-12)


def test_leaves_with_many_features_on_their_path_are_computed_without_a_table(monkeypatch):
    import training.treeshap as treeshap

    rng = np.random.default_rng(10)
    X = rng.normal(size=(4000, 40))
    y = np.sin(X[:, :20]).sum(axis=1) + rng.normal(scale=0.1, size=4000)
    booster = lgb.train(
        {"objective": "regression", "num_leaves": 255, "min_child_samples": 2, "verbosity": -1, "num_threads": 1},
        lgb.Dataset(X, y),
        num_boost_round=15,
    )
    explainer = TreeShap(booster)
    depth, _, _, table_start, *_ = explainer._leaves
    cap = explainer.table_depth
    assert (depth > cap).any()  # some leaves go without a table ...
    assert (table_start[depth > cap] == -1).all() and (table_start[depth <= cap] >= 0).all()
    assert explainer.table_size <= treeshap._TABLE_BUDGET  # ... and the tables fit the budget
    rows = X[:300]
    expected = booster.predict(rows, pred_contrib=True)[:, :-1]
    np.testing.assert_allclose(explainer.contributions(rows), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(explainer.contributions(rows[:3]), expected[:3], rtol=1e-9, atol=1e-12)
    # A smaller memory budget lowers the table depth; the values stay the same.
    monkeypatch.setattr(treeshap, "_TABLE_BUDGET", explainer.table_size // 4)
    smaller = TreeShap(booster)
    assert smaller.table_depth < cap and smaller.table_size <= explainer.table_size // 4
    np.testing.assert_allclose(smaller.contributions(rows), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "params, label, message",
    [
        ({"objective": "regression", "linear_tree": True}, "amount", "linear trees"),
        ({"objective": "multiclass", "num_class": 3}, "class", "multiclass"),
    ],
)
def test_refuses_what_it_cannot_explain(params, label, message):
    X, y = _data(600, seed=11)
    target = np.abs(y) if label == "amount" else np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    booster = lgb.train({**params, "verbosity": -1}, lgb.Dataset(X[:, :4], target), num_boost_round=3)
    with pytest.raises(ValueError, match=message):
        TreeShap(booster)
