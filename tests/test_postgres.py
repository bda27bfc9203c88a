"""A real PostgreSQL server as data source and as MLflow's backend store.

The server is the throw-away cluster of the ``postgres`` fixture (``tests/conftest.py``): Debian's
PostgreSQL on 127.0.0.1, data in a temporary directory, one per test process.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from pandas.testing import assert_frame_equal

from features.btyd import BGNBDParams, BTYDParams, GammaGammaParams
from features.build import build_features
from features.contract import RULE_ID_NOT_WHOLE, DataValidationError
from features.io import load_tables, write_tables
from features.synthetic import generate
from serving.service import free_port
from training.config import load_config

TABLES = ("transactions", "events", "customers")
# The synthetic book as a shop's database would hold it: money as NUMERIC, purchase times with a
# time zone, an integer covariate.
BOOK_TYPES = {
    "transactions": {"customer_id": "text", "timestamp": "timestamptz", "amount": "numeric(12,2)"},
    "events": {"customer_id": "text", "timestamp": "timestamp", "event_type": "text"},
    "customers": {
        "customer_id": "varchar(16)",
        "acquired_at": "timestamp",
        "channel": "text",
        "acquisition_cost": "numeric",
        "referred_by": "text",
        "region": "text",
        "age": "int8",
    },
}
CUTOFF = "2023-06-30"
# A small, fast training run (as in tests/test_registry.py): the test checks the store, not the model.
SMALL = dict(
    horizon_days=91,
    n_cutoffs=3,
    step_days=30,
    early_stopping_rounds=10,
    training__churn_params__num_boost_round=40,
    training__spend_params__num_boost_round=40,
)


def _display(url: str) -> str:
    """The URL as load_tables names it: password hidden."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _execute(postgres, database: str, *statements: str) -> None:
    with postgres.connect(database) as con:
        for statement in statements:
            con.execute(statement)


@pytest.fixture(scope="module")
def book():
    return generate(2000, seed=7, start="2021-01-01", end="2023-12-31")


@pytest.fixture(scope="module")
def book_sources(postgres, book, tmp_path_factory) -> tuple[str, str]:
    """The same book in a PostgreSQL database and as Parquet files: (URL, directory)."""
    url = postgres.create_database("book")
    for name in TABLES:
        postgres.create_table("book", name, getattr(book.tables, name), BOOK_TYPES[name])
    directory = tmp_path_factory.mktemp("book")
    write_tables(book.tables, directory)
    return url, str(directory)


# --------------------------------------------------------------------------- the same data as files


def test_book_from_postgres_equals_the_book_from_parquet(book, book_sources):
    url, directory = book_sources
    from_db, from_files = load_tables(url), load_tables(directory)
    for name in TABLES:
        assert_frame_equal(getattr(from_db.tables, name), getattr(from_files.tables, name))
    assert from_db.report.rows_read == {name: len(getattr(book.tables, name)) for name in TABLES}
    assert from_db.report.table_sources["transactions"] == f"table transactions at {_display(url)}"


def test_features_from_postgres_equal_those_from_parquet(book_sources):
    url, directory = book_sources
    config = load_config().features
    from_db = build_features(load_tables(url).tables, cutoff=CUTOFF, config=config)
    from_files = build_features(load_tables(directory).tables, cutoff=CUTOFF, config=config)
    assert len(from_db) > 1000
    assert_frame_equal(from_db, from_files)


def test_both_url_spellings_read_the_same_tables(postgres, book_sources):
    url, _ = book_sources
    plain = postgres.url("book", driver="")
    assert plain.startswith("postgresql://") and url.startswith("postgresql+psycopg://")
    a, b = load_tables(plain).tables, load_tables(url).tables
    for name in TABLES:
        assert_frame_equal(getattr(a, name), getattr(b, name))


