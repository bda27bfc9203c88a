"""The ``clvcast`` command: a thin layer over the stage functions.

Each command parses its flags, builds the configuration with :func:`training.config.load_config`,
calls its stage function and says what it did. The stages log their steps with ``logging``: the
command line gives clvcast's own loggers one handler on stderr, which ``--quiet`` limits to
warnings, and keeps MLflow's own messages and download bars out of them unless ``--debug``.
Errors end with a one-line cause and a non-zero exit code; ``--debug`` shows the traceback instead.
``monitor`` exits 3 when it raises an alert, ``retrain`` 3 on an alert and 4 when the new models were
not promoted (:mod:`serving.monitor.run`), so that a scheduler notices.

Importing a stage module pulls in pandas, MLflow and LightGBM (seconds of CPU): each command
imports its stage when it runs, so that ``clvcast --help`` and usage errors answer at once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import click

from training.config import load_config

# By name, not __name__: under `python -m serving.cli` that is "__main__", outside the packages shown.
log = logging.getLogger("serving.cli")

#: clvcast's packages: their loggers' records are the steps the command line shows.
PACKAGES = ("features", "training", "serving")


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


def _load(source: str, column_map: str | None, on_invalid: str, quarantine_dir: str | None):
    from features.io import load_tables  # deferred: see the module docstring

    result = load_tables(
        source,
        column_map=column_map,
        on_invalid=on_invalid,
        quarantine_dir=quarantine_dir,
        progress=log.isEnabledFor(logging.INFO),  # the loader's bar shows where the steps do
    )
    log.info("%s", result.report)
    return result.tables


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


#: ``--config FILE`` of every command that reads the configuration (:func:`training.config.load_config`).
config_option = click.option(
    "--config",
    "config_path",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="YAML or JSON file with the sections features, training, lifetime, clv, scoring, monitor and subscription and "
    "the key business (default: $CLVCAST_CONFIG, else "
    "the built-in defaults); CLVCAST_<SECTION>__<KEY> variables and this command's flags override it.",
)

#: ``--promote`` of the commands that train: the champion rule, or an explicit decision.
promote_option = click.option(
    "--promote",
    type=click.Choice(["auto", "force", "never"]),
    default="auto",
    show_default=True,
    help="auto: the new pair becomes champion only if the champion rule says so; force: it becomes champion "
    "whatever the comparison (e.g. after changing the horizon on purpose); never: register it as rejected.",
)


#: ``--cluster`` of the commands that read data: run on Dask (:mod:`serving.cluster`), else in this process.
cluster_option = click.option(
    "--cluster",
    default=None,
    metavar="local|tcp://HOST:PORT",
    help="Run on Dask: 'local' (a LocalCluster of this machine) or a scheduler address; default: "
    "$CLVCAST_DASK_SCHEDULER, else in this process.",
)


@contextlib.contextmanager
def _cluster(option: str | None, on_invalid: str = "raise") -> Iterator:
    """A Dask client when ``--cluster`` or ``CLVCAST_DASK_SCHEDULER`` asks for one, else None."""
    from serving.cluster import connect, scheduler_address  # deferred: dask is imported only to use it

    address = scheduler_address(option)
    if address is None:
        yield None
        return
    if on_invalid != "raise":
        raise click.UsageError("--on-invalid quarantine is not available with a cluster: the partitions are validated as they are read")
    with connect(address) as client:
        yield client


def _partitions(client) -> int:
    """Customer partitions of a command (at least): two per worker thread, so that a slow partition does not hold the rest."""
    return max(2, 2 * sum(client.nthreads().values()))


def _refuse_before_a_cluster(cluster: str | None, out: str | None = None, *, subscription: bool = False) -> None:
    """What ``--cluster`` cannot do, said before a cluster is started (a UsageError, exit code 2).

    ``out``: an output file option, which a cluster writes as a Parquet dataset directory.
    """
    from serving.cluster import scheduler_address  # deferred: see the module docstring

    if scheduler_address(cluster) is None:
        return
    if subscription:
        raise click.UsageError("the subscription mode is not available with --cluster yet: run without it")
    if out is not None and Path(out).suffix == ".csv":
        raise click.BadParameter(f"with --cluster, --out is a Parquet dataset directory, got {out!r}")


_SQL_SCHEMES = ("sqlite", "duckdb", "postgresql", "postgres", "mysql", "mssql", "oracle")


def _is_database(source: str) -> bool:
    return "://" in source and source.split("://", 1)[0].split("+", 1)[0] in _SQL_SCHEMES


def _cluster_tables(client, source: str, column_map, on_invalid, quarantine_dir):
    """The tables partitioned by customer on the cluster, read by the workers.

    Files and PostgreSQL, SQLite and DuckDB databases are read by the workers partition by partition
    (:func:`serving.cluster.read_tables`, :func:`serving.cluster.read_sql_tables`); another database
    (or an in-memory one) is read here, then spread (:func:`serving.cluster.scatter_tables`).
    """
    from serving.cluster import read_sql_tables, read_tables, scatter_tables, sql_partitioned  # deferred: see the module docstring

    if _is_database(source):
        why = sql_partitioned(source)
        if why is None:
            return read_sql_tables(source, min_partitions=_partitions(client), column_map=column_map).persist()
        log.info("the database is read here, then spread over the cluster by customer (%s)", why)
        return scatter_tables(_load(source, column_map, on_invalid, quarantine_dir), npartitions=_partitions(client),
                              client=client).persist()
    return read_tables(source, min_partitions=_partitions(client), column_map=column_map).persist()


def data_options(f):
    for option in reversed(_data_options):
        f = option(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clvcast", prog_name="clvcast", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show full tracebacks on error, and MLflow's own messages.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.pass_context
def cli(ctx, debug: bool, quiet: bool):
    """clvcast: churn, spend and customer lifetime value from transactions."""
    _set_offline_defaults()
    ctx.with_resource(_steps_on_stderr(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO))
    if not debug:
        # MLflow's own INFO lines (creating a new store's tables) and its download bars would
        # interleave with the steps. It reads the level when it is imported, usually during the
        # command; if it already was, its logger is set as well.
        _set_env_for_command(ctx, "MLFLOW_LOGGING_LEVEL", "WARNING")
        _set_env_for_command(ctx, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mlflow_logger = logging.getLogger("mlflow")
        ctx.call_on_close(functools.partial(mlflow_logger.setLevel, mlflow_logger.level))
        mlflow_logger.setLevel(logging.WARNING)


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


class _StepFormatter(logging.Formatter):
    """``[clvcast] message``; warnings and errors say what they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        kind = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"[clvcast] {kind}{record.message}"


