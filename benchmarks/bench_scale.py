"""Wall time and peak memory of each command on a large synthetic book, in-process or on Dask.

Usage::

    .venv/bin/python benchmarks/bench_scale.py --customers 1000000 [--cluster local] \\
        [--steps generate,features,train,score,budget] [--workdir DIR] [--json out.json]

Runs the command line as a user would (``clvcast generate``, ``features``, ``train``, ``score``,
``budget``), each in its own process, against a throwaway MLflow store in the work directory,
and samples the resident memory of the command and of every process it starts (Dask workers)
every half second. Prints per step the wall time, the command's peak RSS and the largest peak of
any other process of its tree. The book is generated once per work directory and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

STEPS = ("generate", "features", "train", "score", "budget")
START, END = "2021-01-01", "2024-12-31"


def _run(cmd: list[str], env: dict[str, str], log_path: Path) -> dict[str, float]:
    """Run ``cmd``; its wall time, its own peak RSS and the largest peak among its descendants (GB)."""
    peaks: dict[int, float] = {}
    with open(log_path, "w") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                try:
                    tree = [root, *root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    return
                for p in tree:
                    try:
                        peaks[p.pid] = max(peaks.get(p.pid, 0.0), p.memory_info().rss / 1024**3)
                    except psutil.NoSuchProcess:
                        pass
                done.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        done.set()
        sampler.join()
        wall = time.perf_counter() - started
    if code != 0:
        tail = log_path.read_text()[-2000:]
        raise SystemExit(f"{' '.join(cmd)} exited {code}; log {log_path}:\n{tail}")
    others = [v for pid, v in peaks.items() if pid != proc.pid]
    return {
        "wall_s": round(wall, 1),
        "peak_rss_gb": round(peaks.get(proc.pid, 0.0), 2),
        "worker_peak_rss_gb": round(max(others), 2) if others else 0.0,
        "processes": len(peaks),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cluster", default=None, help="passed to every command but generate (e.g. local)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--workdir", default=None, help="keeps the book between runs (default: a temporary one)")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args(argv)
    steps = [s for s in args.steps.split(",") if s]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}")

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="clvcast-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    book = workdir / f"book-{args.customers}-{args.seed}"
    out = workdir / ("cluster" if args.cluster else "in-process")
    out.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "BENTOML_DO_NOT_TRACK": "true",
        "TQDM_DISABLE": "1",
    }
    clvcast = str(Path(sys.executable).with_name("clvcast"))
    cluster = ["--cluster", args.cluster] if args.cluster else []
    cutoff = END
    # With a cluster, features and score write Parquet datasets (directories).
    features_out = out / ("features" if args.cluster else "features.parquet")
    scores = out / ("scores" if args.cluster else "scores.parquet")
    commands = {
        "generate": [clvcast, "generate", "--customers", str(args.customers), "--seed", str(args.seed),
                     "--start", START, "--end", END, "--out", str(book)],
        "features": [clvcast, "features", "--data", str(book), "--cutoff", cutoff, "--out", str(features_out), *cluster],
        "train": [clvcast, "train", "--data", str(book), "--promote", "force", *cluster],
        "score": [clvcast, "score", "--data", str(book), "--cutoff", cutoff, "--out", str(scores), *cluster],
        # budget has no --cluster: it reads the scores (a Parquet dataset from a cluster) in process.
        "budget": [clvcast, "budget", "--data", str(book), "--scores", str(scores), "--out", str(out / "budget")],
    }  # fmt: skip
    results: dict[str, dict] = {}
    for step in steps:
        if step == "generate" and (book / "transactions.parquet").exists():
            print(f"{step}: {book} exists, reused", file=sys.stderr)
            continue
        print(f"{step}: {' '.join(commands[step])}", file=sys.stderr)
        results[step] = _run(commands[step], env, out / f"{step}.log")
        print(f"  {results[step]}", file=sys.stderr)

    machine = f"{platform.node()}: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 1024**3:.0f} GB"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{args.customers:,} customers, {'--cluster ' + args.cluster if args.cluster else 'in-process'}; "
          f"{machine}; load {load}")  # fmt: skip
    print(f"{'step':<10}{'wall s':>9}{'peak RSS GB':>13}{'worker peak GB':>16}")
    for step, r in results.items():
        print(f"{step:<10}{r['wall_s']:>9.1f}{r['peak_rss_gb']:>13.2f}{r['worker_peak_rss_gb']:>16.2f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"customers": args.customers, "cluster": args.cluster, "machine": machine, "load": load, "steps": results}, indent=2
        ))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
