"""``clvcast generate --kind subscription``: the book, its latent truth and its truth at a cutoff."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from pandas.testing import assert_frame_equal

from features.synthetic import generate_subscription, read_book, subscription_truth
from features.synthetic.truth_files import read_subscription_truth
from serving.cli import main


def test_generate_subscription_writes_the_book_and_its_truth(tmp_path, capsys):
    out = tmp_path / "saas"
    code = main(["generate", "--kind", "subscription", "--customers", "400", "--seed", "5", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.startswith(f"wrote {out}: 400 customers, ")
    assert "truth as of 2023-12-31 over 182 days" in err

    book = read_book(out)
    expected = generate_subscription(400, seed=5)
    assert_frame_equal(book.tables.transactions, expected.tables.transactions)
    assert book.settings["kind"] == "subscription"

    truth, settings = read_subscription_truth(out)
    assert settings["cutoff"] == "2023-12-31" and settings["horizon_days"] == 182
    direct = subscription_truth(expected, cutoff="2023-12-31", horizon_days=182).customers
    assert_frame_equal(truth, direct, check_names=False)
    # The truth read back from disk is the truth of the book read back from disk.
    again = subscription_truth(book, cutoff="2023-12-31", horizon_days=182).customers
    np.testing.assert_allclose(truth["clv"].to_numpy(), again["clv"].to_numpy(), rtol=1e-12)
    assert json.loads((out / "dataset.json").read_text())["settings"]["kind"] == "subscription"


def test_generate_subscription_takes_the_truth_cutoff_and_horizon(tmp_path, capsys):
    out = tmp_path / "saas"
    code = main([
        "generate", "--kind", "subscription", "--customers", "300", "--end", "2023-06-30",
        "--truth-cutoff", "2022-12-31", "--truth-horizon-days", "91", "--out", str(out),
    ])
    assert code == 0, capsys.readouterr().err
    truth, settings = read_subscription_truth(out)
    assert settings["cutoff"] == "2022-12-31" and settings["horizon_days"] == 91
    assert (pd.to_datetime(read_book(out).tables.customers.set_index("customer_id").loc[truth.index, "acquired_at"])
            < pd.Timestamp("2023-01-01")).all()


def test_generate_subscription_refuses_a_truth_cutoff_outside_the_period(tmp_path, capsys):
    code = main([
        "generate", "--kind", "subscription", "--customers", "50", "--truth-cutoff", "2030-01-01",
        "--out", str(tmp_path / "saas"),
    ])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "outside the book's period" in err[0], err