@contextlib.contextmanager
def _steps_on_stderr(level: int) -> Iterator[None]:
    """clvcast's loggers at ``level`` on one stderr handler until the command ends, then as they were."""
    handler = logging.StreamHandler()  # the sys.stderr of the moment, which tests capture
    handler.setFormatter(_StepFormatter())
    loggers = [logging.getLogger(name) for name in PACKAGES]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(level)
    shown = warnings.showwarning
    # A warning of a stage is one "[clvcast] warning: ..." line like the others, not Python's two
    # lines with the file, line number and source of the call.
    warnings.showwarning = _warning_as_step
    try:
        yield
    finally:
        warnings.showwarning = shown
        for logger, previous in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(previous)


def _warning_as_step(message, category, filename, lineno, file=None, line=None) -> None:
    log.warning("%s", message)


@cli.command()
@click.option("--customers", "n_customers", type=click.IntRange(min=1), default=20_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--start", default="2021-01-01", show_default=True, help="First acquisition date.")
@click.option("--end", default="2024-12-31", show_default=True, help="Last observed date.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option(
    "--kind",
    type=click.Choice(["retail", "subscription"]),
    default="retail",
    show_default=True,
    help="Retail purchases, or a SaaS book of monthly invoices, plan changes and cancels.",
)
@click.option(
    "--truth-cutoff",
    default=None,
    callback=_parse_date,
    help="subscription: date of the per-customer truth (default: a year before --end).",
)
@click.option(
    "--truth-horizon-days",
    type=click.IntRange(min=1),
    default=182,
    show_default=True,
    help="subscription: horizon of the truth's churn probability and expected spend.",
)
def generate(
    n_customers: int, seed: int, start: str, end: str, out_dir: str, kind: str, truth_cutoff, truth_horizon_days: int
):
    """Synthetic customer book with known ground truth (Parquet tables + ground_truth.parquet).

    A subscription book also gets subscription_truth.parquet: per customer at --truth-cutoff, the
    state, the true P(cancel) and expected spend over the horizon, and the true lifetime CLV.
    """
    from features.synthetic import write_book  # deferred: see the module docstring

    if kind == "retail":
        from features.synthetic import generate as generate_book

        book = generate_book(n_customers, seed=seed, start=start, end=end)
        write_book(book, out_dir)
    else:
        from features.synthetic.truth_files import write_subscription_book

        book, truth = write_subscription_book(
            out_dir, n_customers, seed=seed, start=start, end=end, truth_cutoff=truth_cutoff,
            horizon_days=truth_horizon_days,
        )
    t = book.tables
    _echo(
        f"wrote {out_dir}: {len(t.customers):,} customers, {len(t.transactions):,} transactions, "
        f"{len(t.events):,} events"
    )
    if kind == "subscription":
        running = truth.customers["state"].isin(["active", "reactivated"])
        _echo(
            f"truth as of {truth.settings['cutoff']} over {truth.settings['horizon_days']} days: "
            f"{len(truth.customers):,} customers, {int(running.sum()):,} subscribed with mean P(cancel) "
            f"{truth.customers.loc[running, 'churn_probability'].mean():.3f}"
        )


@cli.command()
@data_options
@click.option("--cutoff", required=True, callback=_parse_date, help="Features as of the end of this day.")
@config_option
@click.option("--out", required=True, type=click.Path(), help="Output .parquet or .csv file (with --cluster: a Parquet dataset directory).")
@cluster_option
def features(source, column_map, on_invalid, quarantine_dir, cutoff, config_path, out, cluster):
    """One feature row per customer as of a cutoff date."""
    from features.build import feature_blocks  # deferred: see the module docstring

    config = load_config(config_path)
    _refuse_before_a_cluster(cluster, out)
    with _cluster(cluster, on_invalid) as client:
        if client is not None:
            from serving.cluster import features_on_cluster, write_dataset

            frame = features_on_cluster(_cluster_tables(client, source, column_map, on_invalid, quarantine_dir),
                                        cutoff=cutoff, config=config.features).persist()  # fmt: skip
            write_dataset(frame, out)
            _echo(f"wrote {out}: {len(frame):,} customers x {len(frame.columns)} features as of {cutoff} "
                  f"(Parquet dataset of {frame.npartitions} files)")  # fmt: skip
            return
    tables = _load(source, column_map, on_invalid, quarantine_dir or _default_quarantine(out))
    from features.event_types import resolve_event_types
    from features.population import customer_population

    # As a training run would: event types beyond the configured ones reported, the usable ones taken in.
    settings, event_types = resolve_event_types(config.features, tables.events, cutoff=cutoff)
    # Block by block (scoring.block_customers): the memory follows the block, not the book.
    rows, width = _write_frames(
        feature_blocks(tables, cutoff=cutoff, config=settings, block_customers=config.scoring.block_customers), out
    )
    _echo(f"wrote {out}: {rows:,} customers x {width} features as of {cutoff}")
    if event_types.unknown_events:
        _echo(f"event types: {event_types.message()}")
    # Feature rows are the buyers'; the other customers the tables know are counted, not lost.
    kinds = customer_population(tables, cutoff=cutoff)["kind"].value_counts()
    others = [f"{int(n):,} {kind}" for kind, n in kinds.items() if kind != "buyer" and n]
    if others:
        _echo(f"no feature row (no purchase by the cutoff): {', '.join(others)}")


@cli.command()
@data_options
@click.option("--cutoff", default=None, callback=_parse_date, help="Holdout cutoff (default: latest with a full horizon).")
@click.option("--horizon-days", type=click.IntRange(min=1), default=None, help="Label horizon H in days.")
@config_option
@promote_option
@cluster_option
def train(source, column_map, on_invalid, quarantine_dir, cutoff, horizon_days, config_path, promote, cluster):
    """Train churn and spend models, compare with baselines, log and register them in MLflow.

    With --cluster the training sets are built and the boosters fitted (lightgbm.dask) on the cluster;
    the holdout, the lifetime model, the baselines and MLflow stay in this process. With
    training.sample_customers as well, the workers read the book and only the sample reaches this
    process.
    """
    from training import pipeline  # deferred: see the module docstring

    config = load_config(config_path, horizon_days=horizon_days)
    with _training_tables(source, column_map, on_invalid, quarantine_dir, config, cluster) as (client, tables, sample):
        result = pipeline.train(tables, cutoff=cutoff, config=config, promote=promote, trainer=_trainer(client),
                                sample=sample)  # fmt: skip
    click.echo(pipeline.format_comparison(result))


@contextlib.contextmanager
def _training_tables(source, column_map, on_invalid, quarantine_dir, config, cluster) -> Iterator[tuple]:
    """``(client or None, tables, sample or None)`` of ``train`` and ``backtest`` until the block ends.

    With a cluster and ``training.sample_customers`` the workers read the book (files, or a database
    by key ranges, :func:`_cluster_tables`) and hand back the sample only
    (:func:`serving.cluster.sample_on_cluster`); the book is never loaded here. Else the tables are
    loaded here, before a cluster starts, and the pipeline takes the sample if one is asked for.
    """
    from serving.cluster import scheduler_address  # deferred: see the module docstring

    on_cluster = config.training.sample_customers is not None and scheduler_address(cluster) is not None
    tables = None if on_cluster else _load(source, column_map, on_invalid, quarantine_dir or "quarantine")
    with _cluster(cluster, on_invalid if on_cluster else "raise") as client:
        sample = None
        if on_cluster:
            from serving.cluster import sample_on_cluster

            tables, sample = sample_on_cluster(client, _cluster_tables(client, source, column_map, on_invalid, quarantine_dir),
                                               config.training.sample_customers)  # fmt: skip
        yield client, tables, sample


def _trainer(client):
    """The cluster's trainer of :func:`training.pipeline.evaluate`, or None (in this process)."""
    if client is None:
        return None
    from serving.cluster import ClusterTrainer  # deferred: see the module docstring

    return ClusterTrainer(client, npartitions=_partitions(client))


@cli.command()
@data_options
@click.option("--cutoff", required=True, callback=_parse_date, help="Train on data up to this day only.")
@click.option("--horizon-days", type=click.IntRange(min=1), required=True, help="Evaluation horizon H in days.")
@config_option
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Write the results here.")
@cluster_option
def backtest(source, column_map, on_invalid, quarantine_dir, cutoff, horizon_days, config_path, json_out, cluster):
    """Train up to a cutoff, predict the next H days, compare with BG/NBD and the naive rate."""
    from training import pipeline  # deferred: see the module docstring

    config = load_config(config_path, horizon_days=horizon_days)
    with _training_tables(source, column_map, on_invalid, quarantine_dir, config, cluster) as (client, tables, sample):
        result = pipeline.backtest(tables, cutoff=cutoff, horizon_days=horizon_days, config=config, trainer=_trainer(client),
                                   sample=sample)  # fmt: skip
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(result, indent=2))
        _echo(f"wrote {json_out}")
    click.echo(pipeline.format_backtest(result))


