"""``clvcast demo``: the whole loop on a synthetic book, from raw tables to an HTTP answer.

Steps: generate a book (skipped when the output directory already holds one), train and register
both models in MLflow, score every customer, write the finance report, start the BentoML service
on loopback and send it one real ``POST /clv`` request. Then it keeps serving until Ctrl-C, or
stops at once when ``DEMO_EXIT=1``. The steps are logged; the tables and the answer are printed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import click
import httpx
import pandas as pd

from features.io import load_tables
from features.synthetic import generate, write_book
from serving.finance import compute_budget
from serving.finance.outputs import REPORT_NAME, format_channels, write_budget, write_report
from serving.lifetime import new_customer_curves_of_scores
from serving.scores import write_scores
from serving.scoring import score_tables
from serving.service import running_service
from training.config import load_config
from training.pipeline import format_comparison, train
from training.registry import load_champion, run_diagnostics, tracking_uri

log = logging.getLogger(__name__)

#: How many customers the example request carries.
EXAMPLE_CUSTOMERS = 2


def example_request(tables, *, as_of: pd.Timestamp, n: int = EXAMPLE_CUSTOMERS) -> dict:
    """A ``POST /clv`` body with the full history of the ``n`` customers that bought most recently."""
    tx = tables.transactions
    ids = tx.sort_values("timestamp")["customer_id"].drop_duplicates(keep="last").tail(n).tolist()
    customers = []
    for cid in ids:
        t = tx.loc[tx["customer_id"] == cid].sort_values("timestamp")
        ev = tables.events.loc[tables.events["customer_id"] == cid].sort_values("timestamp").tail(200)
        attrs = {}
        if tables.customers is not None:
            row = tables.customers.loc[tables.customers["customer_id"] == cid]
            if len(row):
                rec = row.iloc[0]
                for col in ("channel", "acquisition_cost", "acquired_at"):
                    if col in row and pd.notna(rec[col]):
                        attrs[col] = str(rec[col].date()) if col == "acquired_at" else rec[col]
                attrs = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in attrs.items()}
        customers.append(
            {
                "customer_id": cid,
                "transactions": [
                    {"timestamp": ts.isoformat(), "amount": round(float(a), 2)}
                    for ts, a in zip(t["timestamp"], t["amount"], strict=True)
                ],
                "events": [
                    {"timestamp": ts.isoformat(), "event_type": e}
                    for ts, e in zip(ev["timestamp"], ev["event_type"], strict=True)
                ],
                "attributes": attrs,
            }
        )
    return {"customers": customers, "as_of": str(as_of.date())}


def _summarise_request(body: dict) -> str:
    parts = [
        f"{c['customer_id']}: {len(c['transactions'])} transactions, {len(c['events'])} events"
        for c in body["customers"]
    ]
    return f"as_of {body['as_of']}; " + "; ".join(parts)


def run_demo(*, n_customers: int, out_dir: Path, port: int) -> None:
    """Run the demo; see the module docstring.

    Parameters
    ----------
    n_customers : int
        Size of the synthetic book.
    out_dir : Path
        Where the book (``data/``), ``scores.parquet`` and ``budget/`` go.
    port : int
        Loopback port of the service.

    Raises
    ------
    httpx.HTTPStatusError
        The example request was not answered with a 2xx.
    bentoml.exceptions.ServiceUnavailable
        The service was not ready in time.
    """
    out_dir = Path(out_dir)
    data_dir = out_dir / "data"
    config = load_config()

    log.info("1/5 synthetic book of %s customers -> %s", f"{n_customers:,}", data_dir)
    if (data_dir / "transactions.parquet").exists():
        log.info("(already there: reusing it; delete the directory to regenerate)")
    else:
        write_book(generate(n_customers, seed=0), data_dir)
    tables = load_tables(data_dir).tables
    log.info(
        "%s customers, %s transactions, %s events",
        f"{len(tables.customers):,}", f"{len(tables.transactions):,}", f"{len(tables.events):,}",
    )  # fmt: skip

    log.info("2/5 training churn and spend models (MLflow: %s)", tracking_uri())
    result = train(tables, config=config)
    click.echo(format_comparison(result))

    log.info("3/5 scoring every customer with the champion")
    as_of = tables.transactions["timestamp"].max().normalize()
    champion = load_champion()
    scored = score_tables(tables, as_of=as_of, champion=champion, clv=config.clv)
    write_scores(scored, out_dir / "scores.parquet")
    scores = scored.frame
    log.info(
        "%s: %s customers as of %s, total lifetime CLV %s",
        out_dir / "scores.parquet", f"{len(scores):,}", as_of.date(), f"{scores['clv'].sum():,.0f}",
    )  # fmt: skip

    log.info("4/5 finance: LTV:CAC by channel, cohorts, forecast, segments")
    finance = compute_budget(
        tables, scored, decisions=config.clv, new_customers=new_customer_curves_of_scores(champion, scored),
        diagnostics=run_diagnostics(scored.run.run_id),
    )  # fmt: skip
    write_budget(finance, out_dir / "budget")
    report = write_report(finance, out_dir / "budget" / REPORT_NAME)
    click.echo(format_channels(finance))
    log.info("report: %s", report.resolve())

    log.info("5/5 serving on http://127.0.0.1:%d", port)
    with running_service(
        port=port,
        tracking_uri=tracking_uri(),
        # Segments relative to the scored base, and new-customer CLV for /acquisition_budget.
        scores=out_dir / "scores.parquet",
        new_customer_clv=out_dir / "budget" / "new_customer_clv.csv",
    ) as server:
        body = example_request(tables, as_of=as_of)
        log.info("POST %s/clv  (%s)", server.url, _summarise_request(body))
        started = time.perf_counter()
        response = httpx.post(f"{server.url}/clv", json=body, timeout=30.0)
        log.info("-> HTTP %d in %.0f ms", response.status_code, (time.perf_counter() - started) * 1000)
        click.echo(json.dumps(response.json(), indent=2))
        response.raise_for_status()
        if os.environ.get("DEMO_EXIT") == "1":
            log.info("DEMO_EXIT=1: stopping the service.")
            return
        log.info(
            "Serving on %s (OpenAPI at %s/docs.json, UI at %s/). MLflow UI: mlflow ui --backend-store-uri %s"
            "  — Ctrl-C to stop.",
            server.url, server.url, server.url, tracking_uri(),
        )  # fmt: skip
        while server.running:  # until Ctrl-C or SIGTERM, which stop the server
            time.sleep(1)
    log.info("the service has stopped")
