"""Customer ids of any type become one canonical text, the same in every table, source and the HTTP API."""

from __future__ import annotations

import json
from decimal import Decimal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features import btyd as bt
from features.btyd import BTYDParams
from features.build import build_features
from features.contract import (
    RULE_ID_INEXACT,
    RULE_ID_NOT_WHOLE,
    RULE_ID_TYPE,
    DataValidationError,
    canonical_ids,
)
from features.io import Unmatched, load_tables
from serving.api_models import ClvRequest

# Population parameters as serving passes them (stored at training time): the ids are under test
# here, not a BG/NBD fit on two customers.
PARAMS = BTYDParams(
    bgnbd=bt.BGNBDParams(r=0.25, alpha=4.0, a=0.8, b=2.5),
    gamma_gamma=bt.GammaGammaParams(p=6.0, q=4.0, v=15.0),
    time_unit_days=7.0,
)


def _ids(values) -> list:
    result = canonical_ids(values)
    assert result.broken == {}, result.broken
    return result.ids.to_pylist()


def _broken(values) -> dict[str, list[int]]:
    return {rule: np.flatnonzero(mask).tolist() for rule, mask in canonical_ids(values).broken.items()}


# --- the function ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, expected",
    [
        (pa.array([7, -3, None, 12345678901234567], pa.int64()), ["7", "-3", None, "12345678901234567"]),
        (pa.array([18446744073709551615, 1], pa.uint64()), ["18446744073709551615", "1"]),
        (pa.array([100000000001.0, 7.0, None, -0.0, 2.0**53 - 1]), ["100000000001", "7", None, "0", "9007199254740991"]),
        (pa.array([16777215.0, 3.0], pa.float32()), ["16777215", "3"]),
        (pa.array([Decimal("100000000001.00"), Decimal("12.50"), Decimal("0.00")], pa.decimal128(20, 2)),
         ["100000000001", "12.5", "0"]),
        (pa.array([Decimal("12345678901234567890123")], pa.decimal128(38, 0)), ["12345678901234567890123"]),
        (pa.array([Decimal("1.2E+3")], pa.decimal128(5, -2)), ["1200"]),
        (pa.array([3, 4, 3], pa.int32()).dictionary_encode(), ["3", "4", "3"]),
        (pa.array(["00001", " 7 ", "A-1", ""]).dictionary_encode(), ["00001", " 7 ", "A-1", ""]),
        (pa.array(["00001", " 7 ", "", None], pa.large_string()), ["00001", " 7 ", "", None]),
        (pa.array([b"00001"], pa.binary()), ["00001"]),
        (pa.nulls(2), [None, None]),
    ],
    ids=["int64", "uint64", "float64", "float32", "decimal", "decimal38", "negative-scale", "dict-int",
         "dict-text", "large_string", "binary", "null"],
)  # fmt: skip
def test_every_arrow_type_gives_the_canonical_text(values, expected):
    assert _ids(values) == expected


def test_floats_that_are_not_whole_or_not_exact_break_a_rule():
    values = pa.array([1.0, 1.5, np.inf, np.nan, 2.0**53, -(2.0**53), 2.0**53 - 1, None])
    result = canonical_ids(values)
    assert result.ids.to_pylist() == ["1", None, None, None, None, None, "9007199254740991", None]
    assert _broken(values) == {RULE_ID_NOT_WHOLE: [1, 2], RULE_ID_INEXACT: [4, 5]}
    # float32 holds every integer only up to 2**24.
    assert _broken(pa.array([16777216.0, 16777215.0], pa.float32())) == {RULE_ID_INEXACT: [0]}


def test_pandas_inputs_including_mixed_objects():
    mixed = pd.Series(
        [1, "00001", 2.0, None, np.int64(5), Decimal("3.10"), True, 2.5, np.float32(16777216.0), np.nan],
        dtype=object,
    )
    result = canonical_ids(mixed)
    assert result.ids.to_pylist() == ["1", "00001", "2", None, "5", "3.1", None, None, None, None]
    assert _broken(mixed) == {RULE_ID_NOT_WHOLE: [7], RULE_ID_INEXACT: [8], RULE_ID_TYPE: [6]}
    assert _ids(pd.Series([1.0, np.nan, 100000000001.0])) == ["1", None, "100000000001"]
    assert _ids(pd.array([1, None], dtype="Int64")) == ["1", None]
    assert _ids(pd.Categorical([3, 4, 3])) == ["3", "4", "3"]
    assert _ids(pd.Series(["007", None], dtype="str")) == ["007", None]
    with pytest.raises(TypeError, match="column type bool cannot hold ids"):
        canonical_ids(pa.array([True, False]))


def test_http_like_inputs_give_the_ids_files_give():
    # What a JSON body decodes to: the API takes ids as strings only, and keeps them as sent.
    sent = ["00001", " 7", "100000000001", "A-1"]
    request = ClvRequest.model_validate(
        {
            "as_of": "2024-12-31",
            "customers": [
                {"customer_id": c, "transactions": [{"timestamp": "2024-01-01", "amount": 1.0}]} for c in sent
            ],
        }
    )
    from_http = request.to_tables().customers["customer_id"].tolist()
    assert from_http == sent
    assert _ids(from_http) == sent  # canonical_ids leaves text exactly as the API does
    # JSON numbers, were the API ever to take them, would print as the files print them.
    assert _ids(json.loads("[100000000001, 100000000001.0, 7, 7.0]")) == ["100000000001", "100000000001", "7", "7"]
    assert _ids(pa.array([100000000001.0, 7.0])) == ["100000000001", "7"]


# --- every reader -----------------------------------------------------------------------------------