@cli.command()
@data_options
@click.option("--cutoff", required=True, callback=_parse_date, help="Score as of the end of this day.")
@click.option("--out", required=True, type=click.Path(), help="Output .parquet or .csv file (with --cluster: a Parquet dataset directory).")
@config_option
@click.option("--history", default=None, help="Also append the scoring to this history: a directory or a SQLAlchemy URL.")
@cluster_option
def score(source, column_map, on_invalid, quarantine_dir, cutoff, out, config_path, history, cluster):
    """Batch CLV for every customer from the champion models."""
    # Deferred: see the module docstring.
    from serving.scores import read_scores
    from serving.scoring import score_to_file
    from training.registry import check_registry, load_champion

    config = load_config(config_path)
    check_registry()  # completes what a killed training left, or stops with what to do
    champion = load_champion()
    _refuse_before_a_cluster(cluster, out, subscription=config.business == "subscription")
    with _cluster(cluster, on_invalid) as client:
        if client is not None:
            from serving.cluster import score_to_dataset

            tables = _cluster_tables(client, source, column_map, on_invalid, quarantine_dir)
            done = score_to_dataset(client, tables, as_of=cutoff, champion=champion, clv=config.clv, out_dir=out)
            _echo(f"wrote {out}: {done.customers:,} customers scored as of {cutoff} (Parquet dataset of {done.files} "
                  "files, partitioned by customer)")  # fmt: skip
            for left in done.run.left_out:
                _echo(f"not scored: {left.customers:,} {left.kind} ({left.reason}), first: {', '.join(left.first)}")
            if history:  # read back here: the history is appended by this process
                _append_history(read_scores(out), history, cutoff)
            return
    # Loaded here, not by serving.scoring.score, which does not hand back the load report.
    tables = _load(source, column_map, on_invalid, quarantine_dir or _default_quarantine(out))
    from serving.subscription_mode import scoring_model

    # Subscription mode (the config's, else the champion's): the contractual model scores the subscribers.
    contractual = scoring_model(tables, cutoff=cutoff, config=config, champion=champion)
    # Block by block (scoring.block_customers): the memory follows the block, not the book.
    written = score_to_file(tables, out, as_of=cutoff, champion=champion, clv=config.clv, contractual=contractual,
                            block_customers=config.scoring.block_customers)  # fmt: skip
    prospects = written.prospects
    _echo(f"wrote {out}: {written.customers:,} customers scored as of {cutoff}"
          + (f" ({prospects:,} of them prospects, without a purchase yet)" if prospects else ""))
    for left in written.run.left_out:
        _echo(f"not scored: {left.customers:,} {left.kind} ({left.reason}), first: {', '.join(left.first)}")
    if contractual is not None:
        from serving.subscription_mode import subscription_scores, write_frames

        path = Path(out).with_name(f"{Path(out).stem}_subscription")
        frame = subscription_scores(tables, cutoff=cutoff, config=config, horizon_days=written.run.horizon_days,
                                    model=contractual)
        detail = write_frames({path.name: frame}, path.parent)[path.name]
        states = _score_column(Path(out), "subscription_state").value_counts()
        _echo(f"churn, spend and CLV of {len(frame):,} subscribers from the contractual model ({contractual.settings.survival}; "
              + ", ".join(f"{int(n):,} {state}" for state, n in states.items()) + f"); its detail in {detail}")
    if history:  # read back: the scores were written block by block
        _append_history(read_scores(out), history, cutoff)


