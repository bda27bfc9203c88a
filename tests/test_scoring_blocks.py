"""Scoring block by block (serving.scoring.score_to_file) writes the file of the whole book at once.

The service tests' champion (a 91-day model of a 1,000-customer synthetic book) scores that book
plus customers without a purchase (prospects), 10 buyers per block, into Parquet and CSV; the files
must hold the rows, values, types and run that :func:`serving.scores.write_scores` writes of
:func:`serving.scoring.score_tables` on the whole book. With 10 customers per block, a tier or an RFM
segment cut per block, a row out of order or a customer's row built from another's would show.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_dask import _with_prospects
from test_service import AS_OF

from features.io import load_tables
from serving.scores import read_scores, write_scores
from serving.scoring import score_tables, score_to_file
from serving.segments import SegmentReference
from serving.service import environ

#: Buyers per block: the book's 1,016 buyers leave 6 for a last block, which joins the one before.
BLOCK = 10


@pytest.fixture(scope="module")
def scoring(champion_store):
    """(tables with prospects, champion, the scores of the whole book at once)."""
    from training.registry import load_champion

    store = champion_store
    tables = _with_prospects(load_tables(store.book_dir).tables, n=60)
    with environ(MLFLOW_TRACKING_URI=store.tracking_uri):
        champion = load_champion()
    return tables, champion, score_tables(tables, as_of=AS_OF, champion=champion)


def test_blocks_of_ten_write_the_parquet_file_of_the_whole_book(scoring, tmp_path):
    tables, champion, whole = scoring
    expected = write_scores(whole, tmp_path / "whole.parquet")
    assert (whole.frame["rfm_segment"] == "prospect").sum() > 0  # the prospects are part of the comparison
    written = score_to_file(tables, tmp_path / "blocks.parquet", as_of=AS_OF, champion=champion, block_customers=BLOCK)
    assert written.run == whole.run
    assert written.customers == len(whole.frame)
    assert written.prospects == (whole.frame["rfm_segment"] == "prospect").sum()
    assert pq.read_schema(written.path).equals(pq.read_schema(expected), check_metadata=True)
    assert pq.read_table(written.path).equals(pq.read_table(expected))
    got, want = read_scores(written.path), read_scores(expected)
    assert got.run == want.run
    pd.testing.assert_frame_equal(got.frame.drop(columns=["drivers"]).assign(expected_spend_curve=0, expected_margin_curve=0),
                                  want.frame.drop(columns=["drivers"]).assign(expected_spend_curve=0, expected_margin_curve=0))  # fmt: skip
    for name in ("expected_spend_curve", "expected_margin_curve"):
        np.testing.assert_array_equal(np.stack(got.frame[name].to_numpy()), np.stack(want.frame[name].to_numpy()))
    assert got.frame["drivers"].tolist() == want.frame["drivers"].tolist()
    assert not list(tmp_path.glob(".*"))  # no temporary file left
    buyers = int((whole.frame["rfm_segment"] != "prospect").sum())
    assert buyers % BLOCK == 6  # a last block of 6 buyers joins the one before
    assert pq.ParquetFile(written.path).num_row_groups == buyers // BLOCK + 1  # the blocks, then the prospects


def test_blocks_write_the_csv_file_of_the_whole_book(scoring, tmp_path):
    tables, champion, whole = scoring
    expected = write_scores(whole, tmp_path / "whole.csv")
    written = score_to_file(tables, tmp_path / "blocks.csv", as_of=AS_OF, champion=champion, block_customers=BLOCK)
    assert written.path.read_text() == expected.read_text()
    assert (tmp_path / "blocks.csv.run.json").read_bytes() == (tmp_path / "whole.csv.run.json").read_bytes()


def test_a_given_reference_cuts_every_block(scoring, tmp_path):
    tables, champion, whole = scoring
    # A reference of another population (the top half of the book): tiers and segments follow it.
    top = whole.frame[whole.frame["clv"] >= whole.frame["clv"].median()]
    reference = SegmentReference.from_scores(top)
    want = score_tables(tables, as_of=AS_OF, champion=champion, reference=reference, top_drivers=0).frame
    written = score_to_file(tables, tmp_path / "blocks.parquet", as_of=AS_OF, champion=champion, reference=reference,
                            top_drivers=0, block_customers=BLOCK)  # fmt: skip
    got = read_scores(written.path).frame
    assert (got["clv_tier"] != whole.frame["clv_tier"]).any()
    pd.testing.assert_series_equal(got["clv_tier"], want["clv_tier"].astype(got["clv_tier"].dtype))
    pd.testing.assert_series_equal(got["rfm_segment"], want["rfm_segment"].astype(got["rfm_segment"].dtype))


def test_blocks_hold_at_least_eight_customers(scoring, tmp_path):
    tables, champion, _ = scoring
    # Fewer rows take TreeSHAP's direct computation, equal to the tables' only to the last bits.
    with pytest.raises(ValueError, match="block_customers must be at least 8"):
        score_to_file(tables, tmp_path / "x.parquet", as_of=AS_OF, champion=champion, block_customers=7)