def test_column_types_behave_as_in_a_csv_file(postgres, tmp_path):
    """Integer ids, text ids with leading zeros, timestamptz with offsets, NUMERIC, NULLs: as from CSV."""
    postgres.create_database("types")
    _execute(
        postgres,
        "types",
        "create table transactions (customer_id int8, timestamp timestamptz, amount numeric)",
        "insert into transactions values (7, '2024-01-01 10:00:00+02', 12.345), "
        "(12345678901, '2024-01-02 23:30:00-05:00', -3), (7, '2024-01-03', 0)",
        "create table events (customer_id text, timestamp timestamp, event_type text)",
        "insert into events values ('00012', '2024-01-01 08:00:00', 'session'), ('012', '2024-01-02', 'cancel')",
        "create table customers (customer_id text, acquired_at date, channel text, acquisition_cost numeric(10, 2), "
        "referred_by int4)",
        "insert into customers values ('00012', '2023-12-31', 'search', 12.50, null), "
        "('012', null, null, null, 12)",
    )
    csv = {
        "transactions": "customer_id,timestamp,amount\n"
        "7,2024-01-01T10:00:00+02:00,12.345\n12345678901,2024-01-02T23:30:00-05:00,-3\n7,2024-01-03,0\n",
        "events": "customer_id,timestamp,event_type\n00012,2024-01-01 08:00:00,session\n012,2024-01-02,cancel\n",
        "customers": "customer_id,acquired_at,channel,acquisition_cost,referred_by\n"
        "00012,2023-12-31,search,12.50,\n012,,,,12\n",
    }
    for name, text in csv.items():
        (tmp_path / f"{name}.csv").write_text(text)

    from_db = load_tables(postgres.url("types")).tables
    from_csv = load_tables(tmp_path).tables
    for name in TABLES:
        assert_frame_equal(getattr(from_db, name), getattr(from_csv, name))

    tx, events, customers = from_db.transactions, from_db.events, from_db.customers
    assert tx["customer_id"].tolist() == ["7", "12345678901", "7"]
    assert tx["timestamp"].tolist() == [
        pd.Timestamp("2024-01-01 08:00"), pd.Timestamp("2024-01-03 04:30"), pd.Timestamp("2024-01-03")
    ]
    assert tx["amount"].dtype == "float64" and tx["amount"].tolist() == [12.345, -3.0, 0.0]
    assert events["customer_id"].tolist() == ["00012", "012"]
    assert customers["referred_by"].tolist()[1] == "12" and pd.isna(customers["referred_by"].iloc[0])
    assert customers["channel"].isna().tolist() == [False, True]
    assert np.isnan(customers["acquisition_cost"].iloc[1]) and customers["acquisition_cost"].iloc[0] == 12.5
    assert customers["acquired_at"].isna().tolist() == [False, True]


def test_numeric_and_uuid_ids_keep_their_text_through_a_view_and_a_column_map(postgres):
    postgres.create_database("ids")
    _execute(
        postgres,
        "ids",
        "create type tier as enum ('gold', 'silver')",
        "create table orders (cust numeric(20, 0), ts timestamptz, total numeric(12, 2), tier tier, score numeric)",
        "insert into orders values (12345678901234567890, '2024-01-01 00:00:00+00', 5.10, 'gold', 0.25), "
        "(42, '2024-01-02 00:00:00+00', 1, null, null)",
        # A view is read like a table.
        "create view transactions as select cust, ts as timestamp, total as amount, tier, score from orders",
        "create table events (customer_id uuid, timestamp timestamptz, event_type text)",
        "insert into events values ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-01-01 00:00:00+00', 'session')",
    )
    t = load_tables(postgres.url("ids"), column_map={"transactions": {"cust": "customer_id"}}).tables
    # A float would have printed 1.2345678901234567e+19: the id keeps every digit.
    assert t.transactions["customer_id"].tolist() == ["12345678901234567890", "42"]
    assert t.transactions["amount"].tolist() == [5.1, 1.0]
    # Extra columns: a numeric covariate stays a number, an enum becomes text.
    assert t.transactions["score"].dtype == "float64" and np.isnan(t.transactions["score"].iloc[1])
    assert t.transactions["tier"].tolist()[0] == "gold" and pd.isna(t.transactions["tier"].iloc[1])
    assert t.events["customer_id"].tolist() == ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]