def _score_column(path: Path, name: str):
    """One column of a scores file (a pandas Series), without reading the others."""
    import pandas as pd  # deferred: see the module docstring
    import pyarrow.parquet as pq

    if path.suffix == ".csv":
        return pd.read_csv(path, usecols=[name], dtype={name: "str"})[name]

    return pq.read_table(path, columns=[name]).column(0).to_pandas()


def _append_history(scores, history: str, cutoff) -> None:
    from serving.monitor.history import append_scores  # deferred: see the module docstring

    written = append_scores(scores, history)
    verb = f"replaced the scoring of {written.replaced:,} rows" if written.replaced else "added"
    _echo(f"history {written.target}: {verb} as of {cutoff} (models v{written.key[1]}/v{written.key[2]}), "
          f"{written.rows:,} customers")


def _monitor_lines(monitored) -> list[str]:
    result = monitored.result
    lines = [f"monitor as of {result.as_of}: {len(result.scorings)} scoring date(s), data up to {result.data_end}, "
             f"{len(result.alerts)} alert(s)"]  # fmt: skip
    lines += [f"ALERT {a.message}" for a in result.alerts]
    lines.append(f"wrote {monitored.summary_path} and {monitored.report_path}")
    return lines


@cli.command()
@data_options
@click.option("--history", required=True, help="History of `clvcast score --history`: a directory or a SQLAlchemy URL.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--as-of", default=None, callback=_parse_date, help="Monitor as of this day: scorings and data up to it.")
@config_option
@cluster_option
def monitor(source, column_map, on_invalid, quarantine_dir, history, out_dir, as_of, config_path, cluster):
    """Trends, drift and realised performance of the scoring history; exit 3 on an alert.

    With --cluster the workers read the tables and reduce them per customer (the last day of the
    data, the latest scoring's features, what the customers of matured scorings then did); drift,
    performance, trends, alerts and the outputs stay in this process, with the history.
    """
    from serving.monitor.run import run_monitor  # deferred: see the module docstring

    config = load_config(config_path)
    with _cluster(cluster, on_invalid) as client:
        if client is None:
            tables = _load(source, column_map, on_invalid, quarantine_dir or str(Path(out_dir) / "quarantine"))
        else:
            from functools import partial

            from serving.cluster import monitor_inputs_on_cluster

            # The monitor reads the tables through this: the workers hand back a few values per customer.
            spread = _cluster_tables(client, source, column_map, on_invalid, quarantine_dir)
            tables = partial(monitor_inputs_on_cluster, client, spread)
        monitored = run_monitor(history, tables, out_dir, config=config, as_of=as_of)
    click.echo("\n".join(_monitor_lines(monitored)))
    return monitored.exit_code


