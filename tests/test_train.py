"""The training pipeline end to end on a small synthetic book: time discipline, determinism,
direction, the backtest JSON, bad input, and the configuration."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.contract import Tables
from training.config import Config, ConfigError, load_config
from training.pipeline import (
    BACKTEST_METRICS,
    MODELS,
    TrainingInputError,
    backtest,
    evaluate,
    format_backtest,
)
from training.training_set import plan_origins

SMALL = dict(
    horizon_days=91,
    n_cutoffs=3,
    step_days=30,
    early_stopping_rounds=10,
    training__churn_params__num_boost_round=40,
    training__spend_params__num_boost_round=40,
)
CUTOFF = "2022-09-30"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def book():
    from features.synthetic import generate

    return generate(1500, seed=5, start="2021-01-01", end="2022-12-31")


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(**SMALL)


@pytest.fixture(scope="module")
def evaluation(book, config):
    return evaluate(book.tables, cutoff=CUTOFF, config=config)


def _with_rows_after(tables: Tables, start: str) -> Tables:
    """The same tables plus large purchases and events dated from ``start`` on."""
    tx = tables.transactions
    ids = tx["customer_id"].drop_duplicates().iloc[:300]
    extra = pd.DataFrame(
        {"customer_id": ids.to_numpy(), "timestamp": pd.Timestamp(start) + pd.Timedelta(hours=12), "amount": 5000.0}
    ).astype(tx[["customer_id", "timestamp", "amount"]].dtypes.to_dict())
    return Tables(
        transactions=pd.concat([tx, extra], ignore_index=True),
        events=tables.events,
        customers=tables.customers,
    )


# --------------------------------------------------------------------------- time and determinism


def test_same_data_and_config_give_identical_metrics_and_future_rows_change_nothing(book, config, evaluation):
    again = evaluate(book.tables, cutoff=CUTOFF, config=config)
    assert again.metrics == evaluation.metrics
    # Rows after the holdout window cannot reach training, features or labels.
    window_end = pd.Timestamp(CUTOFF) + pd.Timedelta(days=config.training.horizon_days + 1)
    later = evaluate(_with_rows_after(book.tables, str(window_end.date())), cutoff=CUTOFF, config=config)
    assert later.metrics == evaluation.metrics


def test_training_windows_end_on_or_before_the_cutoff(evaluation, config):
    H = pd.Timedelta(days=config.training.horizon_days)
    cutoff = pd.Timestamp(CUTOFF)
    assert max(evaluation.plan.origins) + H == cutoff
    assert all(o + H <= cutoff for o in evaluation.plan.origins)
    assert len(evaluation.plan.origins) == config.training.n_cutoffs


def test_holdout_labels_match_the_raw_transactions(book, evaluation, config):
    tx = book.tables.transactions
    cutoff_end = pd.Timestamp(CUTOFF) + pd.Timedelta(days=1)
    window = tx[(tx["timestamp"] >= cutoff_end) & (tx["timestamp"] < cutoff_end + pd.Timedelta(days=config.training.horizon_days))]
    known = tx.loc[tx["timestamp"] < cutoff_end, "customer_id"].unique()
    expected = window.loc[window["customer_id"].isin(known), "amount"].sum()
    assert evaluation.actual_spend.sum() == pytest.approx(expected)
    assert evaluation.customers == len(known)


def test_model_is_useful_on_synthetic_data(evaluation):
    ours, naive = evaluation.metrics["clvcast"], evaluation.metrics["naive"]
    assert ours["churn_auc"] > 0.75
    assert ours["gini"] > 0.5
    assert ours["mae"] < naive["mae"]


def test_more_recent_purchase_means_lower_churn_probability(evaluation, config):
    """Two customers with the same purchases except that one bought again recently."""
    from features.build import build_features

    cutoff = pd.Timestamp(CUTOFF)
    days = {"recent": [-400, -250, -120, -10], "lapsed": [-400, -250, -120, -100]}
    tx = pd.DataFrame(
        [
            {"customer_id": cid, "timestamp": cutoff + pd.Timedelta(days=d, hours=10), "amount": 60.0}
            for cid, offsets in days.items()
            for d in offsets
        ]
    )
    tx["customer_id"] = tx["customer_id"].astype("string")
    features = build_features(Tables(transactions=tx), cutoff=cutoff.date(), config=config.features, btyd=evaluation.btyd)
    p = evaluation.models.predict(features)["churn_probability"]
    assert p["recent"] < p["lapsed"]


# --------------------------------------------------------------------------- backtest


def test_backtest_json_shape(book, config):
    import mlflow

    result = backtest(book.tables, cutoff=CUTOFF, horizon_days=91, config=config)
    json.loads(json.dumps(result))  # JSON-ready
    assert isinstance(result["customers"], int) and result["customers"] > 0
    assert result["total_actual"] > 0
    assert set(result["models"]) == set(MODELS) == {"clvcast", "btyd", "pareto", "naive"}
    for name, values in result["models"].items():
        # clvcast also reports the share of customers inside their 80 % interval.
        extra = {"interval_coverage"} if name == "clvcast" else set()
        assert set(values) == set(BACKTEST_METRICS) | extra, name
        assert all(isinstance(values[k], float) for k in set(BACKTEST_METRICS) | extra), name
    assert 0.0 < result["models"]["clvcast"]["interval_coverage"] <= 1.0
    assert result["label_horizon_days"] == 91
    run = mlflow.get_run(result["run_id"])
    # Backtests have their own experiment, apart from the trainings whose models are registered.
    assert mlflow.get_experiment(run.info.experiment_id).name == "clvcast-backtest"
    assert run.info.run_name == f"backtest {CUTOFF}, 91 days" and run.data.tags["clvcast.kind"] == "backtest"
    text = format_backtest(result)
    assert "clvcast" in text and "btyd" in text and "pareto" in text and "MAE" in text


# --------------------------------------------------------------------------- bad input


def _bad_inputs(book):
    tables = book.tables
    empty = Tables(transactions=tables.transactions.iloc[:0])
    return [
        (empty, dict(cutoff=CUTOFF), "no transactions"),
        (tables, dict(cutoff="2019-01-01"), "before the first purchase"),
        (tables, dict(cutoff="2023-06-30"), "on or after the last transaction"),
        (tables, dict(cutoff=CUTOFF, config=load_config(**{**SMALL, "horizon_days": 600})), "horizon_days=600"),
        (tables, dict(config=load_config(**{**SMALL, "horizon_days": 800})), "horizon_days=800"),
    ]


@pytest.mark.parametrize("case", range(5))
def test_bad_input_is_one_line_and_changes_nothing_in_the_registry(book, config, case):
    from training import registry
    from training.pipeline import train

    tables, kwargs, message = _bad_inputs(book)[case]
    kwargs.setdefault("config", config)
    before = registry.registry_snapshot()
    with pytest.raises(TrainingInputError, match=message) as err:
        train(tables, **kwargs)
    assert "\n" not in str(err.value)
    assert registry.registry_snapshot() == before


def test_default_cutoff_holds_out_the_final_window(book, config):
    plan = plan_origins(book.tables, cutoff=None, training=config.training)
    last_day = book.tables.transactions["timestamp"].max().normalize()
    assert plan.cutoff == last_day - pd.Timedelta(days=91)


def test_origins_need_min_history_days_after_the_first_purchase(book):
    first = book.tables.transactions["timestamp"].min().normalize()
    # Origins every 30 days back from 2021-09-01 - 91 days: the earliest lie within weeks of the start.
    config = load_config(**{**SMALL, "n_cutoffs": 6})
    every = plan_origins(book.tables, cutoff="2021-09-01", training=config.training).origins
    later = plan_origins(
        book.tables, cutoff="2021-09-01", training=load_config(**{**SMALL, "n_cutoffs": 6, "min_history_days": 45}).training
    ).origins
    assert later == tuple(o for o in every if o >= first + pd.Timedelta(days=45))
    assert 0 < len(later) < len(every)


# --------------------------------------------------------------------------- config


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  horizon_days: 90\n  churn_params: {num_leaves: 7}\nclv:\n  gross_margin: 0.4\n")
    cfg = load_config(path, horizon_days=None, target_ltv_cac=4, training__spend_params__learning_rate=0.1)
    assert cfg.training.horizon_days == 90  # None = flag not given
    assert cfg.training.churn_params.num_leaves == 7
    assert cfg.training.spend_params.learning_rate == 0.1
    assert cfg.clv.gross_margin == 0.4 and cfg.clv.target_ltv_cac == 4.0
    flat = cfg.to_flat_dict()
    assert flat["training.churn_params.num_leaves"] == 7 and flat["features.windows_days"] == [30, 90, 180, 365]
    assert load_config(horizon_days=90, training__churn_params__num_leaves=7, target_ltv_cac=4,
                       gross_margin=0.4, training__spend_params__learning_rate=0.1) == cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(horizon_days=0), "^config training.horizon_days: Input should be greater than or equal to 1 \\(got 0\\)$"),
        (dict(horizn_days=5), "unknown config override 'horizn_days'"),
        (dict(spend_objective="poisson"), "training.spend_objective: Input should be 'tweedie'"),
        (dict(validation_cutoffs=5, n_cutoffs=5), "validation_cutoffs"),
        (dict(gross_margin=1.5), "clv.gross_margin"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(**overrides)


def test_config_file_with_unknown_key(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"training": {"horizon": 90}}))
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(path)


# --------------------------------------------------------------------------- published values


def test_cdnow_baselines_match_the_published_table(cdnow_dir):
    """BG/NBD + Gamma-Gamma and the naive rate on CDNOW, cutoff 1997-12-31, 182 days
    (shared/data/cdnow/README.md)."""
    from features.io import load_tables
    from training.labels import build_labels
    from training import metrics as M
    from training.baselines import baseline_forecasts

    tables = load_tables(cdnow_dir).tables
    labels = build_labels(tables, cutoff="1997-12-31", horizon_days=182)
    assert len(labels) == 23_570
    assert labels["spend"].sum() == pytest.approx(476_154, abs=1)
    forecasts = baseline_forecasts(tables.transactions, cutoff="1997-12-31", horizon_days=182, customers=labels.index)
    actual, churned = labels["spend"].to_numpy(), labels["churn"].to_numpy()

    btyd = forecasts["btyd"]
    spend = btyd.expected_spend.to_numpy()
    assert M.mae(actual, spend) == pytest.approx(21.18, abs=0.01)
    assert M.rmse(actual, spend) == pytest.approx(56.03, abs=0.01)
    assert M.normalized_gini(actual, spend) == pytest.approx(0.726, abs=0.001)
    assert M.spearman(actual, spend) == pytest.approx(0.435, abs=0.001)
    assert M.decile_mape(actual, spend) == pytest.approx(0.221, abs=0.001)
    assert M.churn_auc(churned, btyd.churn_score.to_numpy()) == pytest.approx(0.799, abs=0.001)
    assert spend.sum() == pytest.approx(461_698, rel=1e-4)

    naive = forecasts["naive"].expected_spend.to_numpy()
    assert M.mae(actual, naive) == pytest.approx(40.02, abs=0.01)
    assert M.normalized_gini(actual, naive) == pytest.approx(0.737, abs=0.001)
    assert M.spearman(actual, naive) == pytest.approx(0.405, abs=0.001)
    assert M.decile_mape(actual, naive) == pytest.approx(1.829, abs=0.001)


def test_origins_with_a_degenerate_btyd_fit_are_dropped_and_reported(caplog):
    from training.training_set import drop_degenerate_origins as _drop_degenerate_origins

    origins = pd.to_datetime(["1997-01-02", "1997-01-16", "1997-01-30", "1997-02-13"])
    training = pd.DataFrame(
        {
            "cutoff": origins.repeat(3),
            "btyd_p_no_purchase": [0.5] * 12,
            # origin 0: 2 of 3 rows non-finite (a degenerate fit); origin 2: 1 of 3 (one customer)
            "btyd_spend_if_active": [10.0, float("nan"), float("inf")] + [12.0] * 3 + [float("inf")] + [8.0] * 5,
            "btyd_expected_order_value": [5.0] * 12,
        }
    )
    with caplog.at_level("WARNING", logger="training.pipeline"):
        kept = _drop_degenerate_origins(training, needed=2)
    assert list(kept["cutoff"].unique()) == list(origins[1:])
    assert len(kept) == 8 and np.isfinite(kept["btyd_spend_if_active"]).all()
    assert "degenerate at training origin(s) 1997-01-02 (" in caplog.text
    assert "training on the other 3 origins" in caplog.text
    assert "1 training rows with a non-finite BG/NBD forecast dropped (of 12)" in caplog.text
    with pytest.raises(TrainingInputError, match="leaves 3 origin"):
        _drop_degenerate_origins(training, needed=4)


def test_origins_whose_btyd_fit_is_unidentified_are_dropped_whole(caplog):
    from features.btyd import BGNBDParams, BTYDParams, GammaGammaParams
    from training.training_set import drop_degenerate_origins as _drop_degenerate_origins
    from training.training_set import unidentified_fit

    def fit(r=0.243, a=0.793, b=2.426):
        return BTYDParams(bgnbd=BGNBDParams(r=r, alpha=4.414, a=a, b=b), gamma_gamma=GammaGammaParams(p=6.25, q=3.74, v=15.44),
                          time_unit_days=7.0)  # fmt: skip

    # CDNOW's whole-history fit (Fader, Hardie and Lee 2005) is identified; the early-1997 fits are not.
    assert unidentified_fit(fit()) is None
    assert unidentified_fit(fit(a=2.93e-05, b=3.32e4)) == "a = 2.9e-05"
    assert unidentified_fit(fit(r=6.03e7)) == "r = 6e+07"
    assert unidentified_fit(fit(a=1.27e-08, b=6.86e-08)) == "a = 1.3e-08"
    assert unidentified_fit(fit(a=1e-3, b=1e3)) is None  # the range's ends are inside
    origins = pd.to_datetime(["1997-01-20", "1997-02-17", "1997-03-03"])
    training = pd.DataFrame({"cutoff": origins.repeat(2), "btyd_p_no_purchase": [0.5] * 6,
                             "btyd_spend_if_active": [10.0] * 6, "btyd_expected_order_value": [5.0] * 6})  # fmt: skip
    params = {o.date(): fit() for o in origins} | {origins[0].date(): fit(a=2.93e-05, b=3.32e4)}
    with caplog.at_level("WARNING"):
        kept = _drop_degenerate_origins(training, needed=2, btyd=params)
    assert list(kept["cutoff"].unique()) == list(origins[1:]) and len(kept) == 4
    assert "BG/NBD unidentified at training origin(s) 1997-01-20 (a = 2.9e-05)" in caplog.text
    # Without the fits only the non-finite forecasts count: every row stays.
    assert len(_drop_degenerate_origins(training, needed=2)) == 6


def test_config_from_environment_between_file_and_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  horizon_days: 90\n  n_cutoffs: 5\n")
    env = {"CLVCAST_CONFIG": str(path), "CLVCAST_TRAINING__HORIZON_DAYS": "120", "CLVCAST_CLV__GROSS_MARGIN": "0.25"}
    cfg = load_config(environ=env)
    assert (cfg.training.horizon_days, cfg.training.n_cutoffs, cfg.clv.gross_margin) == (120, 5, 0.25)
    assert cfg.features.btyd_horizon_days == 120  # follows the label horizon wherever it was set
    assert load_config(environ=env, horizon_days=60).training.horizon_days == 60  # flags win
    with pytest.raises(ConfigError, match="clv.gross_margin"):
        load_config(environ={"CLVCAST_CLV__GROSS_MARGIN": "2"})
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(environ={"CLVCAST_TRAINING__HORIZN": "5"})


# --------------------------------------------------------------------------- a sample of the customers


def test_train_on_a_sample_of_customers_learns_from_it_only_and_logs_it(book, caplog):
    """``training.sample_customers``: the holdout is the sample's; the run's tags and params say so."""
    import logging

    import mlflow

    from features.sample import sample_customers
    from training.pipeline import train

    config = load_config(**SMALL, sample_customers=600)
    expected, sample = sample_customers(book.tables, 600)
    with caplog.at_level(logging.INFO, logger="training"):
        result = train(book.tables, cutoff=CUTOFF, config=config, promote="never")
    message = f"training on a sample of {sample.sampled:,} of 1,500 customers (training.sample_customers = 600)"
    assert message in caplog.messages
    assert 0 < result.customers <= sample.sampled < 1500
    run = mlflow.get_run(result.run_id)
    tags, params = run.data.tags, run.data.params
    assert (tags["sample_customers"], tags["customers_in_book"], tags["customers_sampled"]) == ("600", "1500", str(sample.sampled))
    assert params["training.sample_customers"] == "600"
    # The run's data is the sample: its fingerprint counts the sample's buyers.
    assert tags["data.customers"] == str(expected.transactions["customer_id"].nunique())
    assert tags["data.transactions_rows"] == str(len(expected.transactions))
