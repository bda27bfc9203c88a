"""Tests of the point-in-time features: hand-computed values per family, leakage, schema, CDNOW."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from features import btyd as bt
from features.btyd import BTYDParams
from features.build import build_features, family_features, feature_blocks, fit_btyd
from features.config import FeatureConfig
from features.contract import Tables
from features.dates import parse_cutoff
from features.families import FAMILIES
from features.schema import feature_schema, feature_set_id
from features.spec import FeatureSpec, assemble, check_frame
from features.synthetic import generate

STR = "str"
CUTOFF = "2024-01-31"
CONFIG = FeatureConfig(
    windows_days=(30, 7),  # deliberately unsorted: columns follow the sorted windows
    event_types=("session", "cancel"),
    covariates=("region", "age"),
    categorical_covariates=("region",),
)
PARAMS = BTYDParams(
    bgnbd=bt.BGNBDParams(r=0.25, alpha=4.0, a=0.8, b=2.5),
    gamma_gamma=bt.GammaGammaParams(p=6.0, q=4.0, v=15.0),
    time_unit_days=7.0,
)


def frame(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=columns)
    out["customer_id"] = out["customer_id"].astype(STR)
    if "timestamp" in out:
        out["timestamp"] = pd.to_datetime(out["timestamp"], format="ISO8601").astype("datetime64[ns]")
    if "event_type" in out:
        out["event_type"] = out["event_type"].astype(STR)
    return out


def index(ids: list[str]) -> pd.Index:
    return pd.Index(ids, dtype=STR, name="customer_id")


def expected(ids: list[str], data: dict, dtypes: dict | None = None) -> pd.DataFrame:
    out = pd.DataFrame(data, index=index(ids))
    return out.astype(dtypes) if dtypes else out


@pytest.fixture
def tiny() -> Tables:
    """Three known customers A, B, C; D has only a refund and E buys after the cutoff (2024-01-31).

    A: purchase days 01-01 (10 + 5), 01-11 (20), 01-31 23:00 (30, the cutoff day); refund 01-15 (-5).
    B: one purchase 2023-11-02 (50). C: 2023-02-05 (100), 2023-12-02 (40); refund 2024-01-02 (-10).
    """
    transactions = frame(
        [
            ("A", "2024-01-01 09:00", 10.0),
            ("A", "2024-01-01 18:00", 5.0),
            ("A", "2024-01-11", 20.0),
            ("A", "2024-01-15", -5.0),
            ("A", "2024-01-31 23:00", 30.0),
            ("B", "2023-11-02", 50.0),
            ("C", "2023-02-05", 100.0),
            ("C", "2023-12-02", 40.0),
            ("C", "2024-01-02", -10.0),
            ("D", "2024-01-10", -3.0),
            ("E", "2024-02-01", 7.0),
        ],
        ["customer_id", "timestamp", "amount"],
    )
    events = frame(
        [
            ("A", "2024-01-30", "session"),
            ("A", "2024-01-20", "session"),
            ("A", "2023-12-01", "session"),
            ("A", "2024-01-31", "email_open"),  # not a configured type
            ("B", "2024-01-31 12:00", "cancel"),
            ("D", "2024-01-31", "session"),  # not a known customer
        ],
        ["customer_id", "timestamp", "event_type"],
    )
    customers = pd.DataFrame(
        {
            "customer_id": pd.array(["A", "B", "D"], dtype=STR),
            "acquired_at": pd.to_datetime(["2023-12-15", "2024-03-01", "2024-01-01"]).astype("datetime64[ns]"),
            "channel": pd.array(["search", "social", "email"], dtype=STR),
            "acquisition_cost": [12.5, np.nan, 3.0],
            "referred_by": pd.array([None, "A", None], dtype=STR),
            "region": pd.array(["north", None, "south"], dtype=STR),
            "age": [30, 41, 22],
        }
    )
    return Tables(transactions, events, customers)


# --------------------------------------------------------------------------------------------------
# hand-computed families


def test_rfm_by_hand(tiny):
    got = family_features("rfm", tiny, cutoff=CUTOFF, config=CONFIG)
    want = expected(
        ["A", "B", "C"],
        {
            "recency_days": [0, 90, 60],
            "frequency": [2, 0, 1],
            "tenure_days": [30, 90, 360],
            "purchase_count": [4, 1, 2],
            "total_spend": [60.0, 50.0, 130.0],
            "monetary_value": [20.0, 50.0, 65.0],
            "first_order_value": [15.0, 50.0, 100.0],
            "last_order_value": [30.0, 50.0, 40.0],
            "max_order_value": [30.0, 50.0, 100.0],
            "refund_count": [1, 0, 1],
            "refund_amount": [5.0, 0.0, 10.0],
            "refund_share": [5 / 65, 0.0, 10 / 140],
        },
    )
    assert_frame_equal(got, want)


def test_purchase_windows_by_hand(tiny):
    got = family_features("purchase_windows", tiny, cutoff=CUTOFF, config=CONFIG)
    # 7-day window = 01-25..01-31, 30-day window = 01-02..01-31 (C's refund on 01-02 is inside).
    want = expected(
        ["A", "B", "C"],
        {
            "purchase_days_7d": [1, 0, 0],
            "spend_7d": [30.0, 0.0, 0.0],
            "purchase_days_30d": [2, 0, 0],
            "spend_30d": [45.0, 0.0, -10.0],
            "purchase_trend_7d_30d": [(1 / 7) / (2 / 30), np.nan, np.nan],
            "spend_trend_7d_30d": [(30 / 7) / (45 / 30), np.nan, 0.0],
        },
    )
    assert_frame_equal(got, want)


def test_purchase_gaps_by_hand(tiny):
    got = family_features("purchase_gaps", tiny, cutoff=CUTOFF, config=CONFIG)
    want = expected(
        ["A", "B", "C"],
        {
            "gap_mean_days": [15.0, np.nan, 300.0],
            "gap_std_days": [np.sqrt(50.0), np.nan, np.nan],
            "gap_max_days": [20.0, np.nan, 300.0],
            "recency_gap_ratio": [0.0, np.nan, 0.2],
            "purchase_rate_per_day": [3 / 31, 1 / 91, 2 / 361],
            "spend_rate_per_day": [60 / 31, 50 / 91, 130 / 361],
        },
    )
    assert_frame_equal(got, want)


def test_engagement_by_hand(tiny):
    got = family_features("engagement", tiny, cutoff=CUTOFF, config=CONFIG)
    want = expected(
        ["A", "B", "C"],
        {
            "session_count": [3, 0, 0],
            "session_count_7d": [1, 0, 0],
            "session_count_30d": [2, 0, 0],
            "session_days_since_last": [1.0, np.nan, np.nan],
            "session_trend_7d_30d": [(1 / 7) / (2 / 30), np.nan, np.nan],
            "cancel_count": [0, 1, 0],
            "cancel_count_7d": [0, 1, 0],
            "cancel_count_30d": [0, 1, 0],
            "cancel_days_since_last": [np.nan, 0.0, np.nan],
            "cancel_trend_7d_30d": [np.nan, 30 / 7, np.nan],
        },
    )
    assert_frame_equal(got, want)


def test_attributes_by_hand(tiny):
    got = family_features("attributes", tiny, cutoff=CUTOFF, config=CONFIG)
    want = expected(
        ["A", "B", "C"],
        {
            "channel": pd.array(["search", "social", None], dtype=STR),
            # B's acquired_at lies after the cutoff and C has no row: the first purchase stands in.
            "days_since_acquisition": [47, 90, 360],
            "acquisition_cost": [12.5, np.nan, np.nan],
            "is_referred": [0.0, 1.0, np.nan],
            "region": pd.array(["north", None, None], dtype=STR),
            "age": [30.0, 41.0, np.nan],
        },
    )
    assert_frame_equal(got, want)


def test_optional_tables_missing_keep_the_declared_columns(tiny):
    bare = Tables(tiny.transactions)
    got = build_features(bare, cutoff=CUTOFF, config=CONFIG, btyd=PARAMS)
    check_frame(got, feature_schema(CONFIG))
    assert (got["session_count"] == 0).all() and got["cancel_days_since_last"].isna().all()
    assert got["channel"].isna().all() and got["is_referred"].isna().all()
    assert got["days_since_acquisition"].tolist() == got["tenure_days"].tolist()
    # A customers table without the optional columns behaves the same.
    ids_only = Tables(tiny.transactions, tiny.events.iloc[:0], tiny.customers[["customer_id"]])
    assert_frame_equal(build_features(ids_only, cutoff=CUTOFF, config=CONFIG, btyd=PARAMS), got)
    empty = Tables(tiny.transactions, None, tiny.customers.iloc[:0])
    assert_frame_equal(build_features(empty, cutoff=CUTOFF, config=CONFIG, btyd=PARAMS), got)


def test_btyd_features_match_the_btyd_module(tiny):
    got = family_features("btyd", tiny, cutoff=CUTOFF, config=CONFIG, btyd=PARAMS)
    summary = bt.summary_from_transactions(tiny.transactions, cutoff=CUTOFF, time_unit_days=7.0)
    x, tx, T, m = (summary[c].to_numpy() for c in ("frequency", "recency", "T", "monetary_value"))
    purchases = bt.bgnbd_expected_purchases(PARAMS.bgnbd, 182 / 7, x, tx, T)
    value = bt.gamma_gamma_expected_value(PARAMS.gamma_gamma, x, m)
    want = expected(
        ["A", "B", "C"],
        {
            "btyd_expected_purchases": purchases,
            "btyd_p_alive": bt.bgnbd_probability_alive(PARAMS.bgnbd, x, tx, T),
            "btyd_p_no_purchase": bt.bgnbd_probability_no_purchase(PARAMS.bgnbd, 182 / 7, x, tx, T),
            "btyd_expected_order_value": value,
            "btyd_expected_spend": purchases * value,
            # Away from P(alive) ~ 0, spend given a purchase is E[spend] / P(a purchase).
            "btyd_spend_if_active": purchases * value
            / (1 - bt.bgnbd_probability_no_purchase(PARAMS.bgnbd, 182 / 7, x, tx, T)),
        },
    )
    assert_frame_equal(got, want, rtol=1e-9)


def test_build_features_joins_the_families_in_schema_order(tiny):
    got = build_features(tiny, cutoff=CUTOFF, config=CONFIG, btyd=PARAMS)
    check_frame(got, feature_schema(CONFIG))
    assert got.index.equals(index(["A", "B", "C"]))
    parts = [
        family_features("rfm", tiny, cutoff=CUTOFF, config=CONFIG),
        family_features("purchase_windows", tiny, cutoff=CUTOFF, config=CONFIG),
        family_features("purchase_gaps", tiny, cutoff=CUTOFF, config=CONFIG),
        family_features("engagement", tiny, cutoff=CUTOFF, config=CONFIG),
        family_features("attributes", tiny, cutoff=CUTOFF, config=CONFIG),
        family_features("btyd", tiny, cutoff=CUTOFF, config=CONFIG, btyd=PARAMS),
    ]
    assert_frame_equal(got, pd.concat(parts, axis=1))


# --------------------------------------------------------------------------------------------------
# time


def test_leakage_rows_after_the_cutoff_change_nothing(tiny):
    before = build_features(tiny, cutoff=CUTOFF, config=CONFIG, btyd=PARAMS)
    future = pd.Timestamp(CUTOFF) + pd.Timedelta(days=1)  # the first instant that is not history
    transactions = pd.concat(
        [tiny.transactions, frame([("A", future, 99.0), ("B", future, -50.0), ("Z", future, 5.0)], ["customer_id", "timestamp", "amount"])],
        ignore_index=True,
    )
    events = pd.concat(
        [tiny.events, frame([("C", future, "session"), ("A", future, "cancel")], ["customer_id", "timestamp", "event_type"])],
        ignore_index=True,
    )
    new_customer = pd.DataFrame(
        {
            "customer_id": pd.array(["Z"], dtype=STR),
            "acquired_at": [future],
            "channel": pd.array(["tv"], dtype=STR),
            "acquisition_cost": [1.0],
            "referred_by": pd.array(["A"], dtype=STR),
            "region": pd.array(["west"], dtype=STR),
            "age": [50],
        }
    )
    customers = pd.concat([tiny.customers, new_customer], ignore_index=True)
    after = build_features(Tables(transactions, events, customers), cutoff=CUTOFF, config=CONFIG, btyd=PARAMS)
    assert_frame_equal(before, after)


@pytest.fixture(scope="module")
def book():
    return generate(1_500, seed=3, start="2022-01-01", end="2023-12-31")


def test_leakage_with_fitted_btyd_on_a_synthetic_book(book):
    cutoff = pd.Timestamp("2023-03-31")
    config = FeatureConfig(covariates=("region", "age"), categorical_covariates=("region",))
    full = book.tables
    end = cutoff + pd.Timedelta(days=1)
    history = Tables(
        full.transactions[full.transactions["timestamp"] < end],
        full.events[full.events["timestamp"] < end],
        full.customers[full.customers["acquired_at"] < end],
    )
    # btyd=None: the population fit must not see the future either.
    assert_frame_equal(
        build_features(history, cutoff=cutoff, config=config), build_features(full, cutoff=cutoff, config=config)
    )
    assert fit_btyd(history, cutoff=cutoff, config=config) == fit_btyd(full, cutoff=cutoff, config=config)


def test_a_customer_s_features_do_not_depend_on_the_batch(book):
    config = FeatureConfig()
    params = fit_btyd(book.tables, cutoff="2023-06-30", config=config)
    everyone = build_features(book.tables, cutoff="2023-06-30", config=config, btyd=params)
    chosen = everyone.index[[0, 7, 100, 501]]
    t = book.tables
    batch = Tables(
        t.transactions[t.transactions["customer_id"].isin(chosen)].iloc[::-1],  # row order does not matter
        t.events[t.events["customer_id"].isin(chosen)],
        t.customers[t.customers["customer_id"].isin(chosen)],
    )
    got = build_features(batch, cutoff="2023-06-30", config=config, btyd=params)
    assert_frame_equal(got, everyone.loc[chosen], check_exact=False, rtol=1e-12)


def test_feature_blocks_are_the_rows_of_the_whole_book(book):
    config = FeatureConfig(covariates=("region", "age"), categorical_covariates=("region",))
    everyone = build_features(book.tables, cutoff="2023-06-30", config=config)  # BTYD fitted on the whole book
    blocks = list(feature_blocks(book.tables, cutoff="2023-06-30", config=config, block_customers=7))
    assert len(blocks) == -(-len(everyone) // 7) > 100
    assert max(len(b) for b in blocks) == 7
    # To the last bit, BTYD columns included: the parameters are the whole book's, not a block's.
    assert_frame_equal(pd.concat(blocks), everyone, check_exact=True)


def test_cutoff_forms():
    want = dt.date(2024, 1, 31)
    for value in ("2024-01-31", dt.date(2024, 1, 31), pd.Timestamp("2024-01-31"), dt.datetime(2024, 1, 31), np.datetime64("2024-01-31")):
        assert parse_cutoff(value) == want
    for bad in ("2024-01-31 12:00", "not a date", None):
        with pytest.raises(ValueError, match="cutoff"):
            parse_cutoff(bad)


def test_cutoff_before_every_purchase_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="no customer has a purchase.*first purchase is on 2023-02-05"):
        build_features(tiny, cutoff="2023-01-01", config=CONFIG, btyd=PARAMS)


def test_refund_only_history_is_not_a_customer(tiny):
    got = build_features(tiny, cutoff=CUTOFF, config=CONFIG, btyd=PARAMS)
    assert "D" not in got.index and "E" not in got.index


# --------------------------------------------------------------------------------------------------
# schema


def test_schema_declares_each_family_and_identifies_the_feature_set():
    specs = feature_schema(CONFIG)
    assert {s.family for s in specs} == set(FAMILIES)
    assert all(s.description for s in specs)
    assert feature_set_id(CONFIG) == feature_set_id(FeatureConfig(**CONFIG.model_dump()))
    assert feature_set_id(CONFIG) != feature_set_id(FeatureConfig())
    assert feature_set_id(FeatureConfig()) != feature_set_id(FeatureConfig(btyd_horizon_days=91))
    assert feature_set_id(FeatureConfig()).startswith("fs")


def test_schema_rejects_clashing_or_invalid_settings():
    with pytest.raises(ValueError, match="'channel'"):
        feature_schema(FeatureConfig(covariates=("channel",)))
    with pytest.raises(ValueError, match="categorical_covariates"):
        feature_schema(FeatureConfig(categorical_covariates=("region",)))
    with pytest.raises(ValueError, match="windows_days"):
        feature_schema(FeatureConfig(windows_days=(0, 30)))


def test_btyd_params_round_trip_and_unit_check(tiny):
    assert BTYDParams.model_validate(PARAMS.model_dump()) == PARAMS
    with pytest.raises(ValueError, match="time_unit_days"):
        build_features(tiny, cutoff=CUTOFF, config=FeatureConfig(btyd_time_unit_days=1.0), btyd=PARAMS)


# --------------------------------------------------------------------------------------------------
# CDNOW


@pytest.fixture(scope="module")
def cdnow(cdnow_dir) -> Tables:
    from features.io import load_tables

    return load_tables(cdnow_dir).tables


def test_cdnow_population_and_schema(cdnow):
    got = build_features(cdnow, cutoff="1997-12-31")
    assert len(got) == 23_570
    assert str(got.index.dtype) == "str" and got.index.name == "customer_id"
    assert got.index[0] == "00001" and got.index.is_unique and got.index.is_monotonic_increasing
    check_frame(got, feature_schema(FeatureConfig()))
    # Hand check of customer 00002: two purchases on 1997-01-12 make one purchase day.
    row = got.loc["00002"]
    assert (row["frequency"], row["purchase_count"], row["recency_days"]) == (0, 2, 353)
    assert row["total_spend"] == pytest.approx(89.0)


def test_cdnow_btyd_fit_reproduces_the_reference_parameters(cdnow):
    # lifetimes 0.11.3 on the CDNOW master file, 39-week calibration (cutoff 1997-09-30), weeks.
    params = fit_btyd(cdnow, cutoff="1997-09-30", config=FeatureConfig())
    got = [params.bgnbd.r, params.bgnbd.alpha, params.bgnbd.a, params.bgnbd.b]
    np.testing.assert_allclose(got, [0.252, 4.789, 0.723, 2.161], rtol=0.01)
    # The features' BTYD quantities are those of the baseline module on the same history.
    summary = bt.summary_from_transactions(cdnow.transactions, cutoff="1997-09-30")
    x, tx, T, m = (summary[c].to_numpy() for c in ("frequency", "recency", "T", "monetary_value"))
    got = family_features("btyd", cdnow, cutoff="1997-09-30", btyd=params)
    assert got.index.equals(summary.index)
    np.testing.assert_allclose(got["btyd_p_alive"], bt.bgnbd_probability_alive(params.bgnbd, x, tx, T), rtol=1e-12)
    np.testing.assert_allclose(
        got["btyd_expected_order_value"], bt.gamma_gamma_expected_value(params.gamma_gamma, x, m), rtol=1e-9
    )


# --------------------------------------------------------------------------------------------------
# the finite rule: a number column promises a number unless it declares allow_nan


def test_assemble_refuses_nan_where_a_number_is_promised_and_inf_anywhere():
    ids = index(["a", "b", "c"])
    promised = FeatureSpec("total", "float64", "spend (currency units)", "test")
    optional = FeatureSpec("gap", "float64", "mean gap (days); NaN with one purchase day", "test", allow_nan=True)
    frame = assemble(ids, (promised, optional), {"total": [1.0, 2.0, 3.0], "gap": [np.nan, 4.0, np.nan]})
    assert frame["gap"].isna().tolist() == [True, False, True]

    with pytest.raises(ValueError) as info:
        assemble(ids, (promised,), {"total": [1.0, np.nan, np.inf]})
    message = str(info.value)
    assert message == (
        "test column 'total': rule 'finite' (a finite number for every customer): 2 of 3 customer(s) "
        "break it, first: b (nan), c (inf)"
    )
    with pytest.raises(ValueError, match=r"'gap': rule 'finite' \(NaN allowed, infinity never\): 1 of 3 .* a \(-inf\)"):
        assemble(ids, (optional,), {"gap": [-np.inf, np.nan, 1.0]})
    # An int64 column from float values: NaN would otherwise become -9223372036854775808.
    count = FeatureSpec("days", "int64", "days", "test")
    with pytest.raises(ValueError, match=r"'days': rule 'finite'.*first: c \(nan\)"):
        assemble(ids, (count,), {"days": np.array([1.0, 2.0, np.nan])})
    assert assemble(ids, (count,), {"days": np.array([1.0, 2.0, 3.0])})["days"].tolist() == [1, 2, 3]


def test_allow_nan_is_for_float_columns_only():
    with pytest.raises(ValueError, match="allow_nan applies to float64 columns, not int64"):
        FeatureSpec("days", "int64", "days", "test", allow_nan=True)


def test_which_feature_columns_may_be_nan():
    allowed = {s.name for s in feature_schema(CONFIG) if s.allow_nan}
    # The BTYD quantities are defined for any history: a NaN there is a numerical failure.
    assert not {s.name for s in FAMILIES["btyd"].schema(CONFIG)} & allowed
    assert {"gap_mean_days", "refund_share", "acquisition_cost", "session_days_since_last", "age"} <= allowed
    assert not {"total_spend", "monetary_value", "spend_30d", "purchase_rate_per_day"} & allowed
    # Every column that may be NaN says when, in its description.
    assert all("NaN" in s.description for s in feature_schema(CONFIG) if s.allow_nan)


def test_build_features_names_the_column_and_customers_of_a_non_finite_btyd_value(tiny, monkeypatch):
    btyd_family = FAMILIES["btyd"]
    computed = btyd_family.columns

    def with_a_nan(h, config, params):
        out = computed(h, config, params)
        out["btyd_p_alive"] = np.where(np.asarray(h.ids) == "B", np.nan, out["btyd_p_alive"])
        return out

    monkeypatch.setattr(btyd_family, "columns", with_a_nan)
    with pytest.raises(ValueError, match=r"btyd column 'btyd_p_alive': rule 'finite' .*: 1 of 3 customer\(s\) break it, first: B \(nan\)"):
        build_features(tiny, cutoff=CUTOFF, config=CONFIG, btyd=PARAMS)


def test_spend_if_active_of_a_lapsed_frequent_buyer_is_at_least_one_order():
    """Weekly orders of 40 for 30 weeks, then six months of silence: P(alive) ~ 1e-8, but a window
    with a purchase still holds about the spend of an active weekly buyer (it was 0.13 when spend
    given a purchase was E[spend] / max(1 - P(no purchase), 1e-3))."""
    cutoff = pd.Timestamp(CUTOFF)
    start = cutoff - pd.Timedelta(weeks=30 + 26)
    tx = pd.DataFrame(
        {
            "customer_id": pd.array(["W"] * 30, dtype="str"),
            "timestamp": [start + pd.Timedelta(weeks=w) for w in range(30)],
            "amount": 40.0,
        }
    )
    got = family_features("btyd", Tables(tx), cutoff=CUTOFF, config=CONFIG, btyd=PARAMS).iloc[0]
    assert got["btyd_p_alive"] < 1e-3
    assert got["btyd_expected_spend"] < 1.0
    assert got["btyd_spend_if_active"] >= 40.0
    # Given alive, the posterior purchase rate is Gamma(r + x, alpha + T): (r + 29) / (alpha + T) per
    # week over 26 weeks, at ~40 an order; spend given a purchase is at least that much.
    weeks = got["btyd_spend_if_active"] / got["btyd_expected_order_value"]
    x, T = 29.0, (cutoff - start).days / 7
    assert weeks >= (PARAMS.bgnbd.r + x) / (PARAMS.bgnbd.alpha + T) * 26 * 0.5