@cli.command()
@data_options
@click.option("--history", required=True, help="The scoring history: a directory or a SQLAlchemy URL.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory: scores.parquet and monitor/.")
@click.option("--as-of", default=None, callback=_parse_date, help="Scoring date (default: the last day with a transaction).")
@click.option("--horizon-days", type=click.IntRange(min=1), default=None, help="Label horizon H in days.")
@config_option
@promote_option
def retrain(
    source, column_map, on_invalid, quarantine_dir, history, out_dir, as_of, horizon_days, config_path, promote
):
    """Train + champion rule + refit, re-score with the champion, monitor. Exit 0 ok, 3 alert, 4 not promoted."""
    from serving.monitor.run import retrain as run_retrain  # deferred: see the module docstring
    from training.pipeline import format_comparison

    config = load_config(config_path, horizon_days=horizon_days)
    tables = _load(source, column_map, on_invalid, quarantine_dir or str(Path(out_dir) / "quarantine"))
    done = run_retrain(tables, history=history, out_dir=out_dir, config=config, as_of=as_of, promote=promote)
    click.echo(format_comparison(done.train))
    click.echo(f"scored {done.history.rows:,} customers as of {done.history.key[0]} into {done.scores_path} and the history")
    click.echo("\n".join(_monitor_lines(done.monitor)))
    return done.exit_code


