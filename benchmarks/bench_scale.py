"""Wall time and peak memory of each command on a large synthetic book, in-process or on Dask.

Usage::

    .venv/bin/python benchmarks/bench_scale.py --customers 1000000 [--cluster local] \\
        [--steps generate,champion,features,train,score,budget] [--workdir DIR] [--json out.json]
    # an existing-scheduler cluster of this machine with a memory limit per worker:
    .venv/bin/python benchmarks/bench_scale.py --customers 5000000 --workers 2 --worker-memory 4GB \\
        --steps generate,champion,score --workdir DIR

Runs the command line as a user would (``clvcast generate``, ``features``, ``train``, ``score``,
``budget``), each in its own process, against a throwaway MLflow store in the work directory,
and samples the resident memory of the command and of every process it starts (Dask workers of
``--cluster local``) every half second. Prints per step the wall time, the command's peak RSS and
the largest peak of any other process. The book is generated once per work directory and reused.

``--workers N --worker-memory LIMIT`` starts a scheduler (``dask scheduler``) and N
single-threaded workers (``dask worker --memory-limit LIMIT``, spilling to the work directory)
on 127.0.0.1 for the run, passes ``--cluster tcp://127.0.0.1:PORT`` to the commands, and samples
those processes too (the "worker peak" column).

The ``champion`` step trains the model that ``score`` uses when ``train`` is not run: on a book
of ``--champion-customers`` (default 20,000) with ``--champion-rounds`` boosting rounds per
booster (default 60), in this process, into the run's store.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

STEPS = ("generate", "champion", "features", "train", "score", "budget")
START, END = "2021-01-01", "2024-12-31"


def _run(cmd: list[str], env: dict[str, str], log_path: Path, others: tuple = ()) -> dict[str, float]:
    """Run ``cmd``; its wall time, its own peak RSS and the largest peak among its descendants and ``others`` (GB).

    ``others``: processes (psutil) sampled with their descendants too, e.g. a scheduler and workers.
    """
    peaks: dict[int, float] = {}
    with open(log_path, "w") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                tree = []
                for top in (root, *others):
                    try:
                        tree += [top, *top.children(recursive=True)]
                    except psutil.NoSuchProcess:
                        if top is root:
                            return
                for p in tree:
                    try:
                        peaks[p.pid] = max(peaks.get(p.pid, 0.0), p.memory_info().rss / 1024**3)
                    except psutil.NoSuchProcess:
                        pass
                done.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            code = proc.wait()
        finally:  # stopped (SIGTERM, Ctrl-C): the command goes too
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
        done.set()
        sampler.join()
        wall = time.perf_counter() - started
    if code != 0:
        tail = log_path.read_text()[-2000:]
        raise SystemExit(f"{' '.join(cmd)} exited {code}; log {log_path}:\n{tail}")
    rest = [v for pid, v in peaks.items() if pid != proc.pid]
    return {
        "wall_s": round(wall, 1),
        "peak_rss_gb": round(peaks.get(proc.pid, 0.0), 2),
        "worker_peak_rss_gb": round(max(rest), 2) if rest else 0.0,
        "processes": len(peaks),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cluster", default=None, help="passed to every command but generate (e.g. local)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--workdir", default=None, help="keeps the book between runs (default: a temporary one)")
    parser.add_argument("--workers", type=int, default=0,
                        help="start a scheduler and this many single-threaded workers on 127.0.0.1 (instead of --cluster)")
    parser.add_argument("--worker-memory", default="4GB", help="memory limit of each --workers worker (dask worker --memory-limit)")
    parser.add_argument("--champion-customers", type=int, default=20_000)
    parser.add_argument("--champion-rounds", type=int, default=60)
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C, so the scheduler and workers this started are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.workers and args.cluster:
        parser.error("--workers starts its own cluster: do not pass --cluster too")
    steps = [s for s in args.steps.split(",") if s]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}")

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="clvcast-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    book = workdir / f"book-{args.customers}-{args.seed}"
    label = f"workers-{args.workers}x{args.worker_memory}" if args.workers else ("cluster" if args.cluster else "in-process")
    out = workdir / label
    out.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "BENTOML_DO_NOT_TRACK": "true",
        "TQDM_DISABLE": "1",
    }
    clvcast = str(Path(sys.executable).with_name("clvcast"))
    with contextlib.ExitStack() as stack:
        address, daemons = args.cluster, ()
        if args.workers:
            address, daemons = stack.enter_context(_own_cluster(args.workers, args.worker_memory, out, env))
        results = _steps(args, steps, book, out, env, clvcast, address, daemons)

    machine = f"{platform.node()}: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 1024**3:.0f} GB"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    where = f"{args.workers} workers of {args.worker_memory} ({address})" if args.workers else (
        f"--cluster {args.cluster}" if args.cluster else "in-process")  # fmt: skip
    print(f"\n{args.customers:,} customers, {where}; {machine}; load {load}")
    print(f"{'step':<10}{'wall s':>9}{'peak RSS GB':>13}{'worker peak GB':>16}")
    for step, r in results.items():
        print(f"{step:<10}{r['wall_s']:>9.1f}{r['peak_rss_gb']:>13.2f}{r['worker_peak_rss_gb']:>16.2f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"customers": args.customers, "cluster": where, "machine": machine, "load": load, "steps": results}, indent=2
        ))  # fmt: skip
    return 0


@contextlib.contextmanager
def _own_cluster(workers: int, memory: str, out: Path, env: dict[str, str]):
    """A ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 until the block ends: (address, processes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(sys.executable).with_name("dask"))
    scratch = out / "dask-scratch"
    scratch.mkdir(exist_ok=True)
    logs = [open(out / "scheduler.log", "w"), open(out / "workers.log", "w")]
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=env, stdout=logs[0], stderr=subprocess.STDOUT)]  # fmt: skip
    procs.append(subprocess.Popen(
        [dask, "worker", address, "--nworkers", str(workers), "--nthreads", "1", "--memory-limit", memory,
         "--local-directory", str(scratch), "--host", "127.0.0.1", "--no-dashboard"],
        env=env, stdout=logs[1], stderr=subprocess.STDOUT))  # fmt: skip
    try:
        from dask.distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(workers, timeout=120)
        print(f"cluster: {address}, {workers} workers of {memory}, spilling to {scratch}", file=sys.stderr)
        yield address, tuple(psutil.Process(p.pid) for p in procs)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()


