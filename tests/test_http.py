"""The CLV service over real HTTP, on a free loopback port.

The module's server is started with :func:`serving.service.running_service` (BentoML's
``bentoml.serve``); ``clvcast serve`` is checked as a user runs it, in a process of its own. Covers
the endpoints, BentoML's health and metrics routes, invalid payloads (each a 4xx that names the
field and the rule) and a property-based fuzz of the served OpenAPI document (schemathesis) that
must find no 5xx.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pandas as pd
import pytest

from serving import api_models as A
from serving.cli import main
from serving.service import environ, free_port, running_service
from test_service import AS_OF, empty_store, request_body

STARTUP_TIMEOUT_S = 120
FUZZ_EXAMPLES = 100

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(champion_store):
    return champion_store


@pytest.fixture(scope="module")
def prospect_scores(store, tmp_path_factory) -> Path:
    """Scores of the book plus customers acquired without buying: the same buyers, and a prospect model.

    The server answers customers without a purchase from it (``POST /clv`` with ``"transactions": []``),
    so the fuzz reaches the scoring path with them too.
    """
    import shutil

    from serving.scoring import score
    from training.registry import load_champion

    book = tmp_path_factory.mktemp("prospects") / "book"
    shutil.copytree(store.book_dir, book)
    customers = pd.read_parquet(book / "customers.parquet")
    extra = customers.head(20).assign(
        customer_id=[f"P{i:03d}" for i in range(20)], acquired_at=pd.Timestamp("2023-06-01")
    )
    pd.concat([customers, extra], ignore_index=True).to_parquet(book / "customers.parquet", index=False)
    with environ(MLFLOW_TRACKING_URI=store.tracking_uri):
        scored = score(book, cutoff=AS_OF, out=book.parent / "scores.parquet", champion=load_champion())
    assert scored.run.prospects is not None
    return book.parent / "scores.parquet"


@pytest.fixture(scope="module")
def server(store, prospect_scores):
    """Base URL of the running service (stopped afterwards)."""
    on_sigint = signal.getsignal(signal.SIGINT)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("CLVCAST_CONFIG", raising=False)  # the champion's own CLV settings
        with running_service(
            tracking_uri=store.tracking_uri,
            scores=prospect_scores,
            new_customer_clv=store.new_customer_clv,
            ready_timeout=STARTUP_TIMEOUT_S,
        ) as running:
            # While it runs, BentoML's process manager handles SIGINT (it stops the server) ...
            assert signal.getsignal(signal.SIGINT) is not on_sigint
            yield running.url
    # ... and once it has stopped, Ctrl-C is this process's own again.
    assert signal.getsignal(signal.SIGINT) is on_sigint


def test_clvcast_serve_refuses_to_start_without_a_champion(capsys):
    """No champion at the tracking URI: a one-line cause naming model and URI, before any worker."""
    uri = empty_store()
    capsys.readouterr()  # MLflow's own lines when it created the store
    port = free_port()
    with environ(MLFLOW_TRACKING_URI=uri):
        code = main(["serve", "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 1, err
    steps, causes = [], []
    for text in err.strip().splitlines():
        (steps if text.startswith("[clvcast] ") else causes).append(text)
    assert steps == [f"[clvcast] starting the service on http://127.0.0.1:{port} with 1 worker(s); each loads "
                     "the champion first"]  # fmt: skip
    (line,) = causes
    assert line.startswith("error: no 'champion' version of registered model 'clvcast-churn'"), line
    assert uri in line


def test_clvcast_serve_answers_and_stops_on_sigterm(store, tmp_path):
    """``clvcast serve`` in the foreground: ready, answers, and stops its workers on SIGTERM."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.tracking_uri, "BENTOML_HOME": str(tmp_path / "home")}
    for name in ("CLVCAST_CONFIG", "CLVCAST_API_KEYS", "CLVCAST_API_KEYS_FILE"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "serving.cli", "serve", "--port", str(port), "--new-customer-clv",
           str(store.new_customer_clv)]  # fmt: skip
    with open(tmp_path / "serve.log", "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with bentoml.SyncHTTPClient(f"http://127.0.0.1:{port}", server_ready_timeout=STARTUP_TIMEOUT_S) as client:
            assert client.request("GET", "/model").status_code == 200
            # --new-customer-clv reached the workers (without it this answers 503).
            known = pd.read_csv(store.new_customer_clv)["channel"].iloc[0]
            budget = client.request("POST", "/acquisition_budget", json={"channels": [{"channel": known, "cac": 25.0}]})
            assert budget.status_code == 200, budget.text
        # The command says when the workers are ready (it polls /readyz every half second).
        deadline = time.monotonic() + 10
        while "[clvcast] ready after " not in (tmp_path / "serve.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        log_text = (tmp_path / "serve.log").read_text()
        assert f"[clvcast] starting the service on http://127.0.0.1:{port} with 1 worker(s)" in log_text
        assert re.search(rf"\[clvcast\] ready after \d+\.\d s: POST http://127.0.0.1:{port}/clv", log_text), log_text
        # Without keys it says the service is open to anyone (BentoML's logging config had silenced it).
        assert "[clvcast] warning: no API keys (CLVCAST_API_KEYS, CLVCAST_API_KEYS_FILE): anyone who reaches" in log_text
        # Once: the root handler of BentoML's logging config does not repeat clvcast's lines.
        assert log_text.count("no API keys") == 1, log_text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, (tmp_path / "serve.log").read_text()[-3000:]
        # The workers went with it: nothing answers on the port any more.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def tables(store):
    from features.io import load_tables

    return load_tables(store.book_dir).tables


@pytest.fixture(scope="module")
def batch_scores(store):
    from serving.scores import read_scores

    return read_scores(store.scores).frame.set_index("customer_id")


def test_health_readiness_and_metrics(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "bentoml_" in metrics.text


def test_api_page_is_clvcast_own_and_needs_no_internet(client):
    from serving.service import DOCS_TITLE

    for path in ("/", "/docs"):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
        assert f"<title>{DOCS_TITLE}</title>" in page.text, path
        # No script, style or image from another host (BentoML's stock page loads a tag manager).
        assert "googletagmanager" not in page.text and "This is a Machine Learning Service" not in page.text
        assert not re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", page.text), path
        for asset in re.findall(r"""(?:src|href)=["']?([^"' >]+)""", page.text):
            assert asset.startswith("/static_content/"), asset
            assert client.get(asset).status_code == 200, asset
    spec = client.get("/docs.json").json()
    assert spec["info"]["title"] == "clvcast" and "POST /clv" in spec["info"]["description"]
    assert {"/clv", "/acquisition_budget", "/model"} <= set(spec["paths"]) and "/docs" not in spec["paths"]


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_api_page_renders_in_headless_chromium(server, chromium, tmp_path, path):
    import browser
    from serving.service import DOCS_TITLE

    url = f"{server}{path}"
    dom = browser.rendered_dom(chromium, url)
    # Swagger UI drew the document it fetched from /docs.json: the service's title and description,
    # and one block per operation.
    assert f"<title>{DOCS_TITLE}</title>" in dom
    assert 'class="title"' in dom and "Churn probability, expected spend and customer lifetime value" in dom
    for operation in ("/clv", "/acquisition_budget", "/model", "/healthz"):
        assert f'data-path="{operation}"' in dom, operation
    png = browser.screenshot(chromium, url, tmp_path / f"service{path.replace('/', '-')}.png", height=1600)
    # Swagger UI's operation colours: POST green and GET blue, as bands across the page.
    assert browser.pixels_near(png, (0x49, 0xCC, 0x90)) > 2_000
    assert browser.pixels_near(png, (0x61, 0xAF, 0xFE)) > 2_000


def test_model(client, store):
    from training.registry import load_champion

    with environ(MLFLOW_TRACKING_URI=store.tracking_uri):
        champion = load_champion()
    response = client.get("/model")
    assert response.status_code == 200
    info = response.json()
    assert info["model_versions"] == {
        "churn": champion.churn_version, "spend": champion.spend_version, "feature_set": champion.feature_set_id
    }  # fmt: skip
    assert info["trained_at"] == champion.trained_at
    assert info["holdout_metrics"]["clvcast"]["churn_auc"] == pytest.approx(champion.holdout_metrics["clvcast"]["churn_auc"])


def test_clv_over_http_matches_batch_scores(client, tables, batch_scores):
    ids = [cid for cid in batch_scores.index[batch_scores["recency_days"] < 200][:10]]
    response = client.post("/clv", json=request_body(tables, ids))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [c["customer_id"] for c in answer["customers"]] == ids
    online = pd.DataFrame(answer["customers"]).set_index("customer_id")
    for column in ("churn_probability", "spend_if_active", "expected_spend", "clv", "expected_lifetime_days"):
        np.testing.assert_allclose(online[column], batch_scores.loc[ids, column], rtol=1e-9, err_msg=column)
    assert answer["segment_basis"] == "scored population"
    assert [c["segment"]["clv_tier"] for c in answer["customers"]] == batch_scores.loc[ids, "clv_tier"].tolist()
    assert [c["segment"]["rfm_segment"] for c in answer["customers"]] == batch_scores.loc[ids, "rfm_segment"].tolist()
    assert [c["drivers"] for c in answer["customers"]] == batch_scores.loc[ids, "drivers"].tolist()

    # Metrics now count the request.
    assert 'endpoint="/clv"' in client.get("/metrics").text


def test_acquisition_budget(client, store):
    known = pd.read_csv(store.new_customer_clv)["channel"].iloc[0]
    response = client.post("/acquisition_budget", json={"channels": [{"channel": known, "cac": 25.0}]})
    assert response.status_code == 200, response.text
    (row,) = response.json()["channels"]
    assert row["channel"] == known and row["recommendation"] in {"grow", "hold", "cut", "unknown"}


def _post(client, body: bytes | dict, path: str = "/clv") -> httpx.Response:
    if isinstance(body, dict):
        return client.post(path, json=body)
    return client.post(path, content=body, headers={"content-type": "application/json"})


def _one(ts: str = "2024-01-01", amount: str = "10.0") -> str:
    return f'{{"customer_id": "1", "transactions": [{{"timestamp": "{ts}", "amount": {amount}}}]}}'


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        (f'{{"customers": [{_one()}]}}', ["as_of"], "missing"),
        (f'{{"as_of": "2024-06-30", "customers": [{_one(amount="NaN")}]}}',
         ["customers", 0, "transactions", 0, "amount"], "finite_number"),
        (f'{{"as_of": "2024-06-30", "customers": [{_one(amount="Infinity")}]}}',
         ["customers", 0, "transactions", 0, "amount"], "finite_number"),
        (f'{{"as_of": "2024-06-30", "customers": [{_one(ts="2024-07-01T08:00:00")}]}}',
         ["customers", 0, "transactions", 0, "timestamp"], "timestamp_after_as_of"),
        ('{"as_of": "2024-06-30", "customers": ['
         + ", ".join(_one().replace('"1"', f'"{i}"') for i in range(A.MAX_CUSTOMERS + 1)) + "]}",
         ["customers"], "too_long"),
        (f'{{"as_of": "2024-06-30", "customers": [{_one()}, {_one()}]}}',
         ["customers", 1, "customer_id"], "duplicate_customer_id"),
        ('{"as_of": "2024-06-30", "customers": [', [], "json_invalid"),
        ('{"as_of": "not a date", "customers": []}', ["as_of"], "date_from_datetime_parsing"),
    ],
    ids=["missing-field", "nan-amount", "infinite-amount", "future-timestamp", "oversized-batch",
         "duplicate-ids", "broken-json", "bad-date"],
)  # fmt: skip
def test_invalid_clv_requests_get_400_with_path_and_rule(client, body, loc, kind):
    response = _post(client, body.encode())
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["error"]
    assert any(e["loc"] == loc and e["type"] == kind and e["msg"] for e in payload["detail"]), payload


def test_invalid_budget_request_gets_400(client):
    response = _post(client, {"channels": [{"channel": "x", "cac": -5}]}, "/acquisition_budget")
    assert response.status_code == 400
    assert response.json()["detail"][0]["loc"] == ["channels", 0, "cac"]


def test_fuzz_openapi_finds_no_server_error(server):
    """Schemathesis: valid and invalid requests drawn from /docs.json never get a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    # POST /reload is the operators' (tests/test_http_guard.py): the fuzz is of the scoring API.
    schema = schemathesis.openapi.from_url(f"{server}/docs.json").exclude(path="/reload")
    strategy = st.one_of(
        schema.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE),
        schema.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE),
    )
    seen: dict[str, int] = {}

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case):
        response = case.call(base_url=server, timeout=15)
        key = f"{case.method} {case.path} {response.status_code}"
        seen[key] = seen.get(key, 0) + 1
        assert response.status_code < 500, (
            f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}\n"
            f"body: {json.dumps(case.body, default=str)[:2000]}"
        )

    check()
    # The fuzz reached the scoring path, not only validation.
    assert any(k.startswith("POST /clv 200") for k in seen), sorted(seen.items())


def test_random_valid_histories_are_scored(client):
    """Property: any request inside the documented limits gets 200 and finite, bounded numbers."""
    from datetime import datetime, timedelta, timezone

    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    as_of = datetime(2024, 6, 30)
    moments = st.datetimes(min_value=datetime(1900, 1, 1), max_value=as_of + timedelta(hours=23, minutes=59))
    amounts = st.floats(min_value=-A.MAX_ABS_AMOUNT, max_value=A.MAX_ABS_AMOUNT, allow_nan=False)
    purchase = st.fixed_dictionaries(
        {"timestamp": moments.map(datetime.isoformat), "amount": st.floats(0, A.MAX_ABS_AMOUNT)}
    )
    transaction = st.fixed_dictionaries({"timestamp": moments.map(datetime.isoformat), "amount": amounts})
    event = st.fixed_dictionaries(
        {
            "timestamp": moments.map(lambda d: d.replace(tzinfo=timezone.utc).isoformat()),
            "event_type": st.sampled_from(["session", "email_open", "email_click", "support_ticket", "cancel", "chat"]),
        }
    )
    attributes = st.fixed_dictionaries(
        {},
        optional={
            "acquired_at": moments.map(lambda d: d.date().isoformat()),
            "channel": st.text(min_size=1, max_size=12),
            "acquisition_cost": st.floats(0, A.MAX_ABS_AMOUNT),
            "referred_by": st.text(min_size=1, max_size=8),
            "region": st.sampled_from(["north", "south"]) | st.none(),
        },
    )
    customer = st.fixed_dictionaries(
        {
            "transactions": st.tuples(purchase, st.lists(transaction, max_size=30)).map(lambda t: [t[0], *t[1]]),
            "events": st.lists(event, max_size=20),
            "attributes": attributes,
        }
    )
    bodies = st.lists(customer, min_size=1, max_size=5).map(
        lambda cs: {"as_of": as_of.date().isoformat(), "customers": [{"customer_id": f"c{i}", **c} for i, c in enumerate(cs)]}
    )

    @settings(
        max_examples=30, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(body=bodies)
    def check(body):
        response = client.post("/clv", json=body)
        assert response.status_code == 200, f"{response.status_code}: {response.text[:500]}\n{json.dumps(body)[:2000]}"
        for c in response.json()["customers"]:
            assert 0 <= c["churn_probability"] <= 1
            for key in ("expected_spend", "clv", "clv_horizon", "expected_lifetime_days", "spend_if_active"):
                assert c[key] is not None and np.isfinite(c[key]), (key, c)

    check()