@cli.command()
@data_options
@click.option("--scores", required=True, type=click.Path(exists=True), help="Output of clvcast score (a file, or the dataset directory of score --cluster).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--target-ltv-cac", type=click.FloatRange(min=0, min_open=True), default=None, help="Default from config: 3.")
@config_option
@cluster_option
def budget(source, column_map, on_invalid, quarantine_dir, scores, out_dir, target_ltv_cac, config_path, cluster):
    """Channels, cohorts, forecast, segments and an HTML report for finance.

    With --cluster the workers read the tables and reduce them to a few numbers per customer
    (realised margin, BTYD summary, acquisition); the forecast's BG/NBD fit, the simulation and the
    outputs stay in this process, with the scores.
    """
    from serving.finance import compute_budget  # deferred: see the module docstring
    from serving.finance.outputs import REPORT_NAME, format_channels, write_budget, write_report
    from serving.lifetime import new_customer_curves_of_scores
    from serving.scores import read_scores
    from training.registry import load_pair, run_diagnostics

    config = load_config(config_path, target_ltv_cac=target_ltv_cac)
    scored = read_scores(scores)
    _refuse_before_a_cluster(cluster, subscription=scored.run.business == "subscription")
    with _cluster(cluster, on_invalid) as client:
        if client is None:
            tables = _load(source, column_map, on_invalid, quarantine_dir or str(Path(out_dir) / "quarantine"))
        else:
            from serving.cluster import budget_inputs_on_cluster

            # The workers read the tables and hand back what the budget reads of them (a few numbers per customer).
            tables = budget_inputs_on_cluster(client, _cluster_tables(client, source, column_map, on_invalid, quarantine_dir),
                                              scored)  # fmt: skip
    # Horizon and CLV arithmetic are the scores' own (their scoring run), whatever the config says; the
    # config decides the target LTV:CAC and the referral credit, and must agree on the arithmetic.
    # New-customer CLV from the pair that scored them: a customer acquired on the scoring date.
    # Subscription scores: the new subscriber's CLV from the contractual model the scores hold.
    saas = None
    if scored.run.business == "subscription":
        from serving.subscription_mode import new_subscriber_curves, saas_tables

        new_customers = new_subscriber_curves(tables, scored)
        saas = saas_tables(tables, cutoff=scored.run.as_of, config=config, horizon_days=scored.run.horizon_days,
                           scores=scored)
    else:
        champion = load_pair(scored.run.churn_model_version, scored.run.spend_model_version)
        new_customers = new_customer_curves_of_scores(champion, scored)
    # The BTYD diagnostics the training run logged (frequency x recency, calibration, tracking), for the report.
    result = compute_budget(
        tables, scored, decisions=config.clv, new_customers=new_customers, diagnostics=run_diagnostics(scored.run.run_id)
    )
    written = [*write_budget(result, out_dir).values(), write_report(result, Path(out_dir) / REPORT_NAME, saas=saas)]
    if saas is not None:
        from serving.subscription_mode import write_frames

        written += list(write_frames(saas, out_dir).values())
    _echo(f"wrote {out_dir}: " + ", ".join(sorted(p.name for p in written)))
    click.echo(format_channels(result))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback by default.")
