"""Tests of the labels and the rolling-origin training set."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from features.build import build_features, family_features
from features.config import FeatureConfig
from features.contract import Tables
from features.schema import feature_set_id
from features.spec import check_frame
from training.config import TrainingConfig
from training.labels import LABEL_SCHEMA, build_labels
from training.training_set import (
    TrainingInputError,
    build_training_set,
    plan_origins,
    training_cutoffs,
    training_set_schema,
)
from features.synthetic import generate

STR = "str"
CUTOFF = "2024-01-31"
H = 10  # label window: 2024-02-01 .. 2024-02-10


def table(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=columns)
    out["customer_id"] = out["customer_id"].astype(STR)
    out["timestamp"] = pd.to_datetime(out["timestamp"], format="ISO8601").astype("datetime64[ns]")
    if "event_type" in out:
        out["event_type"] = out["event_type"].astype(STR)
    return out


@pytest.fixture
def boundaries() -> Tables:
    """Purchases at the edges of the window of cutoff 2024-01-31 with H = 10 days.

    A: buys on the cutoff day (23:59, history) and on 02-10 (cutoff + H, label): not churned.
    B: buys on 02-11 (cutoff + H + 1, outside): churned, spend 0.
    C: buys twice on 02-01 and is refunded on 02-05 (-8): one purchase day, spend 12.
    D: only a refund in the window: churned, spend -5; a cancel on 02-10.
    E: first purchase inside the window: not known at the cutoff, no row.
    """
    transactions = table(
        [
            ("A", "2024-01-20", 10.0),
            ("A", "2024-01-31 23:59", 3.0),
            ("A", "2024-02-10 23:59", 7.0),
            ("B", "2024-01-05", 4.0),
            ("B", "2024-02-11 00:00", 9.0),
            ("C", "2024-01-10", 1.0),
            ("C", "2024-02-01 08:00", 15.0),
            ("C", "2024-02-01 20:00", 5.0),
            ("C", "2024-02-05", -8.0),
            ("D", "2023-12-01", 6.0),
            ("D", "2024-02-03", -5.0),
            ("E", "2024-02-02", 2.0),
        ],
        ["customer_id", "timestamp", "amount"],
    )
    events = table(
        [
            ("D", "2024-02-10 12:00", "cancel"),
            ("B", "2024-01-31", "cancel"),  # on the cutoff day: history, not label
            ("A", "2024-02-11", "cancel"),  # after the window
            ("C", "2024-02-03", "session"),
        ],
        ["customer_id", "timestamp", "event_type"],
    )
    return Tables(transactions, events)


def labels(ids, churn, spend, purchase_days) -> pd.DataFrame:
    return pd.DataFrame(
        {"churn": churn, "spend": spend, "purchase_days": purchase_days},
        index=pd.Index(ids, dtype=STR, name="customer_id"),
    )


def test_label_window_boundaries_and_refunds(boundaries):
    got = build_labels(boundaries, cutoff=CUTOFF, horizon_days=H)
    want = labels(["A", "B", "C", "D"], [0, 1, 0, 1], [7.0, 0.0, 12.0, -5.0], [1, 0, 1, 0])
    assert_frame_equal(got, want)
    check_frame(got, LABEL_SCHEMA)


def test_contractual_churn_counts_cancels_in_the_window(boundaries):
    got = build_labels(boundaries, cutoff=CUTOFF, horizon_days=H, churn_definition="cancel")
    want = labels(["A", "B", "C", "D"], [0, 0, 0, 1], [7.0, 0.0, 12.0, -5.0], [1, 0, 1, 0])
    assert_frame_equal(got, want)
    with pytest.raises(ValueError, match="events table"):
        build_labels(Tables(boundaries.transactions), cutoff=CUTOFF, horizon_days=H, churn_definition="cancel")


def test_labels_reject_bad_arguments(boundaries):
    with pytest.raises(ValueError, match="churn_definition"):
        build_labels(boundaries, cutoff=CUTOFF, horizon_days=H, churn_definition="silence")
    with pytest.raises(ValueError, match="horizon_days"):
        build_labels(boundaries, cutoff=CUTOFF, horizon_days=0)
    with pytest.raises(ValueError, match="no customer has a purchase"):
        build_labels(boundaries, cutoff="2023-01-01", horizon_days=H)


def test_the_cutoff_day_purchase_is_a_feature_not_a_label(boundaries):
    rfm = family_features("rfm", boundaries, cutoff=CUTOFF)
    assert rfm.loc["A", "recency_days"] == 0 and rfm.loc["A", "total_spend"] == 13.0
    assert build_labels(boundaries, cutoff=CUTOFF, horizon_days=H).loc["A", "spend"] == 7.0


def test_training_cutoffs_windows_end_by_the_training_cutoff():
    origins = training_cutoffs("2024-06-30", horizon_days=90, n_cutoffs=4, step_days=30)
    assert origins == [dt.date(2024, 1, 2), dt.date(2024, 2, 1), dt.date(2024, 3, 2), dt.date(2024, 4, 1)]
    assert all(o + dt.timedelta(days=90) <= dt.date(2024, 6, 30) for o in origins)
    assert origins[-1] + dt.timedelta(days=90) == dt.date(2024, 6, 30)
    with pytest.raises(ValueError, match="n_cutoffs"):
        training_cutoffs("2024-06-30", horizon_days=90, n_cutoffs=0, step_days=30)


@pytest.fixture(scope="module")
def book():
    return generate(1_200, seed=5, start="2022-01-01", end="2023-12-31")


def test_training_set_stacks_features_and_labels_per_origin(book):
    config = FeatureConfig(windows_days=(30, 90))
    origins = training_cutoffs("2023-12-31", horizon_days=91, n_cutoffs=3, step_days=60)
    got = build_training_set(book.tables, origins=origins, horizon_days=91, config=config)
    check_frame(got.frame, training_set_schema(config))
    assert sorted(got.frame["cutoff"].unique()) == [pd.Timestamp(o) for o in origins]
    assert (got.frame["cutoff"] + pd.Timedelta(days=91) <= pd.Timestamp("2023-12-31")).all()
    assert list(got.btyd) == origins
    assert got.feature_set_id == feature_set_id(config)
    # Each origin's block is build_features (BTYD fitted at that origin) beside build_labels.
    last = origins[-1]
    block = got.frame[got.frame["cutoff"] == pd.Timestamp(last)]
    features = build_features(book.tables, cutoff=last, config=config)
    assert_frame_equal(block[features.columns], features)
    assert_frame_equal(
        block[["churn", "spend", "purchase_days"]], build_labels(book.tables, cutoff=last, horizon_days=91)
    )
    assert got.btyd[last].bgnbd.r > 0


def test_plan_keeps_the_origins_after_the_first_purchase_and_refuses_too_few(book):
    training = TrainingConfig(horizon_days=91, n_cutoffs=3, step_days=30, validation_cutoffs=1)
    plan = plan_origins(book.tables, cutoff="2022-05-15", training=training)
    # Candidates 2021-12-15, 2022-01-14, 2022-02-13: the first precedes the book's first purchase.
    assert plan.first_day <= pd.Timestamp("2022-01-14")
    assert [o.date() for o in plan.origins] == [dt.date(2022, 1, 14), dt.date(2022, 2, 13)]
    fixed = training.model_copy(update={"label_horizon_days": 91})
    with pytest.raises(TrainingInputError, match="label windows of 91 days leave 0 training origin"):
        plan_origins(book.tables, cutoff="2022-02-01", training=fixed)
    with pytest.raises(TrainingInputError, match="leave [01] training origin"):  # no shorter window fits either
        plan_origins(book.tables, cutoff="2022-02-01", training=training)
    # Without a fixed label window, the boosters learn H / j days for the longest j that fits.
    short = plan_origins(book.tables, cutoff="2022-04-01", training=training)
    assert short.horizon_days == 91 and short.model_horizon_days in {round(91 / j) for j in range(2, 5)}
    assert len(short.origins) >= 2
    assert all(o + pd.Timedelta(days=short.model_horizon_days) <= short.cutoff for o in short.origins)


def test_cdnow_labels_match_the_reference_protocol(cdnow_dir):
    from features.io import load_tables

    tables = load_tables(cdnow_dir).tables
    got = build_labels(tables, cutoff="1997-12-31", horizon_days=182)
    # README "cdnow-26w": 23,570 customers, 77.2% without a purchase, $476,154 of holdout spend.
    assert len(got) == 23_570
    assert got["churn"].mean() == pytest.approx(0.772, abs=5e-4)
    assert got["spend"].sum() == pytest.approx(476_154, abs=1)
    assert np.array_equal(got["churn"].to_numpy() == 1, got["purchase_days"].to_numpy() == 0)


def test_training_matrix_is_the_training_set_encoded_in_float32(book):
    # The memory-light form holds the very rows of the frame: same order, labels, BTYD fits, and
    # features equal to the frame's encoded and rounded to float32 (excluded features left out).
    from training.models import FeatureEncoder
    from training.training_set import build_training_matrix

    config = FeatureConfig(windows_days=(30, 90))
    origins = training_cutoffs("2023-12-31", horizon_days=91, n_cutoffs=3, step_days=60)
    frame = build_training_set(book.tables, origins=origins, horizon_days=91, config=config)
    excluded = ("tenure_days",)
    got = build_training_matrix(book.tables, origins=origins, horizon_days=91, config=config, exclude_features=excluded)
    features, labels = frame.split(config)
    encoder = FeatureEncoder.fit(features.drop(columns=list(excluded)))
    assert got.encoder == encoder and got.encoder.categorical_columns  # a categorical column is coded
    assert got.matrix.dtype == np.float32 and got.matrix.flags.c_contiguous
    np.testing.assert_array_equal(got.matrix, encoder.matrix(features).astype(np.float32))
    assert_frame_equal(got.labels, labels)
    assert list(got.btyd) == origins and got.feature_set_id == frame.feature_set_id
    # Rows kept as one run are a view of the matrix; scattered rows are a copy.
    first_out = (got.labels["cutoff"] != pd.Timestamp(origins[0])).to_numpy()
    assert np.shares_memory(got.rows(first_out).matrix, got.matrix)
    scattered = np.arange(len(got)) % 2 == 0
    np.testing.assert_array_equal(got.rows(scattered).matrix, got.matrix[scattered])
    assert_frame_equal(got.rows(scattered).labels, labels[scattered])


def test_models_fit_on_the_matrix_equal_the_fit_on_its_frame(book):
    # fit_matrix is fit on the same values: on the frame's features rounded to float32 (and the
    # BTYD offsets read from those rounded values on both sides) the boosters are the very same.
    import dataclasses
    from training.config import load_config
    from training.models import ClvModels
    from training.training_set import build_training_matrix

    config = load_config(
        training__churn_params__num_boost_round=40, training__spend_params__num_boost_round=40,
        early_stopping_rounds=5, n_cutoffs=3,
    )  # fmt: skip
    features_config = FeatureConfig(windows_days=(30, 90))
    origins = training_cutoffs("2023-12-31", horizon_days=91, n_cutoffs=3, step_days=60)
    frame = build_training_set(book.tables, origins=origins, horizon_days=91, config=features_config)
    matrix = build_training_matrix(
        book.tables, origins=origins, horizon_days=91, config=features_config,
        exclude_features=config.training.exclude_features,
    )  # fmt: skip
    features, labels = frame.split(features_config)
    rounded = features.copy()
    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    rounded[numeric] = rounded[numeric].astype(np.float32).astype(np.float64)
    matrix = dataclasses.replace(matrix, offset_features=rounded[list(matrix.offset_features.columns)])
    on_frame = ClvModels(training=config.training).fit(
        rounded, churned=labels["churn"].to_numpy(bool), spend=labels["spend"].to_numpy(float), origin=labels["cutoff"]
    )
    on_matrix = ClvModels(training=config.training).fit_matrix(matrix)
    assert on_matrix.best_iterations_ == on_frame.best_iterations_
    for model in ("churn_model_", "spend_model_"):
        assert getattr(on_matrix, model).booster_.model_to_string() == getattr(on_frame, model).booster_.model_to_string()
    scored = build_features(book.tables, cutoff="2023-12-31", config=features_config)
    pd.testing.assert_frame_equal(on_matrix.predict(scored), on_frame.predict(scored))
