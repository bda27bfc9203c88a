"""Latency and throughput of ``POST /clv`` against a real BentoML server.

Measures, on loopback:

- latency p50 / p99 of one request at a time for 1 customer and for 100 customers, each customer
  with a 50-row history (transactions; plus a few events), and for 100 customers without drivers
  (``"drivers": 0``: no SHAP values, the largest cost of big batches);
- requests per second for 1-customer requests from concurrent clients.

Targets: 1 customer p50 <= 15 ms and p99 <= 50 ms; 100 customers p99 <= 150 ms.

Usage::

    python benchmarks/bench_service.py                 # champion from MLFLOW_TRACKING_URI / ./mlruns
    python benchmarks/bench_service.py --train         # train a champion (default settings) in a temporary store
    python benchmarks/bench_service.py --workers 2 --requests 500 --profile

``--profile`` also times the stages of the request path in process (validation, request to tables,
features, predictions, explanations, CLV) for 1 and 100 customers, and the drivers' SHAP values of
``training.treeshap`` against LightGBM's ``pred_contrib`` (time, and the largest difference).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
AS_OF = "2024-06-30"
TARGETS_MS = {
    "1 customer": {"p50": 15.0, "p99": 50.0},
    "100 customers": {"p99": 150.0},
    "100, drivers=0": {"p99": 150.0},
}


def make_body(n_customers: int, *, rows: int, events: int, seed: int = 0) -> dict:
    """A ``POST /clv`` body: customers with ``rows`` transactions and ``events`` events over two years."""
    rng = np.random.default_rng(seed)
    end = np.datetime64(AS_OF) + np.timedelta64(1, "D")
    customers = []
    for i in range(n_customers):
        span = rng.uniform(60, 730)
        tx_days = np.sort(rng.uniform(0, span, rows))
        ev_days = np.sort(rng.uniform(0, span, events))
        to_ts = lambda d: str(end - np.timedelta64(int(d * 86400) + 1, "s"))  # noqa: E731
        customers.append(
            {
                "customer_id": f"B{seed:02d}{i:06d}",
                "transactions": [
                    {"timestamp": to_ts(d), "amount": round(float(a), 2)}
                    for d, a in zip(tx_days, rng.lognormal(3.5, 0.6, rows))
                ],
                "events": [
                    {"timestamp": to_ts(d), "event_type": str(t)}
                    for d, t in zip(ev_days, rng.choice(["session", "email_open", "email_click"], events))
                ],
                "attributes": {"channel": str(rng.choice(["organic", "paid_search", "referral"])),
                               "acquisition_cost": round(float(rng.uniform(5, 80)), 2)},
            }
        )
    return {"customers": customers, "as_of": AS_OF}


def train_champion(root: Path, *, customers: int) -> str:
    """Train a champion with the default training settings into a new sqlite store; returns its URI.

    The default config on the demo's book size (20,000 customers) is what ``make demo`` serves: its
    tree count and depth set the cost of the SHAP drivers, so a smaller model would flatter them.
    """
    from features.synthetic import generate
    from training.config import Config
    from training.pipeline import train

    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    book = generate(customers, seed=0, start="2022-01-01", end=AS_OF)
    train(book.tables, config=Config(), promote="force")
    return uri


def describe_champion(tracking_uri: str) -> str:
    """Trees, leaves and depth of the served boosters (what the cost of SHAP values scales with)."""
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    from training.registry import load_champion

    champion = load_champion()

    def depth(node: dict) -> int:
        return 0 if "leaf_value" in node else 1 + max(depth(node["left_child"]), depth(node["right_child"]))

    parts = []
    for name, model in (("churn", champion.models.churn_model_), ("spend", champion.models.spend_model_)):
        booster = model.booster_
        used = booster.best_iteration or booster.num_trees()
        trees = booster.dump_model(num_iteration=used)["tree_info"]
        leaves = np.mean([t["num_leaves"] for t in trees])
        depths = [depth(t["tree_structure"]) for t in trees]
        parts.append(
            f"{name} v{getattr(champion, name + '_version')}: {len(trees)} trees, {leaves:.0f} leaves, "
            f"depth mean {np.mean(depths):.1f} / max {max(depths)}, {booster.num_feature()} features"
        )
    return "; ".join(parts)


def latency(base: str, body: dict, *, n: int, warmup: int = 20) -> dict[str, float]:
    """Sequential requests on one keep-alive connection; milliseconds."""
    import httpx

    content = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    times = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            response = client.post("/clv", content=content, headers=headers)
            elapsed = time.perf_counter() - t0
            if response.status_code != 200:
                raise RuntimeError(f"/clv answered {response.status_code}: {response.text[:500]}")
            if i >= warmup:
                times.append(elapsed * 1000)
    t = np.asarray(times)
    return {"p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99)), "mean": float(t.mean()), "n": n}


def throughput(base: str, body: dict, *, clients: int, seconds: float) -> float:
    """Requests per second from ``clients`` concurrent keep-alive clients over ``seconds``."""
    import httpx

    content = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    stop = time.monotonic() + seconds
    counts = [0] * clients
    errors: list[str] = []

    def run(k: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            while time.monotonic() < stop:
                response = client.post("/clv", content=content, headers=headers)
                if response.status_code != 200:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
                    return
                counts[k] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise RuntimeError(f"throughput run failed: {errors[0]}")
    return sum(counts) / (time.monotonic() - started)


def profile_request_path(body_small: dict, body_large: dict, *, repeat: int = 50) -> None:
    """Time the stages of ``POST /clv`` in process (median milliseconds per stage)."""
    from serving.api_models import ClvRequest
    from serving.scoring import build_champion_features, score_tables
    from serving.service import ClvService

    service = ClvService()  # the champion as the service holds it (e.g. one thread per prediction)
    champion = service.champion
    for label, body in (("1 customer", body_small), ("100 customers", body_large)):
        raw = json.dumps(body)
        stages: dict[str, list[float]] = {}

        def timed(name, fn, *args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            stages.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
            return out

        for _ in range(repeat):
            request = timed("validate", ClvRequest.model_validate_json, raw)
            tables = timed("to_tables", request.to_tables)
            features = timed("features", build_champion_features, tables, as_of=request.as_of, champion=champion)
            timed("predict", champion.models.predict, features)
            timed("explain", champion.models.explain, features, top_k=3)
            timed("predict+explain", champion.models.predict_and_explain, features, top_k=3)
            timed("score_tables (all)", score_tables, tables, as_of=request.as_of, champion=champion)
            timed("handler (all)", service.clv, request)
        print(f"\nrequest path, {label} (median ms over {repeat}):")
        for name, values in stages.items():
            print(f"  {name:<20} {np.median(values):8.2f}")
    compare_shap(champion, body_large, repeat=repeat)


def compare_shap(champion, body: dict, *, repeat: int = 20) -> None:
    """Drivers' SHAP values: training.treeshap against LightGBM's ``pred_contrib`` (time and agreement)."""
    from serving.api_models import ClvRequest
    from serving.scoring import build_champion_features

    request = ClvRequest.model_validate(body)
    features = build_champion_features(request.to_tables(), as_of=request.as_of, champion=champion)
    X = champion.models.encoder_.matrix(features)
    print(f"\nSHAP values, median ms over {repeat} (one thread):")
    print(f"  {'model':<6} {'rows':>5} {'treeshap':>9} {'pred_contrib':>13} {'max |diff|':>11}")
    for key, explainer in champion.models.explainers().items():
        booster = getattr(champion.models, f"{key}_model_").booster_
        for rows in (1, 10, len(X)):
            block = X[:rows]
            ours, theirs = [], []
            for _ in range(repeat):
                t0 = time.perf_counter()
                got = explainer.contributions(block)
                ours.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                expected = booster.predict(block, pred_contrib=True, num_threads=1)[:, :-1]
                theirs.append((time.perf_counter() - t0) * 1000)
            diff = float(np.abs(got - expected).max())
            print(f"  {key:<6} {rows:>5} {np.median(ours):9.2f} {np.median(theirs):13.2f} {diff:11.1e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=300, help="Measured requests per latency case.")
    parser.add_argument("--rows", type=int, default=50, help="Transactions per customer.")
    parser.add_argument("--events", type=int, default=5, help="Events per customer.")
    parser.add_argument("--clients", type=int, default=8, help="Concurrent clients for requests/s.")
    parser.add_argument("--seconds", type=float, default=10.0, help="Duration of the requests/s run.")
    parser.add_argument(
        "--train", action="store_true", help="Train a champion (default training settings) in a temporary store."
    )
    parser.add_argument(
        "--train-customers", type=int, default=20_000, help="Synthetic book size for --train (the demo's)."
    )
    parser.add_argument("--profile", action="store_true", help="Also time the request path's stages in process.")
    parser.add_argument("--service", default="serving.service:ClvService", help="Import path given to bentoml.serve.")
    args = parser.parse_args(argv)

    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    sys.path.insert(0, str(REPO))
    tmp = Path(tempfile.mkdtemp(prefix="clvcast-bench-"))
    try:
        if args.train:
            print(f"training a champion on {args.train_customers:,} customers ...", flush=True)
            tracking_uri = train_champion(tmp, customers=args.train_customers)
        else:
            from training.registry import tracking_uri as default_uri

            tracking_uri = default_uri()
        models = describe_champion(tracking_uri)
        one = make_body(1, rows=args.rows, events=args.events, seed=1)
        hundred = make_body(100, rows=args.rows, events=args.events, seed=2)
        if args.profile:
            os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
            profile_request_path(one, hundred)

        from serving.service import running_service

        # BentoML reads its home once per process, when the server starts.
        os.environ["BENTOML_HOME"] = str(tmp / "home")
        load_start = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        with running_service(workers=args.workers, tracking_uri=tracking_uri, service=args.service) as server:
            base = server.url
            results = {
                "1 customer": latency(base, one, n=args.requests),
                "100 customers": latency(base, hundred, n=max(50, args.requests // 3)),
                "100, drivers=0": latency(base, {**hundred, "drivers": 0}, n=max(50, args.requests // 3)),
            }
            rps = throughput(base, one, clients=args.clients, seconds=args.seconds)

        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"\nPOST /clv, {args.workers} workers, {args.rows} transactions + {args.events} events per customer")
        print(f"machine: {os.cpu_count()} CPUs, load average (1, 5, 15 min) {load_start} at the start, {load} at the end")
        print(f"models: {models}")
        print(f"{'case':<15} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'n':>5}  target")
        failed = False
        for case, r in results.items():
            target = TARGETS_MS[case]
            ok = all(r[k] <= v for k, v in target.items())
            failed |= not ok
            goal = ", ".join(f"{k} <= {v:g}" for k, v in target.items())
            print(f"{case:<15} {r['p50']:8.2f} {r['p99']:8.2f} {r['mean']:8.2f} {r['n']:5d}  {goal}: {'met' if ok else 'MISSED'}")
        print(f"requests/s (1 customer, {args.clients} clients, {args.seconds:g} s): {rps:,.0f}")
        return 1 if failed else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