def test_missing_tables(postgres):
    postgres.create_database("partial")
    url = postgres.url("partial")
    _execute(postgres, "partial", "create table orders (x int)")
    with pytest.raises(ValueError, match="no table named transactions; the database has: orders"):
        load_tables(url)
    _execute(
        postgres,
        "partial",
        "create table transactions (customer_id text, timestamp date, amount float8)",
        "insert into transactions values ('1', '2024-01-01', 1.5)",
    )
    result = load_tables(url)
    assert result.tables.events is None and result.tables.customers is None
    assert result.tables.transactions["timestamp"].tolist() == [pd.Timestamp("2024-01-01")]


def test_a_bad_row_is_named_with_table_url_column_and_row(postgres, tmp_path):
    postgres.create_database("bad")
    url = postgres.url("bad")
    _execute(
        postgres,
        "bad",
        "create table transactions (customer_id text, timestamp timestamptz, amount numeric)",
        "insert into transactions values ('1', '2024-01-01', 1), ('2', '2024-01-02', null), "
        "(' ', '2024-01-03', 'NaN'), ('4', '2024-01-04', 4)",
    )
    with pytest.raises(DataValidationError) as info:
        load_tables(url)
    source = f"table transactions at {_display(url)}"
    assert source == f"table transactions at postgresql+psycopg://clvcast:***@127.0.0.1:{postgres.port}/bad"
    found = [(v.source, v.column, v.rule, v.n_rows, [e["row"] for e in v.examples]) for v in info.value.violations]
    assert found == [
        (source, "customer_id", "null or blank", 1, [3]),
        (source, "amount", "null", 1, [2]),
        (source, "amount", "non-finite (NaN or infinite)", 1, [3]),
    ]
    lines = str(info.value).splitlines()
    first = "1 row(s) break it, first:"
    assert f"{source}: column 'amount': null: {first} {{'row': 2, 'amount': None, 'customer_id': '2'}}" in lines
    assert f"{source}: column 'customer_id': null or blank: {first} {{'row': 3, 'customer_id': ' '}}" in lines
    assert postgres.password not in str(info.value)

    result = load_tables(url, on_invalid="quarantine", quarantine_dir=tmp_path)
    assert result.tables.transactions["customer_id"].tolist() == ["1", "4"]
    assert result.report.rows_quarantined == {"transactions": 2}


def test_an_unreachable_server_is_a_connection_error_without_the_password(postgres):
    url = postgres.url("book").replace(f":{postgres.port}/", f":{free_port()}/")
    with pytest.raises(ConnectionError) as info:
        load_tables(url)
    assert str(info.value).startswith(f"{_display(url)}: cannot connect: ")
    assert "Connection refused" in str(info.value)
    assert postgres.password not in str(info.value)


# --------------------------------------------------------------------------- MLflow's backend store


