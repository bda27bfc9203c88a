"""ClvModels and FeatureEncoder on a small simulated training set with a known direction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.config import load_config
from training.models import ORDER_VALUE_FEATURE, ClvModels, FeatureEncoder, TrainingDataError

CHANNELS = ("paid_search", "referral", "organic")
# The toy rows have no BTYD features and every column is informative: boost from a constant, keep
# every feature, and calibrate with isotonic regression so that path stays covered.
TOY = dict(btyd_offset=False, exclude_features=[], churn_calibration="isotonic")


def _toy(n: int = 3000, seed: int = 0, n_origins: int = 3):
    """Rows whose churn rises with recency_days and falls with frequency; spend rises with frequency."""
    rng = np.random.default_rng(seed)
    rows = n * n_origins
    frequency = rng.poisson(2.0, rows).astype(float)
    recency = rng.uniform(0, 365, rows)
    channel = pd.array(rng.choice(CHANNELS, rows), dtype="string")
    logit = (recency - 120) / 40 - 0.4 * frequency + np.where(channel == "referral", -0.5, 0.0)
    churned = rng.random(rows) < 1 / (1 + np.exp(-logit))
    spend = np.where(churned, 0.0, rng.gamma(2.0, 10.0 * (1 + frequency) / 2.0))
    features = pd.DataFrame(
        {
            "recency_days": recency,
            "frequency": frequency,
            "tenure_days": recency + rng.uniform(0, 400, rows),
            "channel": channel,
        },
        index=pd.Index([f"C{i % n:05d}" for i in range(rows)], name="customer_id"),
    )
    origin = np.repeat(pd.date_range("2022-01-01", periods=n_origins, freq="30D").to_numpy(), n)
    return features, churned, spend, origin


@pytest.fixture(scope="module")
def config():
    return load_config(
        **TOY,
        training__churn_params__num_boost_round=80,
        training__spend_params__num_boost_round=80,
        n_cutoffs=3,
        early_stopping_rounds=10,
    )


@pytest.fixture(scope="module")
def fitted(config):
    X, churned, spend, origin = _toy()
    return ClvModels(training=config.training).fit(X, churned=churned, spend=spend, origin=origin), X


def test_encoder_records_levels_and_maps_unknown_to_nan():
    frame = pd.DataFrame(
        {"x": [1, 2, 3], "channel": pd.array(["b", None, "a"], dtype="string"), "flag": [True, False, True]}
    )
    enc = FeatureEncoder.fit(frame)
    assert enc.categories == {"channel": ("a", "b")}
    new = pd.DataFrame({"flag": [False], "channel": pd.array(["zzz"], dtype="string"), "x": [7]})
    out = enc.transform(new)
    assert list(out.columns) == ["x", "channel", "flag"]  # training order, whatever the input order
    assert np.isnan(out.loc[0, "channel"]) and out.loc[0, "x"] == 7.0
    np.testing.assert_array_equal(enc.transform(frame)["channel"].to_numpy(), [1.0, np.nan, 0.0])
    assert FeatureEncoder.from_dict(enc.to_dict()) == enc


def test_encoder_rejects_datetime_features():
    with pytest.raises(TrainingDataError, match="'when'"):
        FeatureEncoder.fit(pd.DataFrame({"when": pd.to_datetime(["2024-01-01"])}))


def test_predictions_are_consistent(fitted):
    models, X = fitted
    pred = models.predict(X.head(500))
    assert list(pred.columns) == ["churn_probability", "spend_if_active", "expected_spend"]
    assert pred["churn_probability"].between(0, 1).all()
    assert (pred["spend_if_active"] >= 0).all()
    np.testing.assert_allclose(
        pred["expected_spend"], (1 - pred["churn_probability"]) * pred["spend_if_active"]
    )
    assert models.calibration_ is not None
    assert set(models.best_iterations_) == {"churn", "spend"}


def test_directional_recency_and_frequency(fitted):
    models, _ = fitted
    base = pd.DataFrame(
        {
            "recency_days": [10.0, 300.0, 10.0],
            "frequency": [3.0, 3.0, 0.0],
            "tenure_days": [400.0, 400.0, 400.0],
            "channel": pd.array(["organic"] * 3, dtype="string"),
        }
    )
    p = models.predict(base)["churn_probability"].to_numpy()
    assert p[0] < p[1], "a more recent purchase must lower the churn probability"
    assert p[0] < p[2], "more repeat purchases must lower the churn probability"


def test_calibrated_on_fresh_rows(fitted):
    models, _ = fitted
    X, churned, _, _ = _toy(n=5000, seed=11, n_origins=1)
    p = models.predict(X)["churn_probability"].to_numpy()
    assert abs(p.mean() - churned.mean()) < 0.03


def test_fit_is_deterministic(config):
    X, churned, spend, origin = _toy(n=800, seed=3)
    a = ClvModels(training=config.training).fit(X, churned=churned, spend=spend, origin=origin).predict(X)
    b = ClvModels(training=config.training).fit(X, churned=churned, spend=spend, origin=origin).predict(X)
    pd.testing.assert_frame_equal(a, b)


def test_explain_names_top_features(fitted):
    models, X = fitted
    out = models.explain(X.head(3), top_k=2)
    assert len(out) == 3
    for row in out:
        assert set(row) == {"churn", "spend", "base"}
        assert len(row["churn"]) == 2
        names = {d["feature"] for d in row["churn"]}
        assert names <= set(X.columns)
        contributions = [abs(d["contribution"]) for d in row["churn"]]
        assert contributions == sorted(contributions, reverse=True)


@pytest.mark.parametrize("with_btyd", [False, True])
def test_driver_effects_are_in_probability_and_currency(fitted, config, with_btyd):
    from scipy.special import expit

    models, X = fitted
    rows = X.head(20)
    if with_btyd:  # a per-customer start: the effects and the base include it
        features, churned, spend, origin = _toy()
        features = _with_btyd(features, churned)
        training = config.training.model_copy(update={"btyd_offset": True, "spend_objective": "tweedie"})
        models = ClvModels(training=training).fit(features, churned=churned, spend=spend, origin=origin)
        rows = features.head(20)
    pred = models.predict(rows)
    drivers = models.explain(rows, top_k=3)
    encoded = models.encoder_.matrix(rows)
    churn_offset, spend_offset = models._offsets(rows)
    # The served spend if active is at least one expected order when the BTYD start gives it.
    floor = rows[ORDER_VALUE_FEATURE].to_numpy(float) if ORDER_VALUE_FEATURE in rows else np.zeros(len(rows))
    assert with_btyd == (ORDER_VALUE_FEATURE in rows)
    for key, booster, offset in (("churn", models.churn_model_.booster_, churn_offset),
                                 ("spend", models.spend_model_.booster_, spend_offset)):  # fmt: skip
        contrib = booster.predict(encoded, pred_contrib=True)  # LightGBM's own SHAP values, bias last
        raw = contrib.sum(axis=1)

        def served(score, key=key, offset=offset):
            if key == "churn":
                return models.calibrate(expit(score + offset))
            return np.maximum(np.exp(score + offset), floor)

        full = pred["churn_probability" if key == "churn" else "spend_if_active"].to_numpy()
        np.testing.assert_allclose(served(raw), full, rtol=1e-6)
        for i, row in enumerate(drivers):
            # The base: the booster's expected value (the bias column), from this customer's start.
            assert row["base"][key] == pytest.approx(served(np.full(len(rows), contrib[i, -1]))[i], rel=1e-6)
            for d in row[key]:
                j = list(models.encoder_.columns).index(d["feature"])
                without = served(np.where(np.arange(len(rows)) == i, raw - contrib[:, j], raw))[i]
                assert d["effect"] == pytest.approx(full[i] - without, rel=1e-6, abs=1e-9)
                assert d["effect"] * d["contribution"] >= 0  # the link is increasing: same sign


def test_feature_importance_covers_every_feature(fitted):
    models, X = fitted
    imp = models.feature_importance()
    assert set(imp.index) == set(X.columns)
    assert imp.loc["recency_days", "churn"] > 0


def test_from_parts_reproduces_predictions(fitted):
    models, X = fitted
    meta = models.metadata()
    rebuilt = ClvModels.from_parts(
        encoder=FeatureEncoder.from_dict(meta["encoder"]),
        churn_model=models.churn_model_,
        spend_model=models.spend_model_,
        calibration=(meta["calibration"]["x"], meta["calibration"]["y"]),
        horizon_days=meta["horizon_days"],
    )
    pd.testing.assert_frame_equal(rebuilt.predict(X.head(200)), models.predict(X.head(200)))


def test_single_churn_class_is_a_clear_error(config):
    X, _, spend, origin = _toy(n=200)
    with pytest.raises(TrainingDataError, match="single churn class"):
        ClvModels(training=config.training).fit(X, churned=np.ones(len(X), bool), spend=spend, origin=origin)


@pytest.mark.parametrize("objective", ["gamma", "regression"])
def test_other_spend_objectives_train(objective):
    cfg = load_config(
        **TOY, spend_objective=objective, n_cutoffs=3,
        training__churn_params__num_boost_round=10, training__spend_params__num_boost_round=10,
    )
    X, churned, spend, origin = _toy(n=300)
    models = ClvModels(training=cfg.training).fit(X, churned=churned, spend=spend, origin=origin)
    pred = models.predict(X)
    assert np.isfinite(pred.to_numpy()).all()
    _assert_one_pass_agrees(models, X)


def _assert_one_pass_agrees(models: ClvModels, X: pd.DataFrame) -> None:
    """predict_and_explain gives predict's numbers and explain's drivers."""
    pred, drivers = models.predict_and_explain(X, top_k=2)
    pd.testing.assert_frame_equal(pred, models.predict(X), check_exact=False, rtol=1e-12, atol=1e-12)
    assert drivers == models.explain(X, top_k=2)


def test_fast_path_matches_the_scikit_learn_wrapper(fitted):
    models, X = fitted[0], fitted[1]
    encoded = models.transform(X)
    wrapper_p = models.calibrate(models.churn_model_.predict_proba(encoded)[:, 1])
    wrapper_s = np.maximum(models.spend_model_.predict(encoded), 0.0)
    got = models.predict(X)
    np.testing.assert_allclose(got["churn_probability"], wrapper_p, rtol=1e-12)
    np.testing.assert_allclose(got["spend_if_active"], wrapper_s, rtol=1e-12)
    contrib = models.churn_model_.predict(encoded.head(5), pred_contrib=True)[:, :-1]
    first = models.explain(X.head(5), top_k=1)
    for i, row in enumerate(first):
        j = int(np.argmax(np.abs(contrib[i])))
        assert row["churn"][0]["feature"] == encoded.columns[j]
        assert row["churn"][0]["contribution"] == pytest.approx(contrib[i, j], rel=1e-12)


def _with_btyd(features: pd.DataFrame, churned: np.ndarray, seed: int = 5) -> pd.DataFrame:
    """The toy rows plus noisy BTYD columns that carry part of the signal."""
    rng = np.random.default_rng(seed)
    p = np.clip(np.where(churned, 0.7, 0.4) + rng.normal(0, 0.15, len(features)), 0.02, 0.98)
    order_value = rng.gamma(4.0, 5.0, len(features))
    return features.assign(
        btyd_p_no_purchase=p, btyd_spend_if_active=1.5 * order_value, btyd_expected_order_value=order_value
    )


def test_btyd_offset_boosts_from_the_btyd_forecast():
    X, churned, spend, origin = _toy(n=1000)
    X = _with_btyd(X, churned)
    cfg = load_config(n_cutoffs=3, training__churn_params__num_boost_round=30, training__spend_params__num_boost_round=30)
    assert cfg.training.btyd_offset and "tenure_days" in cfg.training.exclude_features
    models = ClvModels(training=cfg.training).fit(X, churned=churned, spend=spend, origin=origin)
    assert "tenure_days" not in models.encoder_.columns and "recency_days" in models.encoder_.columns
    pred = models.predict(X)
    # The boosters add their raw score to the BTYD offsets.
    raw_churn = models.churn_model_.predict(models.transform(X), raw_score=True)
    p = X["btyd_p_no_purchase"].to_numpy()
    np.testing.assert_allclose(pred["churn_probability"], 1 / (1 + np.exp(-(raw_churn + np.log(p / (1 - p))))), rtol=1e-9)
    assert models.metadata()["btyd_offset"] is True
    rebuilt = ClvModels.from_parts(
        encoder=models.encoder_, churn_model=models.churn_model_, spend_model=models.spend_model_,
        calibration=None, horizon_days=models.horizon_days_, btyd_offset=True,
    )
    pd.testing.assert_frame_equal(rebuilt.predict(X.head(100)), pred.head(100))
    _assert_one_pass_agrees(rebuilt, X)
    # Without a BTYD column the error says what is missing.
    with pytest.raises(KeyError, match="btyd_p_no_purchase"):
        models.predict(X.drop(columns="btyd_p_no_purchase"))


def test_btyd_offset_needs_a_log_link_objective():
    from training.config import ConfigError

    with pytest.raises(ConfigError, match="btyd_offset"):
        load_config(spend_objective="regression")
