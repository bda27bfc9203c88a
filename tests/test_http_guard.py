"""The service's front door (serving/http_guard.py) on a small ASGI app, and on the real service.

The first part needs no server: Starlette's test client drives the middleware around an app that
echoes what reached it. The second starts the service with two workers and API keys on loopback
and checks keys, the body limit, a reload under traffic and readiness while a worker cannot load.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving import http_guard as G

KEY = "k-2f9a61c0e4"


async def _echo(request: Request):
    body = await request.body()
    if body == b"invalid":
        return JSONResponse({"error": "1 validation error for ClvRequest",
                             "detail": [{"loc": ["as_of"], "type": "missing", "msg": "Field required"}]}, status_code=400)
    return JSONResponse({"bytes": len(body)})


def _client(monkeypatch, **env) -> TestClient:
    for name in (G.API_KEYS_ENV, G.API_KEYS_FILE_ENV, G.MAX_BODY_ENV, G.REQUESTS_PER_CONNECTION_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    app = Starlette(routes=[Route(p, _echo, methods=["GET", "POST"]) for p in ("/clv", "/readyz", "/metrics")])
    return TestClient(G.Guard(app))


def test_keys_are_required_except_on_probes_and_metrics(monkeypatch, caplog):
    client = _client(monkeypatch, CLVCAST_API_KEYS=f"other, {KEY}")
    with caplog.at_level(logging.INFO, logger=G.__name__):
        assert client.post("/clv").status_code == 401
        wrong = client.post("/clv", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert "API key" in wrong.json()["error"]
    assert client.post("/clv", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert client.post("/clv", headers={"Authorization": "Basic " + KEY}).status_code == 401
    assert client.get("/readyz").status_code == 200 and client.get("/metrics").status_code == 200
    assert "nope" not in caplog.text and KEY not in caplog.text


def test_keys_from_a_file_and_bad_settings(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"# operators\n{KEY}\n\nsecond\n")
    assert G.api_keys({G.API_KEYS_FILE_ENV: str(path)}) == (KEY, "second")
    assert G.api_keys({}) == ()
    for env, message in (({G.API_KEYS_ENV: " , "}, "holds no key"),
                         ({G.API_KEYS_FILE_ENV: str(tmp_path / "missing")}, "missing"),
                         ({G.API_KEYS_ENV: "caf\u00e9"}, "printable ASCII")):
        with pytest.raises(G.ConfigError, match=message):
            G.api_keys(env)
    with pytest.raises(G.ConfigError, match=G.MAX_BODY_ENV):
        G.max_body_bytes({G.MAX_BODY_ENV: "-1"})


def test_bodies_over_the_limit_get_413_before_the_app_reads_them(monkeypatch):
    client = _client(monkeypatch, CLVCAST_MAX_BODY_BYTES="1000")
    assert client.post("/clv", content=b"x" * 1000).json() == {"bytes": 1000}
    too_big = client.post("/clv", content=b"x" * 1001)
    assert too_big.status_code == 413 and "1000 bytes" in too_big.json()["error"]

    def chunks(n):  # no Content-Length: chunked transfer
        for _ in range(n):
            yield b"x" * 300

    assert client.post("/clv", content=chunks(3)).json() == {"bytes": 900}
    assert client.post("/clv", content=chunks(4)).status_code == 413


def test_client_errors_in_the_apis_terms_on_one_info_line(monkeypatch, caplog):
    client = _client(monkeypatch)
    with caplog.at_level(logging.INFO, logger=G.__name__):
        response = client.post("/clv", content=b"invalid")
    assert response.status_code == 400
    payload = response.json()
    assert "ClvRequest" not in payload["error"] and payload["error"].startswith("invalid request: 1 error(s)")
    assert payload["detail"][0]["loc"] == ["as_of"]
    (record,) = [r for r in caplog.records if r.name == G.__name__]
    assert record.levelno == logging.INFO and record.message.startswith("400 POST /clv") and not record.exc_info


def test_bentomls_traceback_of_a_validation_error_is_dropped():
    from pydantic import BaseModel, ValidationError

    class M(BaseModel):
        x: int

    try:
        M(x="no")
    except ValidationError:
        import sys

        exc_info = sys.exc_info()
    record = logging.LogRecord("bentoml", logging.ERROR, __file__, 1, "Exception on /clv", (), exc_info)
    assert G._not_a_client_error(record) is False
    plain = logging.LogRecord("bentoml", logging.ERROR, __file__, 1, "Exception on /clv", (), (None, None, None))
    assert G._not_a_client_error(plain) is True


def test_a_connection_is_closed_after_its_quota_of_requests(monkeypatch):
    client = _client(monkeypatch, CLVCAST_REQUESTS_PER_CONNECTION="3")
    answers = [client.post("/clv", content=b"") for _ in range(3)]
    assert [r.headers.get("connection") for r in answers] == [None, None, "close"]


# --------------------------------------------------------------------------- the real service


@pytest.fixture(scope="module")
def guarded(champion_store):
    """The service with two workers and an API key, with the store it serves from."""
    from serving.service import environ, running_service

    store = champion_store
    with environ(CLVCAST_API_KEYS=KEY), pytest.MonkeyPatch.context() as mp:
        mp.delenv("CLVCAST_CONFIG", raising=False)
        with running_service(workers=2, tracking_uri=store.tracking_uri, ready_timeout=300) as server:
            yield server.url, store


def _body(store) -> dict:
    from features.io import load_tables
    from test_service import request_body

    tables = load_tables(store.book_dir).tables
    return request_body(tables, [tables.transactions["customer_id"].iloc[0]])


@pytest.mark.slow
def test_keys_and_body_limit_on_the_service(guarded):
    url, store = guarded
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/clv", json=_body(store)).status_code == 401
        assert client.get("/model").status_code == 401
        assert client.post("/reload").status_code == 401
        assert client.get("/readyz").status_code == 200
        assert client.post("/clv", json=_body(store), headers=auth).status_code == 200
        huge = b'{"as_of": "2024-06-30", "customers": [' + b" " * G.DEFAULT_MAX_BODY_BYTES + b"]}"
        started = time.monotonic()
        response = client.post("/clv", content=huge, headers={**auth, "content-type": "application/json"})
        assert response.status_code == 413, response.text
        assert time.monotonic() - started < 30


@pytest.mark.slow
def test_reload_moves_every_worker_without_a_failed_request(guarded):
    import os

    from serving.service import PAIR_FILE, RUNTIME_DIR_ENV, environ
    from training import registry

    url, store = guarded
    auth = {"Authorization": f"Bearer {KEY}"}
    with environ(MLFLOW_TRACKING_URI=store.tracking_uri):
        from mlflow import MlflowClient

        champion = registry.load_champion()
        tags = MlflowClient(tracking_uri=store.tracking_uri).get_run(champion.run_id).data.tags
        run = registry.LoggedRun(run_id=champion.run_id, **json.loads(tags[registry.MODELS_TAG]))
        new = registry.register_pair(run, registry.Decision(True, "new pair for the reload test"),
                                     basis=(champion.churn_version, champion.spend_version))
    body = _body(store)
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=url, timeout=60, headers=auth) as c:
            while not stop.is_set():
                r = c.post("/clv", json=body)
                seen.append((r.status_code, r.json().get("model_versions", {}).get("churn", "")))

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        with httpx.Client(base_url=url, timeout=600, headers=auth) as client:
            reloaded = client.post("/reload")
            assert reloaded.status_code == 200, reloaded.text
            assert reloaded.json()["workers_switched"] == 2
            stop.set()
            for t in threads:
                t.join()
            after = [client.post("/clv", json=body).json()["model_versions"]["churn"] for _ in range(30)]
            assert set(after) == {new.churn_version}, after
            assert client.get("/model").json()["model_versions"]["spend"] == new.spend_version
            # A pair no worker can load: not ready, 503 with the reason, until the server names a good one.
            runtime = os.environ[RUNTIME_DIR_ENV]
            pair_path = f"{runtime}/{PAIR_FILE}"
            pair = json.loads(open(pair_path).read())
            bad = {**pair, "generation": pair["generation"] + 1, "churn": "999", "spend": "999"}
            open(pair_path, "w").write(json.dumps(bad))
            deadline = time.monotonic() + 60
            while client.get("/readyz").status_code == 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert client.get("/readyz").status_code == 503
            open(pair_path, "w").write(json.dumps({**pair, "generation": pair["generation"] + 2}))
            deadline = time.monotonic() + 60
            while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert client.get("/readyz").status_code == 200
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert seen and all(code == 200 for code, _ in seen), [s for s in seen if s[0] != 200][:5]
    assert {v for _, v in seen} <= {champion.churn_version, new.churn_version}