def _steps(args, steps, book: Path, out: Path, env, clvcast: str, address, daemons) -> dict[str, dict]:
    cluster = ["--cluster", address] if address else []
    cutoff = END
    # With a cluster, features and score write Parquet datasets (directories).
    features_out = out / ("features" if address else "features.parquet")
    scores = out / ("scores" if address else "scores.parquet")
    small = book.with_name(f"book-{args.champion_customers}-{args.seed}")
    rounds = str(args.champion_rounds)
    commands = {
        "generate": [clvcast, "generate", "--customers", str(args.customers), "--seed", str(args.seed),
                     "--start", START, "--end", END, "--out", str(book)],
        "champion": [clvcast, "train", "--data", str(small), "--promote", "force"],
        "features": [clvcast, "features", "--data", str(book), "--cutoff", cutoff, "--out", str(features_out), *cluster],
        "train": [clvcast, "train", "--data", str(book), "--promote", "force", *cluster],
        "score": [clvcast, "score", "--data", str(book), "--cutoff", cutoff, "--out", str(scores), *cluster],
        # budget: the workers reduce the tables; the scores (a Parquet dataset from a cluster) are read in process.
        "budget": [clvcast, "budget", "--data", str(book), "--scores", str(scores), "--out", str(out / "budget"), *cluster],
    }  # fmt: skip
    results: dict[str, dict] = {}
    for step in steps:
        if step == "generate" and (book / "transactions.parquet").exists():
            print(f"{step}: {book} exists, reused", file=sys.stderr)
            continue
        step_env = env
        if step == "champion":
            if not (small / "transactions.parquet").exists():
                subprocess.run([clvcast, "generate", "--customers", str(args.champion_customers), "--seed", str(args.seed),
                                "--start", START, "--end", END, "--out", str(small)], env=env, check=True,
                               stdout=subprocess.DEVNULL)  # fmt: skip
            step_env = {**env, "CLVCAST_TRAINING__CHURN_PARAMS__NUM_BOOST_ROUND": rounds,
                        "CLVCAST_TRAINING__SPEND_PARAMS__NUM_BOOST_ROUND": rounds}  # fmt: skip
        for previous in (features_out, scores) if step in ("features", "score") else ():
            if previous.is_dir():
                shutil.rmtree(previous)
            elif previous.exists():
                previous.unlink()
        print(f"{step}: {' '.join(commands[step])}", file=sys.stderr)
        on_cluster = step in ("features", "train", "score", "budget")
        results[step] = _run(commands[step], step_env, out / f"{step}.log", daemons if on_cluster else ())
        print(f"  {results[step]}", file=sys.stderr)
    return results



if __name__ == "__main__":
    sys.exit(main())