ID_COLUMNS = {
    "int64": pa.array([100000000001, 7, 7], pa.int64()),
    "float64": pa.array([100000000001.0, 7.0, 7.0]),
    "decimal": pa.array([Decimal("100000000001.00"), Decimal("7.00"), Decimal("7.00")], pa.decimal128(20, 2)),
    "categorical": pa.array([100000000001, 7, 7]).dictionary_encode(),
    "string": pa.array(["100000000001", "7", "7"]),
}


@pytest.mark.parametrize("dtype", list(ID_COLUMNS))
def test_a_parquet_id_column_of_any_type_joins_the_csv_tables(tmp_path, dtype):
    transactions = pa.table(
        {
            "customer_id": ID_COLUMNS[dtype],
            "timestamp": pa.array(pd.to_datetime(["2024-01-05", "2024-03-01", "2024-06-01"]).as_unit("us")),
            "amount": [10.0, 20.0, 30.0],
        }
    )
    pq.write_table(transactions, tmp_path / "transactions.parquet")
    (tmp_path / "events.csv").write_text("customer_id,timestamp,event_type\n100000000001,2024-06-01,session\n")
    (tmp_path / "customers.csv").write_text(
        "customer_id,channel,acquisition_cost,referred_by\n100000000001,search,5,\n7,social,6,100000000001\n"
    )
    result = load_tables(tmp_path)
    assert result.tables.transactions["customer_id"].tolist() == ["100000000001", "7", "7"]
    assert result.report.unmatched == {}  # every events and customers row found its customer
    features = build_features(result.tables, cutoff="2024-12-31", btyd=PARAMS)
    assert features.index.tolist() == ["100000000001", "7"]
    assert features["channel"].tolist() == ["search", "social"]
    assert features["session_count"].tolist() == [1, 0]
    assert features["is_referred"].tolist() == [0.0, 1.0]


def test_the_float_ids_case(cases_dir):
    """../shared/cases/float_ids: a float64 customer_id in transactions.parquet, text ids in the CSV tables."""
    result = load_tables(cases_dir / "float_ids")
    features = build_features(result.tables, cutoff="2024-12-31")  # BTYD fitted, as clvcast features does
    assert features.index.tolist() == ["100000000001", "100000000002", "7"]
    first = features.loc["100000000001"]
    assert (first["channel"], first["acquisition_cost"], first["session_count"]) == ("search", 5.0, 1)
    assert features["channel"].tolist() == ["search", "social", "search"]
    assert features["acquisition_cost"].tolist() == [5.0, 6.0, 7.0]
    assert features["session_count"].tolist() == [1, 1, 1]
    assert result.report.unmatched == {}


def test_a_float_id_that_is_not_whole_is_a_row_level_violation(tmp_path):
    ids = [1.0, 1.5, 2.0**53 + 2, 3.0]
    pq.write_table(
        pa.table({"customer_id": ids, "timestamp": pa.array(pd.to_datetime(["2024-01-01"] * 4).as_unit("us")),
                  "amount": [1.0] * 4}),
        tmp_path / "transactions.parquet",
    )  # fmt: skip
    pd.DataFrame({"customer_id": ["1"], "referred_by": [2.5]}).to_parquet(tmp_path / "customers.parquet")
    with pytest.raises(DataValidationError) as info:
        load_tables(tmp_path)
    found = [(v.column, v.rule, v.n_rows, v.examples) for v in info.value.violations]
    assert found == [
        ("customer_id", RULE_ID_NOT_WHOLE, 1, [{"row": 2, "customer_id": 1.5}]),
        ("customer_id", RULE_ID_INEXACT, 1, [{"row": 3, "customer_id": 2.0**53 + 2}]),
        ("referred_by", RULE_ID_NOT_WHOLE, 1, [{"row": 1, "referred_by": 2.5, "customer_id": "1"}]),
    ]
    result = load_tables(tmp_path, on_invalid="quarantine", quarantine_dir=tmp_path / "q")
    assert result.tables.transactions["customer_id"].tolist() == ["1", "3"]
    quarantined = pd.read_csv(tmp_path / "q" / "transactions.quarantine.csv")
    assert quarantined["row"].tolist() == [2, 3]
    assert quarantined["reason"].tolist() == [f"customer_id: {RULE_ID_NOT_WHOLE}", f"customer_id: {RULE_ID_INEXACT}"]


def test_duckdb_ids_of_numeric_types(tmp_path):
    db = tmp_path / "shop.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table transactions (customer_id decimal(20, 2), timestamp date, amount double)")
        con.execute("insert into transactions values (100000000001.00, '2024-01-01', 1), (7, '2024-01-02', 2)")
        con.execute("create table events (customer_id double, timestamp date, event_type varchar)")
        con.execute("insert into events values (100000000001.0, '2024-01-03', 'session'), (8.0, '2024-01-03', 'session')")
        con.execute("create table customers (customer_id hugeint, referred_by double)")
        con.execute("insert into customers values (7, 100000000001), (9, null)")
    result = load_tables(f"duckdb:///{db}")
    t = result.tables
    assert t.transactions["customer_id"].tolist() == ["100000000001", "7"]
    assert t.events["customer_id"].tolist() == ["100000000001", "8"]
    assert t.customers["customer_id"].tolist() == ["7", "9"]
    assert t.customers["referred_by"].tolist()[0] == "100000000001" and pd.isna(t.customers["referred_by"].iloc[1])
    assert result.report.unmatched == {"events": Unmatched(1, 1, ("8",)), "customers": Unmatched(1, 1, ("9",))}

    # A float32 column cannot hold 100000000001 exactly: the referrer is refused, not rounded.
    with duckdb.connect(str(db)) as con:
        con.execute("alter table customers alter referred_by type real")
    with pytest.raises(DataValidationError, match="column 'referred_by': float id too large to be exact"):
        load_tables(f"duckdb:///{db}")
