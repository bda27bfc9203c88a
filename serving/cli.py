"""The ``clvcast`` command: thin wrappers around the stage functions.

Each command parses its flags, calls one stage function and prints what it did. Errors end with a
one-line cause and a non-zero exit code; ``--debug`` shows the full traceback instead. Heavy
libraries are imported inside the commands so that ``clvcast --help`` stays instant.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from datetime import date
from pathlib import Path

import click

DEFAULT_SERVICE = "serving.service:ClvService"


class _Context:
    def __init__(self, debug: bool, quiet: bool):
        self.debug = debug
        self.quiet = quiet


def _echo(msg: str = "") -> None:
    click.echo(msg, err=True)


def _parse_date(ctx, param, value):
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected a date YYYY-MM-DD, got {value!r}") from None


def _set_offline_defaults() -> None:
    # The commands run where there may be no internet: never let the libraries phone home.
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")


def _load(source: str, column_map: str | None, on_invalid: str, quarantine_dir: str | None, quiet: bool):
    from features.io import load_tables, parse_column_map

    mapping = parse_column_map(column_map) if column_map else None
    result = load_tables(
        source,
        column_map=mapping,
        on_invalid=on_invalid,
        quarantine_dir=quarantine_dir,
        progress=not quiet,
    )
    report = getattr(result, "report", None)
    if report is not None and not quiet and str(report):
        _echo(str(report))
    return result.tables if hasattr(result, "tables") else result


_data_options = [
    click.option("--data", "source", required=True, help="Directory of CSV/Parquet tables, or a SQLAlchemy URL."),
    click.option("--column-map", default=None, help="Column mapping: a YAML/JSON file or 'table.src=dst,...'."),
    click.option(
        "--on-invalid",
        type=click.Choice(["raise", "quarantine"]),
        default="raise",
        show_default=True,
        help="Stop on invalid rows, or set them aside in a quarantine file with the reason per row.",
    ),
    click.option("--quarantine-dir", default=None, help="Where quarantined rows go (default: <out>/quarantine)."),
]


def data_options(f):
    for option in reversed(_data_options):
        f = option(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on error.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.pass_context
def cli(ctx, debug: bool, quiet: bool):
    """clvcast: churn, spend and customer lifetime value from transactions."""
    _set_offline_defaults()
    ctx.obj = _Context(debug=debug, quiet=quiet)
    if quiet:
        # MLflow draws its own progress bar when it downloads artifacts (loading a champion).
        _set_env_for_command(ctx, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _set_env_for_command(ctx, name: str, value: str) -> None:
    """Set an environment variable until the command ends (``main`` may run in a longer process)."""
    previous = os.environ.get(name)
    os.environ[name] = value

    def restore() -> None:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous

    ctx.call_on_close(restore)


@cli.command()
@click.option("--customers", "n_customers", type=click.IntRange(min=1), default=20_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--start", default="2021-01-01", show_default=True, help="First acquisition date.")
@click.option("--end", default="2024-12-31", show_default=True, help="Last observed date.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.pass_obj
def generate(obj: _Context, n_customers: int, seed: int, start: str, end: str, out_dir: str):
    """Synthetic customer book with known ground truth (Parquet tables + ground_truth.parquet)."""
    from features.synthetic import generate as generate_book
    from features.synthetic import write_book

    book = generate_book(n_customers, seed=seed, start=start, end=end)
    write_book(book, out_dir)
    t = book.tables
    _echo(
        f"wrote {out_dir}: {len(t.customers):,} customers, {len(t.transactions):,} transactions, "
        f"{len(t.events):,} events"
    )


@cli.command()
@data_options
@click.option("--cutoff", required=True, callback=_parse_date, help="Features as of the end of this day.")
@click.option("--config", "config_path", default=None, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .parquet or .csv file.")
@click.pass_obj
def features(obj: _Context, source, column_map, on_invalid, quarantine_dir, cutoff, config_path, out):
    """One feature row per customer as of a cutoff date."""
    from features.build import build_features
    from training.config import load_config

    config = load_config(config_path)
    tables = _load(source, column_map, on_invalid, quarantine_dir or _default_quarantine(out), obj.quiet)
    frame = build_features(tables, cutoff=cutoff, config=config.features)
    _write_frame(frame, out)
    _echo(f"wrote {out}: {len(frame):,} customers x {frame.shape[1]} features as of {cutoff}")


@cli.command()
@data_options
@click.option("--cutoff", default=None, callback=_parse_date, help="Holdout cutoff (default: latest with a full horizon).")
@click.option("--horizon-days", type=click.IntRange(min=1), default=None, help="Label horizon H in days.")
@click.option("--config", "config_path", default=None, type=click.Path(exists=True, dir_okay=False))
@click.pass_obj
def train(obj: _Context, source, column_map, on_invalid, quarantine_dir, cutoff, horizon_days, config_path):
    """Train churn and spend models, compare with baselines, log and register them in MLflow."""
    from training.config import load_config
    from training.pipeline import format_comparison, train as train_models

    config = load_config(config_path, horizon_days=horizon_days)
    tables = _load(source, column_map, on_invalid, quarantine_dir or "quarantine", obj.quiet)
    result = train_models(tables, cutoff=cutoff, config=config, progress=not obj.quiet)
    click.echo(format_comparison(result))


@cli.command()
@data_options
@click.option("--cutoff", required=True, callback=_parse_date, help="Train on data up to this day only.")
@click.option("--horizon-days", type=click.IntRange(min=1), required=True, help="Evaluation horizon H in days.")
@click.option("--config", "config_path", default=None, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Write the results here.")
@click.pass_obj
def backtest(obj: _Context, source, column_map, on_invalid, quarantine_dir, cutoff, horizon_days, config_path, json_out):
    """Train up to a cutoff, predict the next H days, compare with BG/NBD and the naive rate."""
    from training.config import load_config
    from training.pipeline import backtest as run_backtest
    from training.pipeline import format_backtest

    config = load_config(config_path, horizon_days=horizon_days)
    tables = _load(source, column_map, on_invalid, quarantine_dir or "quarantine", obj.quiet)
    result = run_backtest(tables, cutoff=cutoff, horizon_days=horizon_days, config=config, progress=not obj.quiet)
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(result, indent=2))
        _echo(f"wrote {json_out}")
    click.echo(format_backtest(result))


@cli.command()
@data_options
@click.option("--cutoff", required=True, callback=_parse_date, help="Score as of the end of this day.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .parquet or .csv file.")
@click.option("--config", "config_path", default=None, type=click.Path(exists=True, dir_okay=False))
@click.pass_obj
def score(obj: _Context, source, column_map, on_invalid, quarantine_dir, cutoff, out, config_path):
    """Batch CLV for every customer from the champion models."""
    from serving.scores import write_scores
    from serving.scoring import score_tables
    from training.config import load_config
    from training.registry import load_champion

    config = load_config(config_path)
    champion = load_champion()
    tables = _load(source, column_map, on_invalid, quarantine_dir or _default_quarantine(out), obj.quiet)
    scores = score_tables(tables, as_of=cutoff, champion=champion, clv=config.clv)
    write_scores(scores, out)
    _echo(f"wrote {out}: {len(scores.frame):,} customers scored as of {cutoff}")


@cli.command()
@data_options
@click.option("--scores", required=True, type=click.Path(exists=True, dir_okay=False), help="Output of clvcast score.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--target-ltv-cac", type=click.FloatRange(min=0, min_open=True), default=None, help="Default from config: 3.")
@click.option("--config", "config_path", default=None, type=click.Path(exists=True, dir_okay=False))
@click.pass_obj
def budget(obj: _Context, source, column_map, on_invalid, quarantine_dir, scores, out_dir, target_ltv_cac, config_path):
    """Channels, cohorts, forecast, segments and an HTML report for finance."""
    from serving.finance import compute_budget
    from serving.finance.outputs import REPORT_NAME, write_budget, write_report
    from serving.scores import read_scores
    from training.config import load_config

    config = load_config(config_path, target_ltv_cac=target_ltv_cac)
    scored = read_scores(scores)
    tables = _load(source, column_map, on_invalid, quarantine_dir or str(Path(out_dir) / "quarantine"), obj.quiet)
    # Horizon and CLV arithmetic are the scores' own (their scoring run), whatever the config says; the
    # config decides the target LTV:CAC and the referral credit, and must agree on the arithmetic.
    result = compute_budget(tables, scored, decisions=config.clv)
    written = [*write_budget(result, out_dir).values(), write_report(result, Path(out_dir) / REPORT_NAME)]
    _echo(f"wrote {out_dir}: " + ", ".join(sorted(p.name for p in written)))
    click.echo(result.summary)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback by default.")
@click.option("--port", type=click.IntRange(1, 65535), default=3000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--scores", default=None, type=click.Path(exists=True, dir_okay=False),
              help="A `clvcast score` file: CLV tiers and RFM segments are relative to it.")
@click.option("--new-customer-clv", default=None, type=click.Path(exists=True, dir_okay=False),
              help="new_customer_clv.csv of `clvcast budget`, for POST /acquisition_budget.")
@click.pass_obj
def serve(obj: _Context, host: str, port: int, workers: int, scores: str | None, new_customer_clv: str | None):
    """Serve POST /clv, POST /acquisition_budget and GET /model over HTTP (BentoML)."""
    from serving.service import NEW_CUSTOMER_CLV_ENV, SCORES_ENV
    from training.registry import load_champion

    # Fail here with the one-line cause rather than inside a BentoML worker's traceback.
    load_champion()
    extra = {}
    if scores:
        extra[SCORES_ENV] = str(Path(scores).resolve())
    if new_customer_clv:
        extra[NEW_CUSTOMER_CLV_ENV] = str(Path(new_customer_clv).resolve())
    cmd, env = serve_command(host=host, port=port, workers=workers, extra_env=extra)
    os.execvpe(cmd[0], cmd, env)


def serve_command(
    *, host: str, port: int, workers: int = 1, extra_env: dict | None = None, service: str = DEFAULT_SERVICE
) -> tuple[list[str], dict]:
    """The ``bentoml serve`` command line and environment for the clvcast service.

    ``extra_env`` is laid over the current environment; a ``None`` value removes the variable.
    """
    # `bentoml serve` has no worker-count flag in 1.4: the service config override sets it.
    env = {
        **os.environ,
        "BENTOML_CONFIG_OVERRIDES": json.dumps({"services": {"clvcast": {"workers": workers}}}),
        **(extra_env or {}),
    }
    cmd = [sys.executable, "-m", "bentoml", "serve", service, "--host", host, "--port", str(port)]
    return cmd, {k: v for k, v in env.items() if v is not None}


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_service(
    *, log_path: Path, timeout: float, workers: int = 1, extra_env: dict | None = None,
    service: str = DEFAULT_SERVICE, cwd: Path | None = None,
):  # fmt: skip
    """``bentoml serve`` on a free loopback port, in its own process group; yields its base URL.

    The server's output goes to ``log_path``. On leaving, the whole process group is stopped
    (SIGTERM, then SIGKILL after 20 s).

    Raises
    ------
    RuntimeError
        The server exited or was not ready within ``timeout`` seconds; the message ends with the
        last 3,000 characters of its log.
    """
    import signal
    import subprocess

    port = free_port()
    cmd, env = serve_command(host="127.0.0.1", port=port, workers=workers, extra_env=extra_env, service=service)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_ready(base, proc, timeout=timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}:\n{Path(log_path).read_text()[-3000:]}") from None
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_until_ready(url: str, proc, *, timeout: float, poll_s: float = 0.25) -> None:
    """Block until ``GET {url}/readyz`` answers 200.

    Raises
    ------
    RuntimeError
        ``proc`` (the ``bentoml serve`` process) exited first.
    TimeoutError
        Not ready after ``timeout`` seconds.
    """
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"the service at {url} was not ready after {timeout:.0f} s")
        time.sleep(poll_s)


@cli.command()
@click.option("--customers", "n_customers", type=click.IntRange(min=100), default=20_000, show_default=True)
@click.option("--out", "out_dir", default="demo-output", show_default=True, type=click.Path(file_okay=False))
@click.option("--port", type=click.IntRange(1, 65535), default=3000, show_default=True)
@click.pass_obj
def demo(obj: _Context, n_customers: int, out_dir: str, port: int):
    """Generate data, train, score, budget, serve, and send one real request.

    Keeps serving until Ctrl-C, or exits after the request when DEMO_EXIT=1.
    """
    from serving.demo import run_demo

    run_demo(n_customers=n_customers, out_dir=Path(out_dir), port=port, progress=not obj.quiet)


def _default_quarantine(out: str) -> str:
    return str(Path(out).with_suffix("")) + ".quarantine"


def _write_frame(frame, out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        frame.to_csv(path)
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        raise click.BadParameter(f"--out must end in .parquet or .csv, got {out!r}")



def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command group, turning errors into a one-line cause and exit code 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="clvcast", standalone_mode=False)
    except click.exceptions.Abort:
        _echo("aborted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        _echo("interrupted")
        return 130
    except Exception as exc:  # the CLI boundary: every failure becomes a one-line cause
        if debug:
            raise
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        if len(lines) > 1 and type(exc).__name__ == "DataValidationError":
            lines.insert(0, f"invalid input data, {len(lines)} rule(s) broken; nothing was written "
                            "(--on-invalid quarantine sets bad rows aside instead):")
        _echo(f"error: {lines[0]}")
        for line in lines[1:]:
            _echo(f"       {line}")
        if len(lines) == 1 and not isinstance(exc, (ValueError, FileNotFoundError, LookupError)):
            _echo(f"       ({type(exc).__name__}; rerun with --debug for the traceback)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
