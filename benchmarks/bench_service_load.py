"""Load, abuse and reload of the service on loopback: 2 workers, API keys on.

Four runs against one server (``running_service``; the champion of ``--train`` or of
``MLFLOW_TRACKING_URI``), each printing what it measured:

1. **Rate.** Open-loop 1-customer ``POST /clv`` at a fixed rate from 16 keep-alive connections;
   latency counts from the moment a request was due (a slow server cannot hide queueing). Trial
   runs of ``--trial-seconds`` lower the rate by a third until one passes, then raise it by 20 %
   while p99 <= 100 ms with zero errors; the best rate then runs ``--seconds`` (60) and must pass
   again, else the rate steps down by 10 %.
2. **Mixed.** 10,000 requests from 16 closed-loop clients: 1 customer (75 %), 100 customers
   (15 %), invalid bodies (9 %: NaN amounts, a missing ``as_of``, broken JSON, a wrong key),
   oversized bodies (1 %: a byte over the limit). Counted by status; any 5xx fails the run. The
   workers' resident memory is sampled every second.
3. **Spread.** CPU seconds each worker used during runs 1 and 2 (16 keep-alive clients).
4. **Reload.** Constant traffic at half the rate of run 1 while a new pair is registered and
   ``POST /reload`` is sent: failed requests during the switch, the reload's duration, and the
   versions answered before and after it returned.

The load generator runs on the same 2 cores as the server: its CPU is part of the load.

Usage::

    python benchmarks/bench_service_load.py --train            # train a champion on the demo's book first
    python benchmarks/bench_service_load.py --seconds 60 --mixed 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_service import make_body, train_champion  # noqa: E402

KEY = "bench-key-0123456789"
P99_TARGET_MS = 100.0
CONNECTIONS = 16


def workers_of(pid: int):
    """The BentoML worker processes under this process."""
    import psutil

    return [p for p in psutil.Process(pid).children(recursive=True)
            if any("_bentoml_impl.worker" in part for part in p.cmdline())]


def cpu_seconds(workers) -> dict[int, float]:
    return {p.pid: sum(p.cpu_times()[:2]) for p in workers}


async def _rate_run(base: str, body: bytes, rate: float, seconds: float) -> dict:
    import httpx

    headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        start = time.perf_counter()
        n = int(rate * seconds)

        async def one(due: float) -> None:
            await asyncio.sleep(max(0.0, due - (time.perf_counter() - start)))
            try:
                response = await client.post("/clv", content=body, headers=headers)
                if response.status_code != 200:
                    errors.append(str(response.status_code))
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
            latencies.append((time.perf_counter() - start - due) * 1000)

        await asyncio.gather(*(one(i / rate) for i in range(n)))
    t = np.asarray(latencies)
    return {"rate": rate, "n": n, "p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99)),
            "errors": len(errors), "error_kinds": sorted(set(errors))[:5]}


def rate_run(base: str, body: bytes, rate: float, seconds: float) -> dict:
    return asyncio.run(_rate_run(base, body, rate, seconds))


def find_rate(base: str, body: bytes, *, start: float, trial: float, seconds: float) -> tuple[dict, list[dict]]:
    trials = []
    rate, best = start, None
    while True:
        r = rate_run(base, body, rate, trial)
        trials.append(r)
        print(f"  trial {rate:7.1f}/s for {trial:g} s: p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, errors {r['errors']}",
              flush=True)
        if r["p99"] > P99_TARGET_MS or r["errors"]:
            if best is not None:
                break
            rate /= 1.5  # the first rate was already too high: come down until one passes
            if rate < 1:
                # Nothing passes (a machine loaded by other work): report the 1/s trial as missed
                # and go on with the other runs at that rate, rather than print nothing.
                print(f"  no rate from 1/s up keeps p99 <= {P99_TARGET_MS:g} ms: the target is missed", flush=True)
                return {**r, "met": False}, trials
            continue
        best, rate = rate, rate * 1.2
    while True:
        final = rate_run(base, body, best, seconds)
        print(f"  final {best:7.1f}/s for {seconds:g} s: p50 {final['p50']:.1f} ms, p99 {final['p99']:.1f} ms, "
              f"errors {final['errors']}", flush=True)
        if final["p99"] <= P99_TARGET_MS and not final["errors"]:
            return {**final, "met": True}, trials
        best *= 0.9


def mixed_run(base: str, total: int, limit: int, watch) -> dict:
    import httpx

    one = json.dumps(make_body(1, rows=50, events=5, seed=1)).encode()
    hundred = json.dumps(make_body(100, rows=50, events=5, seed=2)).encode()
    nan = one.replace(b'"amount": ', b'"amount": NaN, "x": ', 1)
    no_as_of = json.dumps({"customers": json.loads(one)["customers"]}).encode()
    broken = one[: len(one) // 2]
    prefix = b'{"as_of": "2024-06-30", "customers": ['
    oversized = prefix + b" " * (limit + 1 - len(prefix) - 2) + b"]}"  # one byte over the limit
    kinds = (["one"] * 75 + ["hundred"] * 15 + ["nan"] * 3 + ["no_as_of"] * 2 + ["broken"] * 2 + ["bad_key"] * 2
             + ["oversized"])
    bodies = {"one": one, "hundred": hundred, "nan": nan, "no_as_of": no_as_of, "broken": broken, "bad_key": one,
              "oversized": oversized}
    rng = random.Random(0)
    plan = [rng.choice(kinds) for _ in range(total)]
    counts: dict[str, dict[str, int]] = {}
    lock = threading.Lock()
    cursor = iter(range(total))

    def client_loop() -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            while True:
                with lock:
                    i = next(cursor, None)
                if i is None:
                    return
                kind = plan[i]
                key = "wrong" if kind == "bad_key" else KEY
                headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
                try:
                    outcome = str(client.post("/clv", content=bodies[kind], headers=headers).status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                with lock:
                    counts.setdefault(kind, {}).setdefault(outcome, 0)
                    counts[kind][outcome] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client_loop) for _ in range(CONNECTIONS)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        watch()
        time.sleep(1.0)
    return {"counts": counts, "seconds": time.monotonic() - started}


def reload_run(base: str, tracking_uri: str, rate: float) -> dict:
    """Traffic at ``rate`` while a new pair is registered and POST /reload sent."""
    import httpx

    from serving.service import environ
    from training import registry

    with environ(MLFLOW_TRACKING_URI=tracking_uri):
        from mlflow import MlflowClient

        champion = registry.load_champion()
        tags = MlflowClient(tracking_uri=tracking_uri).get_run(champion.run_id).data.tags
        run = registry.LoggedRun(run_id=champion.run_id, **json.loads(tags[registry.MODELS_TAG]))
        new = registry.register_pair(run, registry.Decision(True, "bench_load reload"),
                                     basis=(champion.churn_version, champion.spend_version))
    body = json.dumps(make_body(1, rows=50, events=5, seed=1)).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
    answers: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            next_at = time.monotonic()
            while not stop.is_set():
                next_at += CONNECTIONS / rate
                time.sleep(max(0.0, next_at - time.monotonic()))
                try:
                    r = client.post("/clv", content=body, headers=headers)
                    answers.append((time.monotonic(), r.status_code,
                                    r.json().get("model_versions", {}).get("churn", "") if r.status_code == 200 else ""))
                except httpx.HTTPError as exc:
                    answers.append((time.monotonic(), -1, type(exc).__name__))

    threads = [threading.Thread(target=traffic) for _ in range(CONNECTIONS)]
    for t in threads:
        t.start()
    time.sleep(5)
    sent = time.monotonic()
    with httpx.Client(base_url=base, timeout=600) as client:
        reloaded = client.post("/reload", headers={"authorization": f"Bearer {KEY}"})
    returned = time.monotonic()
    time.sleep(5)
    stop.set()
    for t in threads:
        t.join()
    failed = [a for a in answers if a[1] != 200]
    after = {v for at, code, v in answers if at > returned and code == 200}
    during = {v for at, code, v in answers if sent <= at <= returned and code == 200}
    return {"status": reloaded.status_code, "reload": reloaded.json(), "seconds": returned - sent,
            "requests": len(answers), "failed": len(failed), "versions_during": sorted(during),
            "versions_after": sorted(after), "old": champion.churn_version, "new": new.churn_version}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", action="store_true", help="Train a champion (default settings) in a temporary store.")
    parser.add_argument("--train-customers", type=int, default=20_000)
    parser.add_argument("--start-rate", type=float, default=40.0, help="First trial rate, requests/s.")
    parser.add_argument("--trial-seconds", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="Duration of the final rate run.")
    parser.add_argument("--mixed", type=int, default=10_000, help="Requests of the mixed run.")
    args = parser.parse_args(argv)

    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    tmp = Path(tempfile.mkdtemp(prefix="clvcast-load-"))
    try:
        if args.train:
            print(f"training a champion on {args.train_customers:,} customers ...", flush=True)
            tracking_uri = train_champion(tmp, customers=args.train_customers)
        else:
            from training.registry import tracking_uri as default_uri

            tracking_uri = default_uri()
        from serving.http_guard import max_body_bytes
        from serving.service import environ, running_service

        os.environ["BENTOML_HOME"] = str(tmp / "home")
        load_start = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        with environ(CLVCAST_API_KEYS=KEY), running_service(workers=2, tracking_uri=tracking_uri) as server:
            base = server.url
            workers = workers_of(os.getpid())
            cpu0 = cpu_seconds(workers)
            one = json.dumps(make_body(1, rows=50, events=5, seed=1)).encode()
            rate_run(base, one, args.start_rate, 3)  # warm-up
            print("1. rate (1 customer, open loop, 16 connections):", flush=True)
            final, _ = find_rate(base, one, start=args.start_rate, trial=args.trial_seconds, seconds=args.seconds)
            memory: list[float] = []

            def watch() -> None:
                memory.append(sum(p.memory_info().rss for p in workers) / 2**20)

            watch()
            print(f"2. mixed ({args.mixed:,} requests, 16 clients):", flush=True)
            mixed = mixed_run(base, args.mixed, max_body_bytes(), watch)
            watch()
            cpu1 = cpu_seconds(workers)
            print("4. reload under traffic:", flush=True)
            reload = reload_run(base, tracking_uri, final["rate"] / 2)
        load_end = ", ".join(f"{x:.1f}" for x in os.getloadavg())

        print(f"\nmachine: {os.cpu_count()} CPUs; load average (1, 5, 15 min) {load_start} at the start, {load_end} at the end")
        verdict = "" if final["met"] else " NOT MET (the lowest rate tried, for the trial's duration)"
        print(f"1. highest rate with p99 <= {P99_TARGET_MS:g} ms and no error over {args.seconds:g} s{verdict}: "
              f"{final['rate']:.1f} requests/s (p50 {final['p50']:.1f} ms, p99 {final['p99']:.1f} ms, {final['n']} requests)")
        fivexx = sum(n for kinds in mixed["counts"].values() for code, n in kinds.items() if code.startswith("5"))
        print(f"2. mixed: {args.mixed:,} requests in {mixed['seconds']:.0f} s, 5xx: {fivexx}")
        for kind, outcomes in sorted(mixed["counts"].items()):
            print(f"   {kind:<10} " + ", ".join(f"{code}: {n}" for code, n in sorted(outcomes.items())))
        print(f"   worker memory (MiB, both workers): start {memory[0]:.0f}, max {max(memory):.0f}, end {memory[-1]:.0f}")
        spread = {pid: cpu1[pid] - cpu0.get(pid, 0.0) for pid in cpu1}
        print("3. worker CPU seconds during 1 and 2: " + ", ".join(f"{s:.0f}" for s in spread.values()))
        print(f"4. reload: HTTP {reload['status']} after {reload['seconds']:.1f} s ({reload['reload']}); "
              f"{reload['requests']} requests at {final['rate'] / 2:.0f}/s, failed {reload['failed']}; "
              f"churn versions answered during the reload {reload['versions_during']}, after it {reload['versions_after']} "
              f"(old v{reload['old']}, new v{reload['new']})")
        ok = final["met"] and fivexx == 0 and reload["failed"] == 0 and reload["versions_after"] == [reload["new"]]
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