@click.option("--port", type=click.IntRange(1, 65535), default=3000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--scores", default=None, type=click.Path(exists=True, dir_okay=False),
              help="A `clvcast score` file: CLV tiers and RFM segments are relative to it.")
@click.option("--new-customer-clv", default=None, type=click.Path(exists=True, dir_okay=False),
              help="new_customer_clv.csv of `clvcast budget`, for POST /acquisition_budget.")
def serve(host: str, port: int, workers: int, scores: str | None, new_customer_clv: str | None):
    """Serve POST /clv, POST /acquisition_budget and GET /model over HTTP (BentoML) until Ctrl-C."""
    from serving import service  # deferred: see the module docstring

    if log.isEnabledFor(logging.INFO):
        log.info("starting the service on http://%s:%d with %d worker(s); each loads the champion first",
                 host, port, workers)  # fmt: skip
        threading.Thread(target=_say_when_ready, args=(host, port, time.monotonic()), daemon=True).start()
    # The service's startup check runs in this process before any worker starts: a missing or
    # incompatible champion ends here with the one-line cause.
    with _not_propagated():
        service.serve(host=host, port=port, workers=workers, scores=scores, new_customer_clv=new_customer_clv)


@contextlib.contextmanager
def _not_propagated() -> Iterator[None]:
    """clvcast's loggers stop at the command's own handler until the block ends, then as they were.

    ``bentoml.serve`` applies BentoML's logging config to this process, which puts a handler on the
    root logger: a message of the service's startup (the "no API keys" warning) was printed by both,
    in two formats. Only the commands that start the service (``clvcast serve``, ``clvcast demo``)
    need this; every other command leaves the root logger its records (a scheduler's log file, a
    test's ``caplog``).
    """
    loggers = [logging.getLogger(name) for name in PACKAGES]
    saved = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.propagate = False
    try:
        yield
    finally:
        for logger, propagate in zip(loggers, saved, strict=True):
            logger.propagate = propagate


def _say_when_ready(host: str, port: int, started: float, *, timeout: float = 300.0) -> None:
    """Say on stderr when ``GET /readyz`` answers 200: every worker has loaded the champion.

    BentoML's start-up silences clvcast's loggers while it serves, so this writes directly.
    """
    import httpx  # deferred: see the module docstring

    probe = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{probe}:{port}"
    while time.monotonic() - started < timeout:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                _echo(f"[clvcast] ready after {time.monotonic() - started:.1f} s: POST {url}/clv, "
                      f"the API page at {url}/")  # fmt: skip
                return
        time.sleep(0.5)
    _echo(f"[clvcast] warning: {url}/readyz did not answer 200 within {timeout:.0f} s (see the workers' log above)")


