"""The CLV service in process: answers, validation, startup checks, and agreement with batch scoring.

The champion is trained once per test run on a small synthetic book, in an MLflow store of its own
(other test modules train into the session store and may move its ``champion`` alias): the
session fixture ``champion_store`` of ``tests/conftest.py`` (:func:`build_champion_store`), which
``tests/test_http.py`` and others use too.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import gc
import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from serving import api_models as A
from serving import segments as SG
from serving.service import environ

N_CUSTOMERS = 1000
#: A small, fast training run: the tests check serving, not model quality.
TRAINING = dict(
    horizon_days=91,
    n_cutoffs=3,
    step_days=30,
    early_stopping_rounds=10,
    training__churn_params__num_boost_round=60,
    training__spend_params__num_boost_round=60,
)
SEED = 11
BOOK_START, BOOK_END = "2022-01-01", "2024-06-30"
AS_OF = "2024-06-30"


@dataclass(frozen=True)
class ChampionStore:
    """A trained champion and the data around it."""

    root: Path
    tracking_uri: str
    book_dir: Path  # the synthetic book as contract tables (Parquet)
    new_customer_clv: Path  # new_customer_clv.csv for POST /acquisition_budget
    scores: Path  # batch scores of the book as of AS_OF (clvcast score)


def build_champion_store(root: Path) -> ChampionStore:
    """Train and register a champion on a small synthetic book, in the empty directory ``root``."""
    from features.synthetic import generate, write_book
    from serving.finance import new_customer_clv
    from serving.scoring import score
    from training.config import load_config
    from training.pipeline import train
    from training.registry import load_champion

    uri = f"sqlite:///{root / 'mlflow.db'}"
    book = generate(N_CUSTOMERS, seed=SEED, start=BOOK_START, end=BOOK_END)
    book_dir = root / "book"
    write_book(book, book_dir)
    config = load_config(**TRAINING)
    with environ(MLFLOW_TRACKING_URI=uri):
        train(book.tables, config=config, promote="force")
        scored = score(book_dir, cutoff=AS_OF, out=root / "scores.parquet", champion=load_champion())
    # As `clvcast budget` writes it: the values and the model versions behind them.
    new_customer_clv(scored.frame, max_age_days=180).assign(
        churn_model_version=scored.run.churn_model_version, spend_model_version=scored.run.spend_model_version
    ).to_csv(root / "new_customer_clv.csv")
    return champion_store_at(root)


def champion_store_at(root: Path) -> ChampionStore:
    """The champion store :func:`build_champion_store` made in ``root``."""
    return ChampionStore(
        root=root, tracking_uri=f"sqlite:///{root / 'mlflow.db'}", book_dir=root / "book",
        new_customer_clv=root / "new_customer_clv.csv", scores=root / "scores.parquet",
    )  # fmt: skip


def copy_champion_store(store: ChampionStore, root: Path) -> ChampionStore:
    """``store`` with its MLflow database copied into the empty directory ``root``; the rest shared.

    Registrations in the copy (the reload test registers a pair) stay in it. The copy's runs keep
    their artifacts where ``store`` logged them (MLflow stores absolute locations), which nothing
    here writes to; nor to the book, the scores or the new-customer CLV.
    """
    import sqlite3

    source_db = store.tracking_uri.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(source_db)) as source, contextlib.closing(
        sqlite3.connect(root / "mlflow.db")
    ) as target:
        source.backup(target)  # a consistent copy, whatever the journal mode
    return dataclasses.replace(store, root=root, tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


@functools.cache
def empty_store() -> str:
    """Tracking URI of a store with no registered models (created once: a new store takes seconds)."""
    from training.registry import champion_versions, check_registry

    root = Path(tempfile.mkdtemp(prefix="clvcast-empty-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with environ(MLFLOW_TRACKING_URI=uri):
        check_registry(create=True)  # reads never create a store
        assert champion_versions() is None
    return uri


def request_body(tables, customer_ids, as_of: str = AS_OF) -> dict:
    """A ``POST /clv`` body with the history of ``customer_ids`` up to the end of ``as_of``."""
    end = pd.Timestamp(as_of) + pd.Timedelta(days=1)

    def rows(frame, columns):
        if frame is None:
            return {}
        frame = frame.loc[frame["timestamp"] < end]
        return {
            cid: [
                {c: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for c, v in zip(columns, values)}
                for values in group[list(columns)].itertuples(index=False)
            ]
            for cid, group in frame.groupby("customer_id")
        }

    tx = rows(tables.transactions, ("timestamp", "amount"))
    ev = rows(tables.events, ("timestamp", "event_type"))
    attrs = tables.customers.set_index("customer_id")
    customers = []
    for cid in customer_ids:
        attributes = {}
        for name, value in attrs.loc[cid].items():
            if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
                continue
            if isinstance(value, pd.Timestamp):
                value = value.isoformat()
            elif isinstance(value, np.generic):
                value = value.item()
            attributes[name] = value
        customers.append(
            {"customer_id": cid, "transactions": tx[cid], "events": ev.get(cid, []), "attributes": attributes}
        )
    return {"customers": customers, "as_of": as_of}


@pytest.fixture(scope="module")
def store(champion_store) -> ChampionStore:
    return champion_store


@pytest.fixture(scope="module")
def tables(store):
    from features.io import load_tables

    return load_tables(store.book_dir).tables


@pytest.fixture(scope="module")
def service(store):
    from serving.service import ClvService

    with environ(
        MLFLOW_TRACKING_URI=store.tracking_uri,
        CLVCAST_NEW_CUSTOMER_CLV=str(store.new_customer_clv),
        CLVCAST_SCORES=str(store.scores),
    ):
        svc = ClvService()
    yield svc
    gc.unfreeze()


@pytest.fixture(scope="module")
def active_ids(tables) -> list[str]:
    """Customers with a purchase in the last year before AS_OF, in a fixed order."""
    tx = tables.transactions
    recent = tx.loc[tx["timestamp"] >= pd.Timestamp(AS_OF) - pd.Timedelta(days=365), "customer_id"]
    return sorted(recent.unique())


# --------------------------------------------------------------------------- answers


def test_model_info_names_versions_and_metrics(service):
    info = service.model()
    champion = service.champion
    assert info.model_versions.churn == champion.churn_version
    assert info.model_versions.spend == champion.spend_version
    assert info.model_versions.feature_set == champion.feature_set_id
    assert info.model_names == {"churn": "clvcast-churn", "spend": "clvcast-spend"}
    assert info.trained_at and info.training_cutoff
    assert "clvcast" in info.holdout_metrics and "btyd" in info.holdout_metrics
    assert info.limits["customers_per_request"] == A.MAX_CUSTOMERS
    json.dumps(info.model_dump(mode="json"), allow_nan=False)  # what FastAPI sends is strict JSON


def test_clv_answers_every_customer_in_request_order(service, tables, active_ids):
    ids = active_ids[5:17][::-1]
    answer = service.clv(A.ClvRequest.model_validate(request_body(tables, ids)))
    assert [c.customer_id for c in answer.customers] == ids
    assert answer.horizon_days == service.champion.horizon_days
    assert answer.model_versions.churn == service.champion.churn_version
    for c in answer.customers:
        assert 0.0 <= c.churn_probability <= 1.0
        assert c.expected_spend == pytest.approx((1 - c.churn_probability) * c.spend_if_active)
        assert math.isfinite(c.clv) and math.isfinite(c.expected_lifetime_days)
        assert 0 < c.expected_lifetime_days <= service.clv_config.lifetime_horizons * answer.horizon_days
        assert c.segment.rfm_segment in set(SG.RFM_SEGMENTS)
        assert len(c.drivers.churn) == 3 and len(c.drivers.spend) == 3
        assert abs(c.drivers.churn[0].contribution) >= abs(c.drivers.churn[-1].contribution)


def test_clv_agrees_with_batch_scoring(service, store, tables, active_ids, tmp_path):
    from serving.scores import read_scores
    from serving.scoring import score
    from serving.segments import SegmentReference

    batch = score(
        store.book_dir, cutoff=AS_OF, out=tmp_path / "scores.parquet", champion=service.champion, clv=service.clv_config
    ).frame
    ids = active_ids[:30]
    answer = service.clv(A.ClvRequest.model_validate(request_body(tables, ids)))
    # Batch tiers are relative to the scored base, and so are the service's (CLVCAST_SCORES).
    assert answer.segment_basis == "scored population"
    assert service.reference == SegmentReference.from_scores(batch)
    online = pd.DataFrame(
        [
            {**c.model_dump(exclude={"segment", "drivers"}), **c.segment.model_dump(), "drivers": c.drivers.model_dump()}
            for c in answer.customers
        ]
    ).set_index("customer_id")
    offline = batch.set_index("customer_id").loc[ids]
    for column in A.CustomerClv.FLOAT_FIELDS:
        np.testing.assert_allclose(online[column], offline[column], rtol=1e-9, atol=1e-9, err_msg=column)
    assert online["clv_tier"].tolist() == offline["clv_tier"].tolist()
    assert online["rfm_segment"].tolist() == offline["rfm_segment"].tolist()
    for cid in ids:
        for model in ("churn", "spend"):
            got = online.at[cid, "drivers"][model]
            want = offline.at[cid, "drivers"][model]
            assert [d["feature"] for d in got] == [d["feature"] for d in want]
            np.testing.assert_allclose(
                [d["contribution"] for d in got], [d["contribution"] for d in want], rtol=1e-9, atol=1e-12
            )

    # The CSV form of the same scores reads back to the same numbers.
    score(store.book_dir, cutoff=AS_OF, out=tmp_path / "scores.csv", champion=service.champion, clv=service.clv_config)
    from_csv = read_scores(tmp_path / "scores.csv").frame.set_index("customer_id").loc[ids]
    for column in A.CustomerClv.FLOAT_FIELDS:
        np.testing.assert_allclose(from_csv[column], offline[column], rtol=1e-12, err_msg=column)
    assert from_csv["drivers"].tolist() == read_scores(tmp_path / "scores.parquet").frame.set_index("customer_id").loc[ids, "drivers"].tolist()


def test_without_batch_scores_segments_are_relative_to_the_request(service, tables, active_ids):
    saved = service.reference, service.segment_basis
    service.reference, service.segment_basis = None, "this request"
    try:
        answer = service.clv(A.ClvRequest.model_validate(request_body(tables, active_ids[:10])))
    finally:
        service.reference, service.segment_basis = saved
    assert answer.segment_basis == "this request"
    from serving.segments import clv_tier

    tiers = [c.segment.clv_tier for c in answer.customers]
    assert tiers == list(clv_tier([c.clv for c in answer.customers]))  # tiers among these ten customers


def test_drivers_can_be_switched_off(service, tables, active_ids):
    body = request_body(tables, active_ids[:4])
    full = service.clv(A.ClvRequest.model_validate(body))
    lean = service.clv(A.ClvRequest.model_validate({**body, "drivers": 0}))
    assert all(c.drivers.churn == [] and c.drivers.spend == [] for c in lean.customers)
    assert [c.clv for c in lean.customers] == [c.clv for c in full.customers]
    five = service.clv(A.ClvRequest.model_validate({**body, "drivers": 5}))
    assert all(len(c.drivers.churn) == 5 for c in five.customers)


def test_more_recent_purchase_means_lower_churn(service, tables, active_ids):
    """The same history scored later (no purchase since) looks more like churn."""
    cid = active_ids[0]
    now = service.clv(A.ClvRequest.model_validate(request_body(tables, [cid]))).customers[0]
    later_body = request_body(tables, [cid])
    later_body["as_of"] = "2025-06-30"
    later = service.clv(A.ClvRequest.model_validate(later_body)).customers[0]
    assert later.recency_days == pytest.approx(now.recency_days + 365)
    assert later.churn_probability > now.churn_probability


def test_unknown_event_types_and_extra_attributes_are_scored(service):
    body = {
        "as_of": "2024-06-30",
        "customers": [
            {
                "customer_id": "00042",
                "transactions": [
                    {"timestamp": "2024-01-05", "amount": 30.0},
                    {"timestamp": "2024-03-01T12:00:00+02:00", "amount": 0.0},
                    {"timestamp": "2024-03-09", "amount": -10.0},
                ],
                "events": [{"timestamp": "2024-06-01", "event_type": "webinar"}],
                "attributes": {"channel": "a channel never seen", "shoe_size": 44, "region": None},
            }
        ],
    }
    (c,) = service.clv(A.ClvRequest.model_validate(body)).customers
    assert c.customer_id == "00042" and 0 <= c.churn_probability <= 1 and math.isfinite(c.clv)


def test_acquisition_budget(service):
    table = service.new_customer_clv
    known = str(table.index[0])
    answer = service.acquisition_budget(
        A.BudgetRequest.model_validate(
            {"channels": [{"channel": known, "cac": 10.0}, {"channel": "billboards", "cac": 0.0}], "target_ltv_cac": 2}
        )
    )
    first, second = answer.channels
    assert first.channel == known and first.basis == "channel"
    assert first.new_customer_clv == pytest.approx(table.loc[known, "new_customer_clv"])
    assert first.ltv_cac == pytest.approx(first.new_customer_clv / 10.0)
    assert first.max_allowable_cac == pytest.approx(max(first.new_customer_clv / 2, 0.0))
    # A channel without a new-customer CLV is unknown: nothing borrowed, no recommendation.
    assert second.basis == "unknown" and second.recommendation == "unknown"
    assert (second.new_customer_clv, second.ltv_cac, second.max_allowable_cac) == (None, None, None)
    zero = service.acquisition_budget(A.BudgetRequest.model_validate({"channels": [{"channel": known, "cac": 0}]}))
    (free,) = zero.channels  # CAC 0: no ratio; a channel worth something grows
    assert free.ltv_cac is None and free.recommendation == ("grow" if free.new_customer_clv > 0 else "cut")
    assert answer.model_dump_json()  # JSON-safe
    # The file names the models it was written from; other ones than the service's are said.
    assert answer.warning is None and table["churn_model_version"].iloc[0] == answer.model_versions.churn
    stale = table.assign(churn_model_version="999")
    service.new_customer_clv, kept = stale, service.new_customer_clv
    try:
        again = service.acquisition_budget(A.BudgetRequest.model_validate({"channels": [{"channel": known, "cac": 10}]}))
    finally:
        service.new_customer_clv = kept
    assert "clvcast-churn v999" in again.warning and f"serves v{answer.model_versions.churn}" in again.warning
    assert again.channels[0].new_customer_clv == pytest.approx(first.new_customer_clv)  # still answered

    saved, service.new_customer_clv = service.new_customer_clv, None
    try:
        response = service.acquisition_budget(A.BudgetRequest.model_validate({"channels": [{"channel": known, "cac": 1}]}))
    finally:
        service.new_customer_clv = saved
    assert response.status_code == 503 and b"CLVCAST_NEW_CUSTOMER_CLV" in response.body


# --------------------------------------------------------------------------- validation


def _customer(cid="1", ts="2024-01-01", amount=10.0, **extra):
    return {"customer_id": cid, "transactions": [{"timestamp": ts, "amount": amount}], **extra}


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({"customers": [_customer()]}, ("as_of",), "missing"),
        ({"as_of": "2024-01-31", "customers": [{"customer_id": "1"}]}, ("customers", 0, "transactions"), "missing"),
        ({"as_of": "2024-01-31", "customers": [_customer(amount=float("nan"))]},
         ("customers", 0, "transactions", 0, "amount"), "finite_number"),
        ({"as_of": "2024-01-31", "customers": [_customer(amount=float("inf"))]},
         ("customers", 0, "transactions", 0, "amount"), "finite_number"),
        ({"as_of": "2024-01-31", "customers": [_customer(ts="2024-02-01T00:00:00")]},
         ("customers", 0, "transactions", 0, "timestamp"), "timestamp_after_as_of"),
        ({"as_of": "2024-01-31", "customers": [_customer(ts="2024-02-01T00:30:00+01:00")]},
         None, None),  # 23:30 UTC on the as_of day: allowed
        ({"as_of": "2024-01-31", "customers": [_customer(events=[{"timestamp": "2024-03-01", "event_type": "session"}])]},
         ("customers", 0, "events", 0, "timestamp"), "timestamp_after_as_of"),
        ({"as_of": "2024-01-31", "customers": [_customer(attributes={"acquired_at": "2024-02-02"})]},
         ("customers", 0, "attributes", "acquired_at"), "acquired_after_as_of"),
        ({"as_of": "2024-01-31", "customers": [_customer("7"), _customer("7")]},
         ("customers", 1, "customer_id"), "duplicate_customer_id"),
        ({"as_of": "2024-01-31", "customers": [_customer(" ")]}, ("customers", 0, "customer_id"), "blank_string"),
        ({"as_of": "2024-01-31", "customers": []}, ("customers",), "too_short"),
        ({"as_of": "2024-01-31", "customers": [_customer(str(i)) for i in range(A.MAX_CUSTOMERS + 1)]},
         ("customers",), "too_long"),
        ({"as_of": "2024-01-31", "customers": [{"customer_id": "1", "transactions": [
            {"timestamp": "2024-01-01", "amount": 1.0}] * (A.MAX_ROWS_PER_CUSTOMER + 1)}]},
         ("customers", 0, "transactions"), "too_long"),
        ({"as_of": "2024-01-31", "customers": [
            {"customer_id": str(i), "transactions": [{"timestamp": "2024-01-01", "amount": 1.0}] * 1000}
            for i in range(A.MAX_ROWS_PER_REQUEST // 1000 + 1)]},
         ("customers",), "too_many_history_rows"),
        ({"as_of": "2024-01-31", "customers": [_customer(attributes={"acquisition_cost": -1})]},
         ("customers", 0, "attributes", "acquisition_cost"), "greater_than_equal"),
        ({"as_of": "1800-01-01", "customers": [_customer()]}, ("as_of",), "greater_than_equal"),
        ({"as_of": "2024-01-31", "customers": [_customer(ts="1850-01-01")]},
         ("customers", 0, "transactions", 0, "timestamp"), "timestamp_too_early"),
        ({"as_of": "2024-01-31", "customers": [_customer(surprise=1)]}, ("customers", 0, "surprise"), "extra_forbidden"),
    ],
)  # fmt: skip
def test_request_validation_names_path_and_rule(body, loc, kind):
    if loc is None:
        A.ClvRequest.model_validate(body)
        return
    with pytest.raises(ValidationError) as info:
        A.ClvRequest.model_validate(body)
    errors = info.value.errors()
    assert any(tuple(e["loc"]) == loc and e["type"] == kind for e in errors), errors
    assert all(e["msg"] for e in errors)


def test_request_becomes_contract_tables():
    body = {
        "as_of": "2024-01-31",
        "customers": [
            _customer("00001", ts="2024-01-02T10:00:00+02:00", attributes={"channel": "search", "region": "north"}),
            _customer("2", events=[{"timestamp": "2024-01-03", "event_type": "session"}]),
        ],
    }
    t = A.ClvRequest.model_validate(body).to_tables()
    assert t.transactions["customer_id"].tolist() == ["00001", "2"]
    assert t.transactions["timestamp"].iloc[0] == pd.Timestamp("2024-01-02 08:00:00")  # UTC, naive
    assert str(t.transactions["timestamp"].dtype) == "datetime64[ns]"
    assert t.events["customer_id"].tolist() == ["2"]
    assert t.customers.set_index("customer_id").loc["00001", "channel"] == "search"
    assert pd.isna(t.customers.set_index("customer_id").loc["2", "region"])


def test_budget_request_validation():
    with pytest.raises(ValidationError) as info:
        A.BudgetRequest.model_validate({"channels": [{"channel": "a", "cac": 1}, {"channel": "a", "cac": float("nan")}]})
    kinds = {(tuple(e["loc"]), e["type"]) for e in info.value.errors()}
    assert (("channels", 1, "cac"), "finite_number") in kinds
    with pytest.raises(ValidationError) as info:
        A.BudgetRequest.model_validate({"channels": [{"channel": "a", "cac": 1}, {"channel": "a", "cac": 2}]})
    assert info.value.errors()[0]["loc"] == ("channels", 1, "channel")


# --------------------------------------------------------------------------- startup


def test_service_refuses_to_start_without_a_champion():
    from serving.service import ClvService
    from training.registry import ChampionError

    uri = empty_store()
    for start in (ClvService.inner.check_startup, ClvService):
        with environ(MLFLOW_TRACKING_URI=uri), pytest.raises(ChampionError) as info:
            start()
        message = str(info.value)
        assert "'clvcast-churn'" in message and uri in message
