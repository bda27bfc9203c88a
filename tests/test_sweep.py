"""Degenerate books end in finite numbers or one clear error, and customers who never bought are counted.

The sweep runs ``clvcast features``, training (:func:`training.pipeline.evaluate`: the fit and the
holdout, everything of ``clvcast train`` but the MLflow logging, which does not depend on the
book), ``clvcast score``, ``clvcast budget`` and ``POST /clv`` (the service's Python API) over the
books of ``tests/degenerate_books.py``. A clear error is exit code 1 with a one-line cause that is
not an unexpected exception (the CLI adds "rerun with --debug" to those), or HTTP 4xx (a
``ValidationError`` with the path of the field). One small champion is trained for the module, in
an MLflow store of its own, with the fastest settings the training allows.

The ``score_population`` case of ``../shared/cases`` (issue 12, point 3) is checked against its
README here too, with the same champion.
"""

from __future__ import annotations

import gc
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from degenerate_books import BOOKS, CUTOFF, write
from pydantic import ValidationError

from features.io import load_tables
from serving import api_models as A
from serving.cli import main
from serving.finance.outputs import NOTES
from serving.scores import read_scores, write_scores
from serving.service import environ

pytestmark = pytest.mark.slow

#: The fastest training the pipeline allows: two origins, ten trees per model, no refit.
FAST = dict(
    horizon_days=91,
    n_cutoffs=2,
    step_days=30,
    early_stopping_rounds=5,
    training__churn_params__num_boost_round=10,
    training__spend_params__num_boost_round=10,
    training__refit=False,
)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A directory with ``mlflow.db``, holding a champion trained on a small synthetic book."""
    from features.synthetic import generate
    from training.config import load_config
    from training.pipeline import train

    root = tmp_path_factory.mktemp("sweep")
    with environ(MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}"):
        book = generate(200, seed=3, start="2023-01-01", end=CUTOFF)
        train(book.tables, config=load_config(**FAST), promote="force")
    return root


@pytest.fixture()
def store(work):
    with environ(MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}"):
        yield work


def _cli(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--quiet", *map(str, args)])
    return code, capsys.readouterr().err.strip()


def _ok_or_clear_error(code: int, err: str, what: str) -> bool:
    """True on success; on failure assert that the failure is one clear line."""
    if code == 0:
        return True
    lines = [line for line in err.splitlines() if not line.startswith(("[clvcast] warning", "  "))]
    assert code == 1, f"{what}: exit code {code}: {err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{what}: not one clear line: {err}"
    assert "rerun with --debug" not in err and "Traceback" not in err, f"{what}: unexpected exception: {err}"
    return False


def _finite(frame: pd.DataFrame, what: str, *, nan_ok=(), inf_ok=()) -> None:
    """Every number of ``frame`` finite, except NaN in ``nan_ok`` and +inf in ``inf_ok`` columns."""
    for name in frame.select_dtypes("number").columns:
        values = frame[name].to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if name in nan_ok:
            bad &= ~np.isnan(values)
        if name in inf_ok:
            bad &= ~(values == np.inf)
        assert not bad.any(), f"{what}: column {name!r} not finite in {int(bad.sum())} row(s): {values[bad][:3]}"


def _body(tables, as_of: str = CUTOFF) -> dict:
    """A ``POST /clv`` body with every customer of ``tables`` (history up to the end of ``as_of``)."""
    end = pd.Timestamp(as_of) + pd.Timedelta(days=1)
    tx = tables.transactions.loc[tables.transactions["timestamp"] < end]
    by_id = {cid: g for cid, g in tx.groupby("customer_id")}
    customers = []
    for cid in tables.customers["customer_id"]:
        rows = by_id.get(cid, tx.iloc[:0])
        customers.append(
            {
                "customer_id": cid,
                "transactions": [
                    {"timestamp": t.isoformat(), "amount": float(a)} for t, a in zip(rows["timestamp"], rows["amount"])
                ],
            }
        )
    return {"customers": customers, "as_of": as_of, "drivers": 1}


@pytest.fixture(scope="module")
def service(work):
    from serving.service import ClvService

    with environ(MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}"):
        svc = ClvService()
    yield svc
    gc.unfreeze()


@pytest.mark.parametrize("name", sorted(BOOKS))
def test_degenerate_book_ends_in_finite_numbers_or_one_clear_error(name, store, service, capsys, tmp_path):
    from training import pipeline
    from training.config import load_config
    from training.pipeline import TrainingInputError

    book = write(name, tmp_path)
    features = tmp_path / "features.csv"
    if _ok_or_clear_error(*_cli(capsys, "features", "--data", book, "--cutoff", CUTOFF, "--out", features), "features"):
        frame = pd.read_csv(features)
        _finite(frame, f"{name} features", nan_ok=frame.columns)  # no inf; NaN only where declared (FeatureSpec)

    tables = load_tables(book).tables
    try:
        ev = pipeline.evaluate(tables, cutoff=None, config=load_config(**FAST))
    except (TrainingInputError, ValueError) as exc:  # the CLI turns these into its one-line cause
        message = str(exc).strip()
        assert message and len(message.splitlines()) == 1, f"{name} train: {message}"
    else:
        numbers = {k: v for k, v in ev.metrics["clvcast"].items() if v is not None}
        assert all(math.isfinite(v) for v in numbers.values()), f"{name} train: {numbers}"

    scores = tmp_path / "scores.parquet"
    if _ok_or_clear_error(*_cli(capsys, "score", "--data", book, "--cutoff", CUTOFF, "--out", scores), "score"):
        scored = read_scores(scores)
        prospect = (scored.frame["rfm_segment"] == "prospect").to_numpy()
        _finite(scored.frame.loc[~prospect], f"{name} scores")
        _finite(scored.frame.loc[prospect], f"{name} prospects", nan_ok=("recency_days", "frequency", "monetary_value"))
        known = sum(scored.run.population[k] for k in ("buyer", "refund_only", "events_only", "no_activity"))
        assert len(scored.frame) + sum(o.customers for o in scored.run.left_out) == sum(scored.run.population.values())
        assert len(scored.frame) <= known

        out = tmp_path / "budget"
        if _ok_or_clear_error(*_cli(capsys, "budget", "--data", book, "--scores", scores, "--out", out), "budget"):
            for table in ("channels", "cohorts", "forecast", "segments", "new_customer_clv"):
                frame = pd.read_csv(out / f"{table}.csv")
                curves = [c for c in frame.columns if c.startswith(("realised_m", "predicted_m"))]
                # The CSVs hold no inf: a cell with no finite value is empty, with its reason in the
                # note column beside it (serving.finance.outputs.NOTES); the notes are text.
                for column, (note, _) in NOTES.items():
                    if column in frame:
                        empty = frame[column].isna().to_numpy()
                        assert frame.loc[empty, note].notna().all(), f"{name} {table}.csv: {column} empty without a reason"
                notes = [note for note, _ in NOTES.values() if note in frame]
                if "recommendation_note" in frame:  # a cohort too small for advice: none, the reason instead
                    empty = frame["recommendation"].isna().to_numpy()
                    assert frame.loc[empty, "recommendation_note"].notna().all(), f"{name} {table}.csv: no advice, no reason"
                    notes += ["recommendation", "recommendation_note"]  # text (read as float when all empty)
                _finite(frame.drop(columns=curves + notes), f"{name} {table}.csv", nan_ok=tuple(NOTES))
            assert pd.read_csv(out / "channels.csv")["customers"].sum() == len(tables.customers)

    try:
        answer = service.clv(A.ClvRequest.model_validate(_body(tables)))
    except ValidationError as exc:  # HTTP 400 with the path and the rule
        assert all(e["loc"] and e["msg"] for e in exc.errors()), exc
    else:
        rows = pd.DataFrame([c.model_dump(exclude={"segment", "drivers"}) for c in answer.customers])
        assert len(rows) == len(tables.customers)
        _finite(rows, f"{name} /clv", nan_ok=("recency_days", "frequency", "monetary_value"))


# --------------------------------------------------------------------------- customers who never bought


@pytest.fixture()
def population_case(cases_dir, tmp_path) -> Path:
    case = tmp_path / "score_population"
    shutil.copytree(cases_dir / "score_population", case)
    return case


def test_score_population_case_counts_every_customer_acquired_by_the_cutoff(store, population_case, capsys, tmp_path):
    # README: total CAC 125 over 5 customers; social with LTV:CAC 0 and "cut"; overall LTV:CAC =
    # (realised margin + predicted CLV of all of them) / 125.
    scores, out = tmp_path / "scores.csv", tmp_path / "budget"
    code, err = _cli(capsys, "score", "--data", population_case, "--cutoff", "2024-06-30", "--out", scores)
    assert code == 0, err
    scored = read_scores(scores)
    frame = scored.frame.set_index("customer_id")
    assert sorted(frame.index) == ["A", "B", "D", "E", "F"]
    assert set(frame.loc[["B", "D", "E"], "rfm_segment"]) == {"prospect"}
    assert scored.run.population == {
        "buyer": 2, "refund_only": 1, "events_only": 1, "no_activity": 1, "acquired_after_cutoff": 1,
        "unknown_acquisition": 0,
    }  # fmt: skip
    (left,) = scored.run.left_out
    assert (left.kind, left.customers, left.first) == ("acquired_after_cutoff", 1, ("C",))
    # Nobody in this book was ever seen converting from prospect to buyer: the prospects are worth 0.
    assert scored.run.prospects is not None and scored.run.prospects.converted == 0
    assert (frame.loc[["B", "D", "E"], "clv"] == 0).all()

    code, err = _cli(capsys, "budget", "--data", population_case, "--scores", scores, "--out", out)
    assert code == 0, err
    channels = pd.read_csv(out / "channels.csv").set_index("channel")
    assert channels["customers"].to_dict() == {"search": 3, "social": 2}
    assert channels["total_cac"].sum() == 125
    assert channels.loc["social", "ltv_cac"] == 0 and channels.loc["social", "recommendation"] == "cut"
    segments = pd.read_csv(out / "segments.csv", dtype={"customer_id": "str"})
    assert len(segments) == 5
    summary = _summary(population_case, scores)
    assert summary["customers"] == 5 and summary["total_cac"] == 125 and summary["customers_not_scored"] == 0
    assert summary["transactions_before_acquisition"] == 0
    expected = (summary["total_realised_margin"] + frame["clv"].sum()) / 125
    assert summary["overall_ltv_cac"] == pytest.approx(expected)


def _summary(data: Path, scores: Path) -> dict:
    from serving.finance import compute_budget

    return compute_budget(load_tables(data).tables, read_scores(scores)).summary


def test_budget_counts_customers_that_the_scores_left_out(store, population_case, tmp_path):
    # Scores without the prospects (an older file, or no prospect model): the budget still counts
    # every customer acquired by the cutoff, at CLV 0, and says how many.
    from serving.scores import Scores

    full = tmp_path / "scores.parquet"
    assert main(["--quiet", "score", "--data", str(population_case), "--cutoff", "2024-06-30", "--out", str(full)]) == 0
    scored = read_scores(full)
    buyers = scored.frame.loc[scored.frame["rfm_segment"] != "prospect"].reset_index(drop=True)
    only_buyers = write_scores(Scores(frame=buyers, run=scored.run), tmp_path / "buyers.parquet")
    summary = _summary(population_case, only_buyers)
    assert summary["customers"] == 5 and summary["customers_not_scored"] == 3 and summary["total_cac"] == 125


@pytest.fixture(scope="module")
def book_with_prospects(work) -> Path:
    """A synthetic book plus customers acquired before their first purchase (some never buy)."""
    from features.synthetic import generate

    book = generate(150, seed=4, start="2023-01-01", end=CUTOFF)
    tables = book.tables
    customers = tables.customers.copy()
    first = tables.transactions.groupby("customer_id")["timestamp"].min()
    # A third acquired 60 days before their first purchase: prospects at some origins, then buyers.
    late = customers["customer_id"].isin(first.index[::3])
    customers.loc[late, "acquired_at"] = customers.loc[late, "customer_id"].map(first) - pd.Timedelta(days=60)
    never = pd.DataFrame(
        {
            "customer_id": [f"P{i}" for i in range(20)],
            "acquired_at": pd.Timestamp("2024-01-15") + pd.to_timedelta(np.arange(20) * 5, unit="D"),
            "channel": "social",
        }
    )
    customers = pd.concat([customers, never], ignore_index=True)
    events = pd.DataFrame(
        {"customer_id": [f"P{i}" for i in range(0, 20, 2)], "timestamp": pd.Timestamp("2024-06-01"),
         "event_type": "session"}
    )  # fmt: skip
    events = pd.concat([tables.events, events], ignore_index=True) if tables.events is not None else events
    root = work / "prospects_book"
    root.mkdir()
    for name, frame in (("transactions", tables.transactions), ("events", events), ("customers", customers)):
        frame.to_parquet(root / f"{name}.parquet", index=False)
    return root


def test_clv_scores_prospects_with_the_population_rate(store, book_with_prospects, tmp_path):
    from serving.service import ClvService

    scores = tmp_path / "scores.parquet"
    assert main(["--quiet", "score", "--data", str(book_with_prospects), "--cutoff", CUTOFF, "--out", str(scores)]) == 0
    run = read_scores(scores).run
    assert run.prospects is not None and run.prospects.converted > 0
    body = {
        "as_of": CUTOFF,
        "customers": [
            {"customer_id": "new", "transactions": [], "events": [{"timestamp": "2024-06-20", "event_type": "session"}],
             "attributes": {"channel": "social"}},
            {"customer_id": "refund", "transactions": [{"timestamp": "2024-05-01", "amount": -20.0}]},
            {"customer_id": "nothing", "transactions": []},
            {"customer_id": "buyer", "transactions": [{"timestamp": "2024-05-01", "amount": 20.0},
                                                      {"timestamp": "2024-06-01", "amount": 30.0}]},
        ],
    }  # fmt: skip
    request = A.ClvRequest.model_validate(body)
    with environ(CLVCAST_SCORES=str(scores)):
        svc = ClvService()
    try:
        answer = {c.customer_id: c for c in svc.clv(request).customers}
    finally:
        gc.unfreeze()
    for cid in ("new", "refund", "nothing"):
        c = answer[cid]
        assert c.segment.rfm_segment == "prospect" and c.recency_days is None
        assert 0 < 1 - c.churn_probability < 1 and c.clv == pytest.approx(c.clv_horizon)
    assert answer["buyer"].segment.rfm_segment != "prospect" and answer["buyer"].recency_days == 29
    # Engaged (a recent session) converts at least as often as not engaged, in this book.
    assert answer["new"].churn_probability <= answer["refund"].churn_probability


def test_clv_without_a_prospect_model_names_each_customer_without_a_purchase(service):
    body = {
        "as_of": CUTOFF,
        "customers": [
            {"customer_id": "b", "transactions": [{"timestamp": "2024-05-01", "amount": 5.0}]},
            {"customer_id": "p", "transactions": []},
        ],
    }
    with pytest.raises(ValidationError) as info:
        service.clv(A.ClvRequest.model_validate(body))
    (error,) = info.value.errors()
    assert error["loc"] == ("customers", 1, "transactions") and error["type"] == "no_purchase"
