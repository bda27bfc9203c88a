"""Lifetime-model variants on a trained champion: the dropout process by channel and the persistence weights.

Usage (development books only, never the benchmark's seeds 0 and 1)::

    .venv/bin/python benchmarks/bench_lifetime.py --seeds 2,3 --parts synthetic --work DIR
    .venv/bin/python benchmarks/lifetime_variants.py --work DIR --seeds 2,3 \\
        --variants one@1/0,channel@1/0,channel@1/0.25,channel@1/0.5,one@1/0.5

``bench_lifetime.py`` trains a champion per seed with the issue's protocol (train at 2019-06-30,
score at 2019-12-31) into ``DIR/mlflow-SEED``. The boosters do not depend on the lifetime model, so
each variant here refits only the dropout process on the history up to the training cutoff
(``one``: one process for every customer, fitted in calendar time; ``channel``: by channel,
:mod:`features.btyd.covariates`; ``dropout``: by channel with the dropout rate alone;
``seasonal``: one process fitted with purchases on the seasonal clock,
``fit_lifetime(seasonal_fit=True)``; ``seasonal-channel``: that fit by channel, the channels'
effects fitted with the season too; ``seasonal-orders`` and ``seasonal-channel-orders``: the same
counting each order as a purchase, not each purchase day, ``fit_lifetime(count="orders")``;
``seasonal-empirical`` and ``seasonal-channel-empirical``: Gamma-Gamma's mean scaled to the repeat
buyers' mean value, ``fit_lifetime(value_mean="empirical")``, training's default since 2026-12-01;
every other process keeps Gamma-Gamma's own mean, ``fit_lifetime``'s default), sets the
persistence weights ``@alive/level`` (:class:`training.config.LifetimeConfig`), and scores again:

- the scored base: lifetime CLV ÷ the realised discounted margin, each horizon's expected spend ÷
  what was spent, and the lifetime CLV ÷ realised per channel;
- new customers: the customers acquired in the 182 days after the scoring date, their value from
  acquisition against the champion's new-customer CLV for their channel and day
  (``bench_lifetime.new_customers``), valued as ``--new-customers`` says (``process``, the
  default: the process by channel with the season, as training fits it; ``champion``: made-up
  customers scored by the champion).

Prints one JSON line per (seed, variant) and a table; ``--json`` writes them all. Each (seed,
variant) is also a run of the MLflow experiment ``clvcast-lifetime-variants`` in the seed's
store (``DIR/mlflow-SEED``), with the settings as params and the ratios as metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

#: Suffixes of ``seasonal`` and ``seasonal-channel``: fit_lifetime's arguments they stand for.
OPTIONS = {"orders": {"count": "orders"}, "empirical": {"value_mean": "empirical"}}
PROCESSES = {"one": None, "channel": ("purchase", "dropout"), "dropout": ("dropout",), "seasonal": None,
             "seasonal-channel": ("purchase", "dropout")}
PROCESSES |= {f"{base}-{option}": PROCESSES[base] for base in ("seasonal", "seasonal-channel") for option in OPTIONS}


def _options(process: str) -> tuple[str, dict]:
    """(``process`` without its option suffix, fit_lifetime's arguments of the suffix)."""
    for option, kwargs in OPTIONS.items():
        if process.endswith(f"-{option}"):
            return process.removesuffix(f"-{option}"), kwargs
    return process, {}


def _params(h, process: str):
    """The dropout process of a variant, fitted on the history ``h`` at the training cutoff."""
    import features.btyd.lifetime as L

    base, options = _options(process)
    if base in ("seasonal", "seasonal-channel"):  # with the season, and the suffix's option if any
        return L.fit_lifetime(h, level_column="channel" if base == "seasonal-channel" else None, seasonal_fit=True, **options)
    if process == "one":
        return L.fit_lifetime(h, level_column=None, seasonal_fit=False)  # in calendar time
    if process == "channel":
        return L.fit_lifetime(h, level_column="channel", seasonal_fit=False)  # in calendar time
    # The dropout rate alone by channel: refit with the purchase and value effects held at 0.
    fit_pn, fit_gg = L.fit_pareto_nbd_by_level, L.fit_gamma_gamma_by_level
    L.fit_pareto_nbd_by_level = lambda *a, **k: fit_pn(*a, **{**k, "effects": PROCESSES[process]})
    L.fit_gamma_gamma_by_level = lambda x, m, codes, n, *, start, prior_sd=1.0: (start, [start] * n)
    try:
        return L.fit_lifetime(h, level_column="channel", seasonal_fit=False)
    finally:
        L.fit_pareto_nbd_by_level, L.fit_gamma_gamma_by_level = fit_pn, fit_gg


def run_seed(work: Path, seed: int, variants: list[str], fit_cutoff: str | None = None,
             new_customers: str = "process") -> list[dict]:
    import bench_lifetime as B

    from features.dates import history_until
    from features.history import prepare_history
    from features.synthetic import read_book
    from serving import clv as C
    from serving.scoring import champion_clv_config, score_columns
    from training import registry

    store = work / f"mlflow-{seed}"
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    trained = registry.load_champion()
    book = read_book(work / f"book-{seed}")
    fit_cutoff = fit_cutoff or B.TRAIN_CUTOFF
    h_train = prepare_history(history_until(book.tables, fit_cutoff), fit_cutoff)
    scored_history = history_until(book.tables, B.AS_OF)
    fitted: dict[str, object] = {}
    out = []
    load = registry.load_champion
    for variant in variants:
        t0 = time.perf_counter()
        process, _, weights = variant.partition("@")
        if process not in fitted:
            fitted[process] = _params(h_train, process)
        alive, level = (float(w) for w in weights.split("/"))
        # New customers as training would value them (lifetime.new_customers): by the process by
        # channel with the season, the variant's own fit when it is that one (with the variant's
        # option, when it has one).
        suffix = process.removeprefix(_options(process)[0])
        new_process = f"seasonal-channel{suffix}"
        if new_customers == "process" and new_process not in fitted:
            fitted[new_process] = _params(h_train, new_process)
        lifetime = trained.lifetime.model_copy(
            update={"params": fitted[process], "alive_persistence": alive, "level_persistence": level,
                    "new_customer_params": fitted[new_process] if new_customers == "process" else None}
        )
        champion = dataclasses.replace(trained, serving=trained.serving.model_copy(update={"lifetime": lifetime}))
        clv = champion_clv_config(champion)
        H, K = champion.horizon_days, clv.lifetime_horizons
        cols = score_columns(scored_history, as_of=B.AS_OF, champion=champion, top_drivers=0)
        ids = pd.Index(cols["customer_id"]).astype("str")
        real = B.realised_horizons(book.tables.transactions, ids, as_of=B.AS_OF, horizon_days=H, n_horizons=K)
        curve = np.vstack(cols["expected_spend_curve"])
        discount = (1 + C.discount_per_horizon(H, clv.annual_discount_rate)) ** -np.arange(1, K + 1)
        realised_clv = clv.gross_margin * real @ discount
        clv_pred = np.asarray(cols["clv"], dtype=float)
        channel = np.asarray(pd.Series(cols["channel"]).astype("str"))
        registry.load_champion = lambda chosen=champion, **_: chosen  # bench_lifetime.new_customers loads the champion
        try:
            new = B.new_customers(book, store, horizon_days=H, clv=clv)
        finally:
            registry.load_champion = load
        ratios = curve.sum(axis=0) / real.sum(axis=0)
        row = {
            "seed": seed,
            "variant": variant,
            "new_customers": new_customers,
            "lifetime_ratio": float(clv_pred.sum() / realised_clv.sum()),
            "max_horizon_error": float(np.abs(ratios - 1).max()),
            "horizon_ratios": [round(float(r), 3) for r in ratios],
            "channel_lifetime_ratio": {c: round(float(clv_pred[channel == c].sum() / realised_clv[channel == c].sum()), 3)
                                       for c in sorted(set(channel))},
            "new_customer_ratio": {c: round(v["predicted"] / v["realised"], 3) for c, v in new.items() if isinstance(v, dict)},
            # Against the cohorts' own expectation (the generator's rates of those very customers).
            "new_customer_ratio_expected": {c: round(v["predicted"] / v["oracle"], 3) for c, v in new.items() if isinstance(v, dict)},
            "lifetime_days": round(float(np.mean(cols["expected_lifetime_days"])), 1),
            "lifetime_days_truth": round(float(_remaining_days(book.truth, ids, B.AS_OF, H * K).mean()), 1),
            "seconds": round(time.perf_counter() - t0, 1),
        }  # fmt: skip
        if fitted[process].by_level is not None:
            row["multipliers"] = {k: {a: round(b, 3) for a, b in v.items()} for k, v in fitted[process].by_level.rate_multipliers().items()}
        row["run_id"] = _log_to_mlflow(row, fit_cutoff, fitted[process])
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def _log_to_mlflow(row: dict, fit_cutoff: str, params) -> str:
    """One run per (seed, variant) in the experiment ``clvcast-lifetime-variants`` of the seed's store."""
    import mlflow

    mlflow.set_experiment("clvcast-lifetime-variants")
    process, _, weights = row["variant"].partition("@")
    alive, level = weights.split("/")
    metrics = {
        "lifetime_ratio": row["lifetime_ratio"], "max_horizon_error": row["max_horizon_error"],
        "lifetime_days": row["lifetime_days"], "lifetime_days_truth": row["lifetime_days_truth"],
        **{f"horizon_{k}_ratio": v for k, v in enumerate(row["horizon_ratios"], start=1)},
        **{f"channel_lifetime_ratio.{c}": v for c, v in row["channel_lifetime_ratio"].items()},
        **{f"new_customer_ratio.{c}": v for c, v in row["new_customer_ratio"].items()},
        "pareto_s": params.pareto.s, "pareto_beta": params.pareto.beta,
    }  # fmt: skip
    with mlflow.start_run(run_name=f"{row['variant']} @ seed {row['seed']}") as run:
        mlflow.log_params({"seed": row["seed"], "process": process, "alive_persistence": alive, "level_persistence": level,
                           "fit_cutoff": fit_cutoff, "fit_clock": params.fit_clock,
                           "new_customers": row["new_customers"]})  # fmt: skip
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
        return run.info.run_id


def _remaining_days(truth: pd.DataFrame, ids: pd.Index, as_of, cap_days: int) -> np.ndarray:
    """Each customer's days alive after the scoring day, from the generator's dropout time, capped."""
    start = pd.Timestamp(as_of) + pd.Timedelta(days=1)
    return ((truth.reindex(ids)["dropout_at"] - start) / pd.Timedelta(days=1)).clip(lower=0, upper=cap_days).to_numpy()


def _within(ratios: dict[str, float], tolerance: float = 0.10) -> str:
    per_channel = {k: v for k, v in ratios.items() if k != "all"}
    inside = sum(abs(v - 1) <= tolerance for v in per_channel.values())
    return f"{min(per_channel.values()):.2f}–{max(per_channel.values()):.2f} ({inside}/{len(per_channel)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="bench_lifetime.py's --work directory")
    parser.add_argument("--seeds", default="2,3")
    parser.add_argument("--variants", default="one@1/0,channel@1/0,channel@1/0.25,channel@1/0.5,one@1/0.5")
    parser.add_argument("--json", default=None)
    parser.add_argument("--new-customers", choices=("process", "champion"), default="process",
                        help="how new customers are valued (training's lifetime.new_customers; default process)")
    parser.add_argument("--fit-cutoff", default=None,
                        help="history the dropout process is fitted on (default: the protocol's training cutoff, "
                             "2019-06-30; 2019-12-31 for the champions of bench_lifetime.py --refit)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if {0, 1} & set(seeds):
        parser.error("seeds 0 and 1 are the benchmark's: choose settings on other books")
    variants = args.variants.split(",")
    for v in variants:
        process, _, weights = v.partition("@")
        if process not in PROCESSES or len(weights.split("/")) != 2:
            parser.error(f"variant {v!r}: PROCESS@ALIVE/LEVEL with PROCESS one of {sorted(PROCESSES)}")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    rows = [row for seed in seeds for row in run_seed(Path(args.work), seed, variants, args.fit_cutoff, args.new_customers)]
    print("\nlifetime CLV ÷ realised / largest |horizon ratio − 1| / lifetime ÷ realised by channel (range) / "
          "new-customer CLV ÷ realised by channel (range, channels within ±10 %)\n")
    print("| variant | " + " | ".join(f"seed {s}" for s in seeds) + " |\n| --- |" + " --- |" * len(seeds))
    by = {(r["seed"], r["variant"]): r for r in rows}
    for v in variants:
        cells = []
        for s in seeds:
            r = by[s, v]
            ch = r["channel_lifetime_ratio"]
            cells.append(f"{r['lifetime_ratio']:.3f} / {r['max_horizon_error']:.3f} / {min(ch.values()):.2f}–{max(ch.values()):.2f} / "
                         f"{_within(r['new_customer_ratio'])}")
        print(f"| {v} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
