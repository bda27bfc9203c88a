"""The sample of customers a training run learns from (features.sample, training.sample_customers).

Deterministic (also across processes), nested, of binomial size, and cut the same way in every table;
the run on the cluster is in tests/test_dask.py, the pipeline run in tests/test_train.py.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from features.contract import Tables
from features.sample import (
    book_customer_count,
    customer_hash,
    data_end,
    in_sample,
    sample_customers,
    sample_tables,
    sample_threshold,
)
from serving.cluster import customer_bucket
from training.config import ConfigError, load_config


@pytest.fixture(scope="module")
def book() -> Tables:
    from features.synthetic import generate

    return generate(2000, seed=7, start="2022-01-01", end="2023-12-31").tables


def _ids(frame: pd.DataFrame | None) -> set[str]:
    return set() if frame is None else set(frame["customer_id"].astype(str))


def test_the_hash_is_the_partitioning_hash_and_the_same_in_another_process():
    ids = pd.Series(["c1", "00001", "1", "é-ü", "x" * 40], dtype="str")
    hashed = customer_hash(ids)
    assert hashed.dtype == np.uint64
    assert np.array_equal(hashed % np.uint64(13), customer_bucket(ids, 13).astype(np.uint64))
    assert np.array_equal(customer_hash(pd.Index(ids)), hashed) and np.array_equal(customer_hash(ids.astype(object)), hashed)
    code = ("import pandas as pd; from features.sample import customer_hash; "
            f"print(' '.join(map(str, customer_hash(pd.Series({list(ids)!r})))))")  # fmt: skip
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.split() == [str(h) for h in hashed]


def test_the_sample_is_deterministic_and_nested(book):
    samples = {n: sample_customers(book, n) for n in (200, 500, 1000)}
    again, info = sample_customers(book, 500)
    pd.testing.assert_frame_equal(again.transactions, samples[500][0].transactions)
    assert info == samples[500][1]
    kept = {n: _ids(t.transactions) | _ids(t.customers) | _ids(t.events) for n, (t, _) in samples.items()}
    assert kept[200] < kept[500] < kept[1000]


def test_the_size_is_within_binomial_noise_of_n():
    """20,000 customers, N from 100 to 15,000: |sampled − N| ≤ 5 σ, σ = sqrt(N (1 − N / 20,000)).

    The ids are fixed, so the check is deterministic; 5 σ is what a fair hash fails once in 1.7
    million draws.
    """
    book_size = 20_000
    ids = pd.Series([f"cust-{i:06d}" for i in range(book_size)], dtype="str")
    tables = Tables(pd.DataFrame({"customer_id": ids, "timestamp": pd.Timestamp("2024-01-01"), "amount": 1.0}))
    for n in (100, 1_000, 5_000, 10_000, 15_000):
        _, info = sample_customers(tables, n)
        sigma = math.sqrt(n * (1 - n / book_size))
        assert info.in_book == book_size and info.requested == n
        assert abs(info.sampled - n) <= 5 * sigma, (n, info.sampled, sigma)


def test_every_table_is_cut_to_the_same_customers_with_all_their_rows(book):
    sample, info = sample_customers(book, 600)
    kept = _ids(sample.transactions) | _ids(sample.events) | _ids(sample.customers)
    assert 0 < len(kept) < 2000
    # The same rule in every table: a customer is in a table's sample iff it is in the table and in the sample.
    for name in ("transactions", "events", "customers"):
        whole, cut = getattr(book, name), getattr(sample, name)
        expected = whole[whole["customer_id"].astype(str).isin(kept)].reset_index(drop=True)
        pd.testing.assert_frame_equal(cut, expected)  # every row of a kept customer, in order, same dtypes
        assert not (_ids(whole) - _ids(cut)) & kept
    assert info.sampled == len(kept & (_ids(book.transactions) | _ids(book.customers)))
    assert info.message() == f"training on a sample of {info.sampled:,} of 2,000 customers (training.sample_customers = 600)"


def test_n_at_least_the_book_keeps_everything_and_n_below_one_is_refused(book):
    for n in (2000, 10**9):
        same, info = sample_customers(book, n)
        assert same is book and info.threshold is None and info.sampled == info.in_book == 2000
    with pytest.raises(ValueError, match=">= 1"):
        sample_threshold(0, 10)
    assert sample_threshold(1, 4) == 2**62
    assert sample_tables(book, None) is book
    assert in_sample(pd.Series([], dtype="str"), 2**62).shape == (0,)


def test_the_book_counts_customers_up_to_the_data_end_only():
    tx = pd.DataFrame({"customer_id": pd.Series(["a", "b", "a"], dtype="str"),
                       "timestamp": pd.to_datetime(["2024-01-01 00:00", "2024-02-01 10:00", "2024-01-05 00:00"]), "amount": 1.0})  # fmt: skip
    cu = pd.DataFrame({"customer_id": pd.Series(["a", "c", "d", "e"], dtype="str"),
                       "acquired_at": pd.to_datetime(["2023-12-01 00:00", "2024-02-01 23:00", "2024-02-02 00:00", None])})  # fmt: skip
    ev = pd.DataFrame({"customer_id": pd.Series(["f"], dtype="str"), "timestamp": pd.to_datetime(["2024-01-01"])})
    tables = Tables(tx, ev, cu)
    assert data_end(tables) == pd.Timestamp("2024-02-01")
    # a, b (transactions); c (acquired on the last day); e (no acquisition date); not d (later), not f (events only).
    assert book_customer_count(tables) == 4
    # Parts holding whole customers add up with the book's end.
    parts = [Tables(tx[tx.customer_id == "b"], None, cu[cu.customer_id.isin(["c", "d"])]),
             Tables(tx[tx.customer_id == "a"], ev, cu[cu.customer_id.isin(["a", "e"])])]  # fmt: skip
    assert sum(book_customer_count(p, end=data_end(tables)) for p in parts) == 4


def test_the_setting_from_a_file_the_environment_and_flags(tmp_path):
    assert load_config(environ={}).training.sample_customers is None
    assert load_config(environ={"CLVCAST_TRAINING__SAMPLE_CUSTOMERS": "100000"}).training.sample_customers == 100_000
    path = tmp_path / "config.yaml"
    path.write_text("training:\n  sample_customers: 5000\n")
    assert load_config(path, environ={}).training.sample_customers == 5000
    assert load_config(path, environ={}, sample_customers=7).training.sample_customers == 7
    with pytest.raises(ConfigError, match="training.sample_customers"):
        load_config(environ={"CLVCAST_TRAINING__SAMPLE_CUSTOMERS": "0"})