@cli.group()
def registry():
    """Check and repair the model registry; make a training run's pair the champion."""


@registry.command("check")
@click.option("--no-repair", is_flag=True, help="Only report; change nothing.")
def registry_check(no_repair: bool):
    """Find interrupted champion changes, half-registered pairs, split aliases and abandoned runs.

    Repairs what it can (the training and serving commands do the same before they start) and
    exits with code 2, naming the command to run, when a person must decide.
    """
    from training import registry as reg  # deferred: see the module docstring

    found = reg.check_registry(repair=not no_repair)
    for line in found.repaired:
        _echo(f"repaired: {line}")
    for line in found.unresolved:
        _echo(f"to do: {line}")
    pair = reg.champion_versions()
    click.echo(
        "no champion" if pair is None else f"champion: {reg.CHURN_MODEL} v{pair[0]}, {reg.SPEND_MODEL} v{pair[1]}"
    )
    if not found.ok:
        raise click.exceptions.Exit(2)


@registry.command("promote")
@click.option("--run", "run_id", required=True, help="The MLflow run whose registered pair becomes champion.")
def registry_promote(run_id: str):
    """Make the churn and spend versions of one training run the champion (both aliases at once)."""
    from training import registry as reg  # deferred: see the module docstring

    churn, spend = reg.promote_run(run_id)
    click.echo(f"champion: {reg.CHURN_MODEL} v{churn}, {reg.SPEND_MODEL} v{spend} (run {run_id})")


@cli.command()
@click.option("--customers", "n_customers", type=click.IntRange(min=100), default=20_000, show_default=True)
@click.option("--out", "out_dir", default="demo-output", show_default=True, type=click.Path(file_okay=False))
@click.option("--port", type=click.IntRange(1, 65535), default=3000, show_default=True)
def demo(n_customers: int, out_dir: str, port: int):
    """Generate data, train, score, budget, serve, and send one real request.

    Keeps serving until Ctrl-C, or exits after the request when DEMO_EXIT=1.
    """
    from serving.demo import run_demo  # deferred: see the module docstring

    with _not_propagated():  # its last step starts the service, as `clvcast serve` does
        run_demo(n_customers=n_customers, out_dir=Path(out_dir), port=port)


def _default_quarantine(out: str) -> str:
    return str(Path(out).with_suffix("")) + ".quarantine"


def _write_frames(frames, out: str) -> tuple[int, int]:
    """Write frames one after the other into one file, as ``to_csv`` / ``to_parquet`` of them all would; (rows, columns).

    Parquet: one row group per frame, all with the first frame's schema.
    """
    import pyarrow as pa  # deferred: see the module docstring
    import pyarrow.parquet as pq

    path = Path(out)
    if path.suffix not in (".csv", ".parquet"):
        raise click.BadParameter(f"--out must end in .parquet or .csv, got {out!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, width, writer, schema = 0, 0, None, None
    try:
        for i, frame in enumerate(frames):
            if path.suffix == ".csv":
                frame.to_csv(path, mode="a" if i else "w", header=not i)
            else:
                if writer is None:
                    table = pa.Table.from_pandas(frame)
                    schema = table.schema
                    writer = pq.ParquetWriter(path, schema)
                else:
                    table = pa.Table.from_pandas(frame, schema=schema)
                writer.write_table(table)
            rows, width = rows + len(frame), frame.shape[1]
    finally:
        if writer is not None:
            writer.close()
    return rows, width


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command group, turning errors into a one-line cause and exit code 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        # A command may return its exit code (monitor: 3 on an alert, click.exceptions.Exit's code without
        # standalone mode); the others return None.
        code = cli.main(args=args, prog_name="clvcast", standalone_mode=False)
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
        # A store fault's message is the whole story (store and cause); other errors may need the traceback.
        expected = isinstance(exc, (ValueError, FileNotFoundError, LookupError, ConnectionError)) or type(exc).__name__ == "StoreError"
        if len(lines) == 1 and not expected:
            _echo(f"       ({type(exc).__name__}; rerun with --debug for the traceback)")
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
