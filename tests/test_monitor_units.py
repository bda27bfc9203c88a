"""Monitoring without models: the history stores, the drift tests and their thresholds, segment moves.

Hand-made scorings of four customers; every expected number is worked out in the test.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features.btyd import BGNBDParams, BTYDParams, GammaGammaParams
from serving.monitor import drift as D
from serving.monitor.history import HISTORY_KEY, append_scores, read_history
from serving.monitor.trends import ratio_difference_test, segment_moves, tier_migration
from serving.scores import SCORE_COLUMNS, Scores, ScoringRun
from training.config import ClvConfig, MonitorConfig
from training.reference import categorical_reference, numeric_reference

AS_OF = dt.date(2024, 3, 31)


def _scores(as_of=AS_OF, versions=("1", "1"), clv=(10.0, 20.0, 30.0, 40.0), extra=None) -> Scores:
    n = len(clv)
    frame = pd.DataFrame(
        {
            "customer_id": pd.array([f"c{i}" for i in range(n)], dtype="str"),
            "as_of": as_of,
            "horizon_days": 91,
            "churn_probability": np.linspace(0.1, 0.4, n),
            "spend_if_active": np.full(n, 50.0),
            "p_alive": np.full(n, 0.9),
            "expected_spend": np.full(n, 40.0),
            "expected_spend_lower": np.zeros(n),
            "expected_spend_upper": np.full(n, 90.0),
            "clv_horizon": np.full(n, 12.0),
            "clv": np.asarray(clv, dtype=float),
            "clv_lower": np.asarray(clv, dtype=float) / 2,
            "clv_upper": np.asarray(clv, dtype=float) * 2,
            "expected_spend_curve": [np.array([40.0, 30.0])] * n,
            "expected_margin_curve": [np.array([12.0, 9.0])] * n,
            "expected_lifetime_days": np.full(n, 300.0),
            "clv_tier": ["bottom 50%"] * (n - 1) + ["top 10%"],
            "rfm_segment": ["new"] * n,
            "recency_days": np.arange(n, dtype=float),
            "frequency": np.zeros(n),
            "monetary_value": np.full(n, 25.0),
            "channel": pd.array(["ads", None, "mail", "ads"][:n], dtype="str"),
            "acquired_at": pd.to_datetime(["2024-01-01"] * n),
            "acquisition_cost": [5.0, np.nan, 1.0, 5.0][:n],
            "drivers": [{"churn": [{"feature": "x", "value": 1, "contribution": 0.5}], "spend": []}] * n,
            "churn_model_version": versions[0],
            "spend_model_version": versions[1],
            "feature_set_id": "fs-test",
            **(extra or {}),
        }
    )
    run = ScoringRun(
        as_of=as_of, horizon_days=91, churn_model_version=versions[0], spend_model_version=versions[1], run_id="r1",
        feature_set_id="fs-test", clv=ClvConfig(),
        btyd=BTYDParams(bgnbd=BGNBDParams(r=1, alpha=2, a=1, b=2), gamma_gamma=GammaGammaParams(p=2, q=3, v=10),
             time_unit_days=7.0),
    )  # fmt: skip
    return Scores(frame=frame, run=run)


def _targets(tmp_path):
    return [str(tmp_path / "history"), f"sqlite:///{tmp_path / 'history.db'}", f"duckdb:///{tmp_path / 'history.duckdb'}"]


# --------------------------------------------------------------------------- history


@pytest.mark.parametrize("kind", [0, 1, 2], ids=["parquet", "sqlite", "duckdb"])
def test_history_replaces_a_scoring_of_the_same_day_and_models(tmp_path, kind):
    target = _targets(tmp_path)[kind]
    first = append_scores(_scores(), target, scored_at=dt.datetime(2024, 4, 1, 8))
    assert (first.rows, first.replaced) == (4, 0)
    again = append_scores(_scores(clv=(11.0, 21.0, 31.0, 41.0)), target, scored_at=dt.datetime(2024, 4, 1, 9))
    assert (again.rows, again.replaced) == (4, 4)
    history = read_history(target)
    assert len(history.rows) == 4 and len(history.scorings) == 1
    assert history.rows["clv"].tolist() == [11.0, 21.0, 31.0, 41.0]  # the second scoring, once
    # Another model pair the same day is another scoring, kept beside it; the later one is "the" scoring.
    append_scores(_scores(versions=("2", "2"), clv=(1.0, 2.0, 3.0, 4.0)), target, scored_at=dt.datetime(2024, 4, 1, 10))
    append_scores(_scores(as_of=dt.date(2024, 4, 30)), target, scored_at=dt.datetime(2024, 5, 1))
    history = read_history(target)
    assert len(history.rows) == 12
    keys = [tuple(r) for r in history.scorings[list(HISTORY_KEY)].itertuples(index=False)]
    assert keys == [(AS_OF, "1", "1"), (AS_OF, "2", "2"), (dt.date(2024, 4, 30), "1", "1")]
    latest = history.latest_per_day()
    assert list(zip(latest["as_of"], latest["churn_model_version"])) == [(AS_OF, "2"), (dt.date(2024, 4, 30), "1")]
    assert history.scoring((AS_OF, "2", "2"))["clv"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert len(read_history(target, until=AS_OF).scorings) == 2


@pytest.mark.parametrize("kind", [0, 1, 2], ids=["parquet", "sqlite", "duckdb"])
def test_history_keeps_the_scores_columns_and_run_and_carries_new_columns(tmp_path, kind):
    target = _targets(tmp_path)[kind]
    append_scores(_scores(), target, scored_at=dt.datetime(2024, 4, 1))
    # A score column the contract may gain later (say referral_credit) is stored without a code
    # change; the older scoring reads back with it missing.
    later = _scores(as_of=dt.date(2024, 4, 30), extra={"referral_credit": [0.9, 0.8, 0.7, 0.6]})
    append_scores(later, target, scored_at=dt.datetime(2024, 5, 1))
    history = read_history(target)
    rows = history.rows
    assert list(rows.columns[: len(SCORE_COLUMNS)]) == list(SCORE_COLUMNS)
    assert {"referral_credit", "run_id", "scored_at", "scoring_run"} <= set(rows.columns)
    old, new = rows[rows["as_of"] == AS_OF], rows[rows["as_of"] == dt.date(2024, 4, 30)]
    assert old["referral_credit"].isna().all() and new["referral_credit"].tolist() == [0.9, 0.8, 0.7, 0.6]
    assert old["customer_id"].tolist() == ["c0", "c1", "c2", "c3"]
    assert old["channel"].isna().tolist() == [False, True, False, False]
    assert np.isnan(old["acquisition_cost"].iloc[1]) and old["acquisition_cost"].iloc[0] == 5.0
    assert old["acquired_at"].iloc[0] == pd.Timestamp("2024-01-01")
    assert old["drivers"].iloc[0] == '{"churn":[{"feature":"x","value":1,"contribution":0.5}],"spend":[]}'
    # The spend and margin curves (arrays per customer) are JSON lists in every store.
    assert old["expected_spend_curve"].iloc[0] == "[40.0,30.0]" and old["expected_margin_curve"].iloc[3] == "[12.0,9.0]"
    assert old["p_alive"].tolist() == [0.9] * 4 and old["clv_upper"].tolist() == [20.0, 40.0, 60.0, 80.0]
    run = history.scorings["scoring_run"].iloc[0]
    assert run == _scores().run
    assert history.scorings["scored_at"].iloc[0] == pd.Timestamp("2024-04-01")


def test_history_refuses_rows_that_disagree_with_their_run(tmp_path):
    bad = _scores()
    bad.frame.loc[2, "as_of"] = dt.date(2024, 3, 30)
    with pytest.raises(ValueError, match="'as_of' must be 2024-03-31 on every row.*1 row"):
        append_scores(bad, tmp_path / "h")
    with pytest.raises(FileNotFoundError, match="history not found"):
        read_history(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="history database not found"):
        read_history(f"sqlite:///{tmp_path / 'missing.db'}")


def test_history_in_postgresql(postgres):
    url = postgres.create_database("history")
    append_scores(_scores(), url)
    assert append_scores(_scores(clv=(5.0, 6.0, 7.0, 8.0)), url).replaced == 4
    append_scores(_scores(as_of=dt.date(2024, 4, 30), extra={"referral_credit": [0.9, 0.8, 0.7, 0.6]}), url)
    history = read_history(url)
    assert len(history.rows) == 8 and len(history.scorings) == 2
    assert history.scoring((AS_OF, "1", "1"))["clv"].tolist() == [5.0, 6.0, 7.0, 8.0]
    assert history.rows["referral_credit"].isna().sum() == 4
    assert history.rows["expected_spend_curve"].tolist() == ["[40.0,30.0]"] * 8


# --------------------------------------------------------------------------- drift


def test_psi_known_values():
    assert D.psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5) = 0.25 ln 3
    assert D.psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * np.log(3))
    # An empty bin counts as PSI_FLOOR: (0.5 - 1e-4) ln(0.5 / 1e-4) + (0.5 - 1) ln(0.5 / 1)
    assert D.psi([0.0, 1.0], [0.5, 0.5]) == pytest.approx((0.5 - 1e-4) * np.log(0.5 / 1e-4) + 0.5 * np.log(2))
    with pytest.raises(ValueError):
        D.psi([0.5, 0.5], [1.0])


@pytest.mark.parametrize(
    "psi_value, ks, pvalue, status",
    [
        (0.05, 0.05, 1e-9, "ok"),
        (0.10, 0.05, 1e-9, "warn"),  # PSI at the warn threshold
        (0.25, 0.05, 1e-9, "alert"),  # PSI at the alert threshold
        (0.05, 0.125, 1e-9, "warn"),  # KS D at the warn threshold
        (0.05, 0.20, 1e-9, "alert"),
        (0.05, 0.30, 0.2, "ok"),  # a large D that is not significant does not count
    ],
)
def test_drift_status_thresholds(psi_value, ks, pvalue, status):
    assert D.drift_status(psi_value, ks, pvalue, MonitorConfig()) == status


def test_drift_of_a_normal_mean_shift_matches_the_threshold_derivation():
    # A shift of delta sd: PSI ~ delta^2, D = 2 Phi(delta / 2) - 1 (0.197 for delta = 0.5).
    rng = np.random.default_rng(3)
    reference = numeric_reference(rng.normal(size=20_000), bins=10)
    same = D.numeric_drift(rng.normal(size=5_000), reference)
    shifted = D.numeric_drift(rng.normal(0.5, 1.0, size=5_000), reference)
    assert same["psi"] < 0.01 and same["ks_statistic"] < 0.03 and same["ks_pvalue"] > 0.01
    assert shifted["psi"] == pytest.approx(0.25, abs=0.04)
    assert shifted["ks_statistic"] == pytest.approx(0.197, abs=0.02) and shifted["ks_pvalue"] < 1e-10
    assert D.drift_status(same["psi"], same["ks_statistic"], same["ks_pvalue"], MonitorConfig()) == "ok"


def test_ks_compares_ties_as_the_empirical_cdfs_do():
    # 60 % zeros: the same distribution must not show the mass at 0 as a gap.
    rng = np.random.default_rng(4)
    draw = lambda n: np.r_[np.zeros(int(0.6 * n)), rng.poisson(2, n - int(0.6 * n)) + 1]  # noqa: E731
    reference = numeric_reference(draw(10_000), bins=10)
    same = D.numeric_drift(draw(5_000), reference)
    assert same["ks_statistic"] <= 0.02 and same["psi"] < 0.01
    # 50 % zeros instead of 60 %: the CDFs differ by 0.1 at 0.
    fewer_zeros = D.numeric_drift(np.r_[np.zeros(2_500), rng.poisson(2, 2_500) + 1], reference)
    assert fewer_zeros["ks_statistic"] == pytest.approx(0.1, abs=0.02)


def test_categorical_drift_counts_unseen_levels_and_missing_values():
    reference = categorical_reference(["a"] * 50 + ["b"] * 50)
    result = D.categorical_drift(["a"] * 50 + ["b"] * 25 + ["c"] * 25, reference)
    # bins a, b, unseen, missing: e = (0.5, 0.5, 0, 0), a = (0.5, 0.25, 0.25, 0)
    expected = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.25 - 1e-4) * np.log(0.25 / 1e-4)
    assert result["psi"] == pytest.approx(expected) and result["ks_statistic"] is None


def test_feature_drift_alerts_only_for_features_the_models_use():
    rng = np.random.default_rng(5)
    references = {"used": numeric_reference(rng.normal(size=5_000), bins=10),
                  "unused": numeric_reference(rng.normal(size=5_000), bins=10)}  # fmt: skip
    now = pd.DataFrame({"used": rng.normal(1.0, 1.0, 5_000), "unused": rng.normal(1.0, 1.0, 5_000)})
    table = D.drift_table(now, references, config=MonitorConfig(), importance={"used": 0.2, "unused": 0.01})
    rows = table.set_index("column")
    assert rows.loc["used", "status"] == rows.loc["unused", "status"] == "alert"
    assert rows.loc["used", "alerts"] and not rows.loc["unused", "alerts"]
    # Without importance (predictions) every alert status alerts.
    assert D.drift_table(now, references, config=MonitorConfig())["alerts"].all()


# --------------------------------------------------------------------------- trends


def test_ratio_difference_test_known_values():
    # Segment: y = (1, 3), x = (2, 2): R = 1, var = ((1-2)^2 + (3-2)^2) / 16 = 0.125.
    # Rest: y = (2, 2), x = (4, 4): R = 0.5, var = 0.
    r_in, r_rest, difference, z = ratio_difference_test([1, 3, 2, 2], [2, 2, 4, 4], [True, True, False, False])
    assert (r_in, r_rest, difference) == (1.0, 0.5, 0.5)
    assert z == pytest.approx(0.5 / np.sqrt(0.125))


def test_segment_moves_and_migration():
    config = MonitorConfig(segment_min_customers=1, segment_z_alert=1.0, segment_metrics=("clv",))
    before = _scores().frame
    after = _scores(as_of=dt.date(2024, 4, 30), clv=(5.0, 20.0, 30.0, 20.0)).frame
    moves = segment_moves(before, after, config=config).set_index("segment")
    # ads: c0 10 -> 5, c3 40 -> 20: change -25 / 50 = -50 %; the rest (c1, c2) did not move.
    assert moves.loc["ads", "change"] == pytest.approx(-0.5) and moves.loc["ads", "rest_change"] == 0.0
    assert moves.loc["ads", "customers"] == 2
    # The rest has no variance and ads' residuals are (-5 + 0.5 * 10, -20 + 0.5 * 40) = 0: z undefined, no alert.
    assert np.isnan(moves.loc["ads", "z"]) and not moves.loc["ads", "alerts"]
    after.loc[after["customer_id"] == "c4", "clv"] = 0.0
    migration = tier_migration(before, after.assign(clv_tier=["top 10%", "bottom 50%", "bottom 50%", "bottom 50%"]))
    assert migration.loc["top 10%", "bottom 50%"] == 1 and migration.loc["bottom 50%", "top 10%"] == 1
    assert migration.loc["bottom 50%", "bottom 50%"] == 2 and migration.to_numpy().sum() == 4


# --------------------------------------------------------------------------- what the monitor reads of the tables


def test_monitor_inputs_of_parts_holding_whole_customers_combine_into_the_books():
    """The monitor's reductions, per part of the book (a cluster's partitions), make the book's.

    a and b bought by AS_OF; z bought first after it (no row at AS_OF, a row nowhere else); the
    data end on 2024-05-20, or on 2024-04-30 with the tables cut there.
    """
    from features.config import FeatureConfig
    from features.contract import Tables
    from serving.monitor.inputs import FeatureRequest, MonitorInputs, MonitorRequest, OutcomeRequest, monitor_inputs
    from serving.monitor.performance import realised_outcomes

    tx = pd.DataFrame({
        "customer_id": pd.array(["a", "a", "b", "a", "b", "z"], dtype="str"),
        "timestamp": pd.to_datetime(["2024-01-05 00:00", "2024-03-01 10:00", "2024-02-10 00:00", "2024-04-15 00:00",
                                     "2024-05-20 18:00", "2024-04-30 09:00"]),
        "amount": [30.0, 20.0, 50.0, 12.5, 40.0, 8.0],
    })  # fmt: skip
    tables = Tables(tx)
    config = FeatureConfig()
    columns = ("recency_days", "frequency", "monetary_value", "no_such_column")  # in the schema's order
    request = MonitorRequest(
        features=FeatureRequest(cutoff=AS_OF, config=config, btyd=_scores().run.btyd, columns=columns),
        outcomes=(OutcomeRequest(AS_OF, 30), OutcomeRequest(AS_OF, 60)),
    )
    whole = monitor_inputs(tables, request)
    assert whole.data_end == dt.date(2024, 5, 20)
    assert list(whole.features.index) == ["a", "b"] and list(whole.features.columns) == list(columns[:3])
    # Over (AS_OF, AS_OF + 30]: a spent 12.5, b nothing; within 60 days b bought too.
    thirty, sixty = whole.outcomes[OutcomeRequest(AS_OF, 30)], whole.outcomes[OutcomeRequest(AS_OF, 60)]
    assert thirty.to_dict("list") == {"actual_spend": [12.5, 0.0], "churned": [0.0, 1.0]}
    assert sixty.to_dict("list") == {"actual_spend": [12.5, 40.0], "churned": [0.0, 0.0]}
    scored = realised_outcomes(thirty, customers=["b", "unknown", "a"])
    assert scored["actual_spend"].tolist()[::2] == [0.0, 12.5] and scored.loc["unknown"].isna().all()
    assert monitor_inputs(tables, MonitorRequest(until=dt.date(2024, 4, 30))).data_end == dt.date(2024, 4, 30)

    def part(ids):
        return monitor_inputs(Tables(tx[tx["customer_id"].isin(ids).to_numpy()].reset_index(drop=True)), request)

    late = part(["z"])  # nobody with a purchase by AS_OF: no rows, the right columns
    assert len(late.features) == 0 and list(late.features.columns) == list(columns[:3])
    assert all(len(f) == 0 for f in late.outcomes.values()) and late.data_end == dt.date(2024, 4, 30)
    got = MonitorInputs.combine([part(["b"]), late, part(["a"])])
    assert got.data_end == whole.data_end
    pd.testing.assert_frame_equal(got.features, whole.features, check_exact=True)
    for key, frame in whole.outcomes.items():
        pd.testing.assert_frame_equal(got.outcomes[key], frame, check_exact=True)
    with pytest.raises(ValueError, match="parts of other requests"):
        MonitorInputs.combine([whole, monitor_inputs(tables, MonitorRequest())])
    with pytest.raises(ValueError, match="no parts"):
        MonitorInputs.combine([])
    with pytest.raises(ValueError, match="churn_definition"):
        monitor_inputs(Tables(tx.iloc[:0]), MonitorRequest(outcomes=(OutcomeRequest(AS_OF, 30, "cancelled"),)))