@pytest.mark.slow
def test_train_promote_and_load_the_champion_with_a_postgres_store(postgres, book_sources, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from training import registry
    from training.pipeline import train

    uri = postgres.create_database("mlflow")
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv(registry.ARTIFACT_ROOT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # the default artifact root is <cwd>/mlruns/artifacts
    data_url, _ = book_sources
    try:
        result = train(data_url, config=load_config(**SMALL))
        assert result.promoted and result.reason == "no current champion"
        assert registry.champion_versions() == (result.churn_version, result.spend_version)

        champion = registry.load_champion()
        assert champion.tracking_uri == uri
        assert (champion.churn_version, champion.spend_version, champion.run_id) == (
            result.churn_version, result.spend_version, result.run_id
        )
        features = build_features(load_tables(data_url).tables, cutoff=result.cutoff, config=champion.feature_config)
        assert_frame_equal(champion.models.predict(features), result.models.predict(features))

        artifacts = tmp_path / "mlruns" / "artifacts"
        experiment = MlflowClient(uri).get_experiment_by_name(registry.EXPERIMENT)
        assert experiment.artifact_location == artifacts.as_uri()
        assert list(artifacts.rglob("serving.json"))  # the run's artifacts are where the store says
        snapshot = registry.registry_snapshot()
        assert snapshot[registry.CHURN_MODEL]["aliases"] == {registry.ALIAS: result.churn_version}
        assert snapshot[registry.SPEND_MODEL]["versions"] == {result.spend_version: "champion"}
    finally:
        mlflow.set_tracking_uri(previous)  # the fluent API's URI is process-wide


def test_artifact_root_of_a_new_experiment(tmp_path, monkeypatch):
    from training import registry

    uri = "postgresql+psycopg://user:secret@127.0.0.1:5432/mlflow"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(registry.ARTIFACT_ROOT_ENV, raising=False)
    assert registry._default_artifact_location(uri) == (tmp_path / "mlruns" / "artifacts").as_uri()
    sqlite = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    assert registry._default_artifact_location(sqlite) == (tmp_path / "store" / "artifacts").as_uri()
    assert registry._default_artifact_location("http://127.0.0.1:5000") is None  # the server decides
    monkeypatch.setenv(registry.ARTIFACT_ROOT_ENV, "elsewhere")
    for store in (uri, sqlite, "http://127.0.0.1:5000"):
        assert registry._default_artifact_location(store) == (tmp_path / "elsewhere").as_uri()
    monkeypatch.setenv(registry.ARTIFACT_ROOT_ENV, "s3://bucket/clvcast")
    assert registry._default_artifact_location(uri) == "s3://bucket/clvcast"


def test_ids_of_numeric_types_are_canonical_as_from_files(postgres):
    """float8, numeric(20,2) and int8 ids print as the same text ids that the other tables hold."""
    postgres.create_database("numeric_ids")
    url = postgres.url("numeric_ids")
    _execute(
        postgres,
        "numeric_ids",
        "create table transactions (customer_id float8, timestamp date, amount float8)",
        "insert into transactions values (100000000001, '2024-01-01', 10), (7, '2024-01-02', 20), (7, '2024-02-02', 5)",
        "create table events (customer_id numeric(20, 2), timestamp date, event_type text)",
        "insert into events values (100000000001.00, '2024-01-03', 'session'), (12.50, '2024-01-03', 'session')",
        "create table customers (customer_id text, channel text, referred_by int8)",
        "insert into customers values ('100000000001', 'search', null), ('7', 'social', 100000000001)",
    )
    result = load_tables(url)
    t = result.tables
    assert t.transactions["customer_id"].tolist() == ["100000000001", "7", "7"]
    assert t.events["customer_id"].tolist() == ["100000000001", "12.5"]  # decimals without trailing zeros
    assert t.customers["referred_by"].tolist()[1] == "100000000001"
    assert {k: (u.rows, u.first) for k, u in result.report.unmatched.items()} == {"events": (1, ("12.5",))}
    # Stored population parameters, as serving passes them: two customers are too few to fit on.
    params = BTYDParams(
        bgnbd=BGNBDParams(r=0.25, alpha=4.0, a=0.8, b=2.5),
        gamma_gamma=GammaGammaParams(p=6.0, q=4.0, v=15.0),
        time_unit_days=7.0,
    )
    features = build_features(t, cutoff="2024-12-31", btyd=params)
    assert features["channel"].tolist() == ["search", "social"]
    assert features["session_count"].tolist() == [1, 0]

    _execute(postgres, "numeric_ids", "insert into transactions values (1.5, '2024-01-04', 1)")
    with pytest.raises(DataValidationError) as info:
        load_tables(url)
    (v,) = info.value.violations
    assert (v.column, v.rule, v.examples) == ("customer_id", RULE_ID_NOT_WHOLE, [{"row": 4, "customer_id": 1.5}])
