"""Reading input tables: the data contract at the file and SQL boundary."""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pandas.testing import assert_frame_equal

from features.contract import DataValidationError, Tables
from features.io import Unmatched, csv_files, load_tables, parse_column_map, write_tables
from features.synthetic import generate, write_book

GOOD_TRANSACTIONS = "customer_id,timestamp,amount\n00001,2024-01-01,10.0\n00002,2024-01-02,20.5\n"


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def _error(source, **kwargs) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        load_tables(source, **kwargs)
    return info.value


# --- directory layout --------------------------------------------------------------------------


def test_cdnow_loads_with_string_ids(cdnow_dir):
    tx = load_tables(cdnow_dir).tables.transactions
    assert len(tx) == 69_659
    assert tx["customer_id"].nunique() == 23_570
    assert tx["customer_id"].iloc[0] == "00001"
    assert pd.api.types.is_string_dtype(tx["customer_id"])
    assert tx["timestamp"].dtype == "datetime64[ns]"
    assert tx["amount"].dtype == "float64"
    assert "quantity" in tx.columns  # extra columns are kept
    assert (tx["amount"] == 0).sum() == 80


def test_missing_directory_and_missing_transactions(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_tables(tmp_path / "nope")
    _write(tmp_path, "events.csv", "customer_id,timestamp,event_type\n1,2024-01-01,session\n")
    with pytest.raises(FileNotFoundError, match=r"no transactions table.*events\.csv"):
        load_tables(tmp_path)


def test_same_table_in_two_formats_is_ambiguous(tmp_path):
    _write(tmp_path, "transactions.csv", GOOD_TRANSACTIONS)
    pd.read_csv(tmp_path / "transactions.csv").to_parquet(tmp_path / "transactions.parquet")
    with pytest.raises(ValueError, match=r"transactions is ambiguous.*transactions\.csv.*transactions\.parquet"):
        load_tables(tmp_path)


def test_all_three_tables_from_gzipped_csv(tmp_path):
    pd.read_csv(pd.io.common.StringIO(GOOD_TRANSACTIONS), dtype=str).to_csv(
        tmp_path / "transactions.csv.gz", index=False
    )
    _write(tmp_path, "events.csv", "customer_id,timestamp,event_type\n00001,2024-01-03,email_open\n")
    _write(
        tmp_path,
        "customers.csv",
        "customer_id,acquired_at,channel,acquisition_cost,referred_by,region\n"
        "00001,2023-12-31,search,12.5,,north\n00002,2024-01-01,,,00001,south\n",
    )
    result = load_tables(tmp_path)
    t = result.tables
    assert t.transactions["customer_id"].tolist() == ["00001", "00002"]
    assert t.events["event_type"].tolist() == ["email_open"]
    customers = t.customers
    assert customers["referred_by"].isna().tolist() == [True, False]
    assert customers["referred_by"].iloc[1] == "00001"
    assert customers["channel"].isna().tolist() == [False, True]  # an empty cell in an optional column
    assert np.isnan(customers["acquisition_cost"].iloc[1])
    assert customers["acquired_at"].dtype == "datetime64[ns]"
    assert customers["region"].tolist() == ["north", "south"]
    assert result.report.rows_read == {"transactions": 2, "events": 1, "customers": 2}
    assert result.report.rows_loaded == result.report.rows_read


# --- one broken rule each: the message names file, column, rule, count and the first rows -------

RULE_CASES = {
    "missing column": (
        "transactions.csv",
        "customer_id,timestamp\n1,2024-01-01\n",
        "amount",
        "required column missing (columns present: customer_id, timestamp)",
        1,
        [],
    ),
    "unparseable timestamp": (
        "transactions.csv",
        "customer_id,timestamp,amount\n1,2024-01-01,1\n2,yesterday,1\n3,2024-13-45,1\n",
        "timestamp",
        "unparseable date/datetime",
        2,
        [{"row": 2, "line": 3, "timestamp": "yesterday", "customer_id": "2"},
         {"row": 3, "line": 4, "timestamp": "2024-13-45", "customer_id": "3"}],
    ),
    "non-numeric amount": (
        "transactions.csv",
        "customer_id,timestamp,amount\n1,2024-01-01,12.5\n2,2024-01-01,twelve\n",
        "amount",
        "non-numeric",
        1,
        [{"row": 2, "line": 3, "amount": "twelve", "customer_id": "2"}],
    ),
    "non-finite amount": (
        "transactions.csv",
        "customer_id,timestamp,amount\n1,2024-01-01,inf\n2,2024-01-01,1\n3,2024-01-01,-inf\n",
        "amount",
        "non-finite (NaN or infinite)",
        2,
        [{"row": 1, "line": 2, "amount": "inf", "customer_id": "1"},
         {"row": 3, "line": 4, "amount": "-inf", "customer_id": "3"}],
    ),
    "blank customer_id": (
        "transactions.csv",
        'customer_id,timestamp,amount\n1,2024-01-01,1\n,2024-01-01,2\n"  ",2024-01-01,3\n',
        "customer_id",
        "null or blank",
        2,
        [{"row": 2, "line": 3, "customer_id": ""}, {"row": 3, "line": 4, "customer_id": "  "}],
    ),
    "duplicate customer": (
        "customers.csv",
        "customer_id,channel\n007,search\n008,social\n007,email\n",
        "customer_id",
        "duplicate customer_id",
        2,
        [{"row": 1, "line": 2, "customer_id": "007"}, {"row": 3, "line": 4, "customer_id": "007"}],
    ),
    "negative acquisition cost": (
        "customers.csv",
        "customer_id,acquisition_cost\n1,10\n2,-3.5\n",
        "acquisition_cost",
        "negative",
        1,
        [{"row": 2, "line": 3, "acquisition_cost": "-3.5", "customer_id": "2"}],
    ),
    "unparseable acquired_at": (
        "customers.csv",
        "customer_id,acquired_at\n1,2024-01-01\n2,01/02/2024\n",
        "acquired_at",
        "unparseable date/datetime",
        1,
        [{"row": 2, "line": 3, "acquired_at": "01/02/2024", "customer_id": "2"}],
    ),
    "null event_type": (
        "events.csv",
        "customer_id,timestamp,event_type\n1,2024-01-01,session\n2,2024-01-02,\n",
        "event_type",
        "null or blank",
        1,
        [{"row": 2, "line": 3, "event_type": "", "customer_id": "2"}],
    ),
}


@pytest.mark.parametrize("case", list(RULE_CASES))
def test_each_rule_is_reported_with_file_column_rule_count_and_rows(tmp_path, case):
    filename, text, column, rule, n_rows, examples = RULE_CASES[case]
    if filename != "transactions.csv":
        _write(tmp_path, "transactions.csv", GOOD_TRANSACTIONS)
    path = _write(tmp_path, filename, text)

    err = _error(tmp_path)

    assert len(err.violations) == 1
    v = err.violations[0]
    assert (v.source, v.column, v.n_rows, v.examples) == (str(path), column, n_rows, examples)
    assert v.rule.startswith(rule)
    message = str(err)
    assert str(path) in message and f"column '{column}'" in message and rule in message
    assert f"{n_rows} row(s) break it" in message
    for example in examples:
        assert str(example) in message


def test_null_timestamp_and_amount_are_reported(tmp_path):
    _write(tmp_path, "transactions.csv", "customer_id,timestamp,amount\n1,,1\n2,2024-01-01,\n")
    found = {(v.column, v.rule, v.n_rows) for v in _error(tmp_path).violations}
    assert found == {("timestamp", "null", 1), ("amount", "null", 1)}


def test_all_violations_of_a_load_are_raised_together(tmp_path):
    _write(tmp_path, "transactions.csv", "customer_id,timestamp,amount\n,2024-01-01,x\n")
    _write(tmp_path, "events.csv", "customer_id,timestamp\n1,2024-01-01\n")
    found = [(Path(v.source).name, v.column, v.rule.split(" (")[0]) for v in _error(tmp_path).violations]
    assert found == [
        ("events.csv", "event_type", "required column missing"),
        ("transactions.csv", "customer_id", "null or blank"),
        ("transactions.csv", "amount", "non-numeric"),
    ]


def test_examples_are_capped_and_line_numbers_stay_exact_across_blank_lines(tmp_path):
    rows = "".join(f"{i},bad,1\n" for i in range(8))
    # A blank line inside the data is reported where it is; blank lines at the end are not data.
    _write(tmp_path, "transactions.csv", f"customer_id,timestamp,amount\n1,2024-01-01,1\n\n{rows}\n\n")
    err = _error(tmp_path)
    by_rule = {(v.column, v.rule.split(" (")[0]): v for v in err.violations}
    blank = by_rule[("customer_id", "null or blank")]
    assert (blank.n_rows, blank.examples[0]["line"]) == (1, 3)
    bad = by_rule[("timestamp", "unparseable date/datetime")]
    assert bad.n_rows == 8 and len(bad.examples) == 5
    assert [e["line"] for e in bad.examples] == [4, 5, 6, 7, 8]


def test_a_bad_value_after_the_first_csv_block_is_still_named(tmp_path):
    # Arrow infers column types from the first block (about 1 MB): the bad value is far below it.
    n = 60_000
    amounts = np.round(np.random.default_rng(0).gamma(2.0, 10.0, n), 2).astype(str)
    amounts[n - 2] = "12,50"
    quantity = np.ones(n, dtype=int).astype(str)
    quantity[n - 1] = "lots"  # an undeclared column that is not numeric after all
    frame = pd.DataFrame(
        {"customer_id": np.arange(n).astype(str), "timestamp": "2024-01-01", "amount": amounts, "quantity": quantity}
    )
    frame.to_csv(tmp_path / "transactions.csv", index=False)
    (v,) = _error(tmp_path).violations
    assert (v.column, v.rule, v.n_rows) == ("amount", "non-numeric", 1)
    assert v.examples == [{"row": n - 1, "line": n, "amount": "12,50", "customer_id": str(n - 2)}]
    # That column is kept as text, all of it.
    tx = load_tables(tmp_path, on_invalid="quarantine", quarantine_dir=tmp_path / "q").tables.transactions
    assert len(tx) == n - 1
    assert tx["quantity"].iloc[-1] == "lots" and tx["quantity"].iloc[0] == "1"


def test_unsupported_column_type_is_an_error(tmp_path):
    pd.DataFrame({"customer_id": ["1"], "timestamp": [20240101], "amount": [1.0]}).to_parquet(
        tmp_path / "transactions.parquet"
    )
    (v,) = _error(tmp_path).violations
    assert v.column == "timestamp" and v.rule.startswith("unsupported column type int64")


# --- quarantine --------------------------------------------------------------------------------


def test_quarantine_sets_invalid_rows_aside_with_reasons(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _write(
        data,
        "transactions.csv",
        "customer_id,timestamp,amount,store\n"
        "00001,2024-01-01,10,a\n"
        ",2024-01-02,20,b\n"
        "00003,soon,abc,c\n"
        "00004,2024-01-04,-5,d\n",
    )
    _write(data, "customers.csv", "customer_id,channel\n00001,search\n00004,email\n00001,social\n")
    qdir = tmp_path / "quarantine"

    result = load_tables(data, on_invalid="quarantine", quarantine_dir=qdir)

    tx = result.tables.transactions
    assert tx["customer_id"].tolist() == ["00001", "00004"]
    assert tx["amount"].tolist() == [10.0, -5.0]
    assert tx.index.equals(pd.RangeIndex(2))
    assert result.tables.customers["customer_id"].tolist() == ["00004"]  # both rows of the duplicate go

    report = result.report
    assert report.rows_read == {"transactions": 4, "customers": 3}
    assert report.rows_quarantined == {"transactions": 2, "customers": 2}
    assert report.rows_loaded == {"transactions": 2, "customers": 1}
    assert report.quarantined["transactions"] == {
        "customer_id: null or blank": 1,
        "timestamp: unparseable date/datetime (expected a date or ISO-8601 datetime)": 1,
        "amount: non-numeric": 1,
    }
    assert report.quarantined["customers"] == {"customer_id: duplicate customer_id": 2}
    assert str(report).splitlines() == report.summary()
    assert report.summary()[0] == (
        f"transactions: 4 rows from {data / 'transactions.csv'} (data lines: 4), "
        f"2 quarantined to {qdir / 'transactions.quarantine.csv'}"
    )

    q = pd.read_csv(qdir / "transactions.quarantine.csv", dtype=str, keep_default_na=False)
    assert q.columns.tolist() == ["table", "row", "line", "reason", "customer_id", "timestamp", "amount", "store"]
    assert q["row"].tolist() == ["2", "3"]
    assert q["reason"].tolist() == [
        "customer_id: null or blank",
        "timestamp: unparseable date/datetime (expected a date or ISO-8601 datetime); amount: non-numeric",
    ]
    assert q[["timestamp", "amount", "store"]].values.tolist() == [["2024-01-02", "20", "b"], ["soon", "abc", "c"]]
    qc = pd.read_csv(qdir / "customers.quarantine.csv", dtype=str)
    assert qc["customer_id"].tolist() == ["00001", "00001"]
    assert qc["channel"].tolist() == ["search", "social"]

    # Fixed data: the next load leaves no stale quarantine file behind.
    _write(data, "customers.csv", "customer_id,channel\n00001,search\n")
    again = load_tables(data, on_invalid="quarantine", quarantine_dir=qdir)
    assert not (qdir / "customers.quarantine.csv").exists()
    assert again.report.rows_quarantined["customers"] == 0


def test_quarantine_still_raises_for_a_missing_column(tmp_path):
    _write(tmp_path, "transactions.csv", "customer_id,amount\n1,1\n")
    err = _error(tmp_path, on_invalid="quarantine", quarantine_dir=tmp_path / "q")
    assert err.violations[0].rule.startswith("required column missing")
    assert not (tmp_path / "q").exists()


def test_quarantine_needs_a_directory(tmp_path):
    _write(tmp_path, "transactions.csv", GOOD_TRANSACTIONS)
    with pytest.raises(ValueError, match="quarantine_dir"):
        load_tables(tmp_path, on_invalid="quarantine")
    with pytest.raises(ValueError, match="on_invalid"):
        load_tables(tmp_path, on_invalid="drop")


# --- dtypes: ids, timestamps, amounts ----------------------------------------------------------


def test_parquet_integer_ids_become_strings(tmp_path):
    pd.DataFrame(
        {"customer_id": [1, 2], "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"]), "amount": [1, 2]}
    ).to_parquet(tmp_path / "transactions.parquet")
    # An integer id column with a null is stored as float by pandas; the id is still "1", not "1.0".
    pd.DataFrame({"customer_id": [1, 2], "referred_by": [np.nan, 1.0]}).to_parquet(tmp_path / "customers.parquet")
    t = load_tables(tmp_path).tables
    assert t.transactions["customer_id"].tolist() == ["1", "2"]
    assert t.transactions["amount"].dtype == "float64"
    assert t.customers["referred_by"].iloc[1] == "1"
    assert pd.isna(t.customers["referred_by"].iloc[0])


def test_timestamps_normalise_to_naive_utc(tmp_path):
    _write(
        tmp_path,
        "transactions.csv",
        "customer_id,timestamp,amount\n"
        "1,2024-03-01,1\n"
        "2,2024-03-01T10:00:00+02:00,1\n"
        "3,2024-03-01T10:00:00Z,1\n"
        "4,2024-03-01 10:00:00,1\n",
    )
    ts = load_tables(tmp_path).tables.transactions["timestamp"]
    assert ts.dtype == "datetime64[ns]"
    assert ts.tolist() == pd.to_datetime(
        ["2024-03-01 00:00", "2024-03-01 08:00", "2024-03-01 10:00", "2024-03-01 10:00"]
    ).tolist()


def test_aware_parquet_timestamps_and_dates_convert_to_utc(tmp_path):
    paris = pd.to_datetime(["2024-07-01 12:00", "2024-01-01 00:30"]).tz_localize("Europe/Paris")
    pd.DataFrame({"customer_id": ["a", "b"], "timestamp": paris, "amount": [1.0, 2.0]}).to_parquet(
        tmp_path / "transactions.parquet"
    )
    pd.DataFrame({"customer_id": ["a"], "acquired_at": [pd.Timestamp("2023-05-06").date()]}).to_parquet(
        tmp_path / "customers.parquet"
    )
    t = load_tables(tmp_path).tables
    assert t.transactions["timestamp"].tolist() == [pd.Timestamp("2024-07-01 10:00"), pd.Timestamp("2023-12-31 23:30")]
    assert t.transactions["timestamp"].dtype == "datetime64[ns]"
    assert t.customers["acquired_at"].tolist() == [pd.Timestamp("2023-05-06")]
    assert t.customers["acquired_at"].dtype == "datetime64[ns]"


def test_dates_beyond_nanosecond_range_are_reported(tmp_path):
    _write(tmp_path, "transactions.csv", "customer_id,timestamp,amount\n1,2024-01-01,1\n2,3000-01-01,1\n")
    (v,) = _error(tmp_path).violations
    assert (v.column, v.n_rows, v.examples[0]["timestamp"]) == ("timestamp", 1, "3000-01-01")
    assert "outside" in v.rule


def test_refunds_and_zero_amounts_are_accepted(tmp_path):
    rows = "1,2024-01-01,25\n1,2024-01-05,-25\n2,2024-01-06,0\n"
    _write(tmp_path, "transactions.csv", f"customer_id,timestamp,amount\n{rows}")
    assert load_tables(tmp_path).tables.transactions["amount"].tolist() == [25.0, -25.0, 0.0]


# --- databases ---------------------------------------------------------------------------------


def test_duckdb_database(tmp_path):
    db = tmp_path / "shop.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table transactions (customer_id varchar, timestamp timestamptz, amount decimal(10, 2))")
        con.execute(
            "insert into transactions values ('00001', '2024-01-01 12:00:00+02', 9.99), ('00002', '2024-01-02', -1)"
        )
        con.execute("create table customers (customer_id integer, acquisition_cost double)")
        con.execute("insert into customers values (1, 5.0), (2, null)")
    result = load_tables(f"duckdb:///{db}")
    tx = result.tables.transactions
    assert tx["customer_id"].tolist() == ["00001", "00002"]
    assert tx["timestamp"].iloc[0] == pd.Timestamp("2024-01-01 10:00")
    assert tx["amount"].tolist() == [9.99, -1.0]
    assert result.tables.customers["customer_id"].tolist() == ["1", "2"]
    assert result.tables.events is None
    assert result.report.table_sources["transactions"] == f"table transactions at duckdb:///{db}"


def test_duckdb_violations_name_the_table_and_url(tmp_path):
    db = tmp_path / "shop.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table transactions as select '1' as customer_id, 'later' as timestamp, 1.0 as amount")
    (v,) = _error(f"duckdb:///{db}").violations
    assert v.source == f"table transactions at duckdb:///{db}"
    assert v.examples == [{"row": 1, "timestamp": "later", "customer_id": "1"}]


def test_sqlite_database(tmp_path):
    db = tmp_path / "shop.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("create table transactions (customer_id text, timestamp text, amount real, note text)")
        con.executemany(
            "insert into transactions values (?, ?, ?, ?)",
            [("00001", "2024-01-01 08:00:00", 3.5, "x"), ("00002", "2024-01-02", 4.0, None)],
        )
        con.execute("create table events (customer_id integer, timestamp text, event_type text)")
        con.execute("insert into events values (7, '2024-01-03T00:00:00+01:00', 'session')")
    con.close()
    t = load_tables(f"sqlite:///{db}").tables
    assert t.transactions["customer_id"].tolist() == ["00001", "00002"]
    assert t.transactions["timestamp"].tolist() == [pd.Timestamp("2024-01-01 08:00"), pd.Timestamp("2024-01-02")]
    assert t.transactions["note"].iloc[0] == "x"
    assert t.events["customer_id"].tolist() == ["7"]
    assert t.events["timestamp"].tolist() == [pd.Timestamp("2024-01-02 23:00")]


def test_database_without_transactions_table(tmp_path):
    db = tmp_path / "empty.sqlite"
    sqlite3.connect(db).execute("create table orders (x integer)").connection.close()
    with pytest.raises(ValueError, match="no table named transactions; the database has: orders"):
        load_tables(f"sqlite:///{db}")
    for url in (f"duckdb:///{tmp_path / 'missing.duckdb'}", f"sqlite:///{tmp_path / 'missing.sqlite'}"):
        with pytest.raises(FileNotFoundError, match="database not found"):
            load_tables(url)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]  # nothing created on the way


# --- column mapping ----------------------------------------------------------------------------


def test_per_table_and_flat_column_maps(tmp_path):
    _write(tmp_path, "transactions.csv", "cust,ts,value\n00001,2024-01-01,5\n")
    _write(tmp_path, "events.csv", "cust,ts,kind\n00001,2024-01-02,session\n")
    column_map = {
        "cust": "customer_id",
        "ts": "timestamp",
        "transactions": {"value": "amount"},
        "events": {"kind": "event_type"},
    }
    t = load_tables(tmp_path, column_map=column_map).tables
    assert t.transactions.columns.tolist() == ["customer_id", "timestamp", "amount"]
    assert t.transactions["customer_id"].tolist() == ["00001"]  # a mapped id column is still read as text
    assert t.events["event_type"].tolist() == ["session"]


def test_missing_mapped_column_names_the_mapping(tmp_path):
    _write(tmp_path, "transactions.csv", "customer_id,timestamp,value\n1,2024-01-01,5\n")
    (v,) = _error(tmp_path, column_map="transactions.val=amount").violations
    assert "columns present: customer_id, timestamp, value" in v.rule
    assert "column_map takes it from 'val'" in v.rule


def test_mapping_onto_an_existing_column_is_an_error(tmp_path):
    _write(tmp_path, "transactions.csv", "customer_id,cust,timestamp,amount\n1,2,2024-01-01,5\n")
    with pytest.raises(ValueError, match="both named 'customer_id'"):
        load_tables(tmp_path, column_map={"cust": "customer_id"})


def test_parse_column_map_forms(tmp_path):
    expected = {
        "transactions": {"cust": "customer_id", "ts": "timestamp"},
        "events": {"cust": "customer_id"},
        "customers": {"cust": "customer_id"},
    }
    assert parse_column_map("cust=customer_id, transactions.ts=timestamp") == expected
    assert parse_column_map(["cust=customer_id", "transactions.ts=timestamp"]) == expected
    as_json = _write(tmp_path, "map.json", json.dumps({"cust": "customer_id", "transactions": {"ts": "timestamp"}}))
    assert parse_column_map(as_json) == expected
    as_yaml = _write(tmp_path, "map.yaml", "column_map:\n  cust: customer_id\n  transactions:\n    ts: timestamp\n")
    assert parse_column_map(str(as_yaml)) == expected
    # A dotted name that is not a table is a flat rename of a column with a dot in its name.
    assert parse_column_map("order.value=amount")["transactions"] == {"order.value": "amount"}
    assert parse_column_map(None) == {}


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"orders": {"a": "b"}}, "unknown table 'orders'"),
        ("transactions.a=", "expected \\[table.\\]source=target"),
        ({"a": "amount", "b": "amount"}, "are all mapped to 'amount'"),
        ({"a": 3}, "expected a column name"),
    ],
)
def test_parse_column_map_rejects_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_column_map(spec)


# --- writing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv", "csv.gz"])
def test_write_then_load_round_trips(tmp_path, fmt):
    tables = Tables(
        transactions=pd.DataFrame(
            {
                "customer_id": pd.Series(["00001", "00002"], dtype="str"),
                "timestamp": pd.to_datetime(["2024-01-01 10:30", "2024-02-01 00:00"]).astype("datetime64[ns]"),
                "amount": [12.25, -3.0],
            }
        ),
        customers=pd.DataFrame(
            {
                "customer_id": pd.Series(["00001", "00002"], dtype="str"),
                "acquired_at": pd.to_datetime(["2023-12-01", "2023-12-02"]).astype("datetime64[ns]"),
                "acquisition_cost": [5.0, 0.0],
            }
        ),
    )
    written = write_tables(tables, tmp_path / "out", format=fmt)
    assert sorted(written) == ["customers", "transactions"]
    loaded = load_tables(tmp_path / "out").tables
    assert_frame_equal(loaded.transactions, tables.transactions)
    assert_frame_equal(loaded.customers, tables.customers)
    assert loaded.events is None


def test_write_refuses_to_make_a_directory_ambiguous(tmp_path):
    tables = Tables(transactions=pd.DataFrame({"customer_id": ["1"], "timestamp": [pd.Timestamp(0)], "amount": [1.0]}))
    write_tables(tables, tmp_path, format="csv")
    with pytest.raises(ValueError, match="ambiguous"):
        write_tables(tables, tmp_path, format="parquet")
    with pytest.raises(ValueError, match="format"):
        write_tables(tables, tmp_path, format="xlsx")


# --- plausible timestamps ----------------------------------------------------------------------


def test_timestamps_outside_the_plausible_range_break_a_rule(tmp_path):
    _write(
        tmp_path,
        "transactions.csv",
        "customer_id,timestamp,amount\n"
        "1,1900-01-01,1\n2,1899-12-31 23:59:59,1\n3,2200-12-31 23:59:59,1\n4,2201-01-01,1\n5,1678-06-23,1\n",
    )
    pd.DataFrame(
        {"customer_id": ["1", "2"], "acquired_at": pd.to_datetime(["1850-05-01", "2024-01-01"]).as_unit("us")}
    ).to_parquet(tmp_path / "customers.parquet")
    rule = "date/datetime outside the plausible range 1900-01-01 .. 2200-12-31"
    found = [(Path(v.source).name, v.column, v.rule, v.n_rows, v.examples) for v in _error(tmp_path).violations]
    assert found == [
        ("transactions.csv", "timestamp", rule, 3, [
            {"row": 2, "line": 3, "timestamp": "1899-12-31 23:59:59", "customer_id": "2"},
            {"row": 4, "line": 5, "timestamp": "2201-01-01", "customer_id": "4"},
            {"row": 5, "line": 6, "timestamp": "1678-06-23", "customer_id": "5"},
        ]),
        ("customers.parquet", "acquired_at", rule, 1, [
            {"row": 1, "acquired_at": "1850-05-01 00:00:00", "customer_id": "1"},
        ]),
    ]  # fmt: skip

    result = load_tables(tmp_path, on_invalid="quarantine", quarantine_dir=tmp_path / "q")
    assert result.tables.transactions["customer_id"].tolist() == ["1", "3"]
    assert result.report.quarantined == {"transactions": {f"timestamp: {rule}": 3}, "customers": {f"acquired_at: {rule}": 1}}
    q = pd.read_csv(tmp_path / "q" / "transactions.quarantine.csv", dtype=str)
    assert q["line"].tolist() == ["3", "5", "6"] and (q["reason"] == f"timestamp: {rule}").all()


def test_the_sql_loader_applies_the_timestamp_rule(tmp_path):
    db = tmp_path / "shop.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table transactions (customer_id varchar, timestamp timestamp, amount double)")
        con.execute("insert into transactions values ('1', '2024-01-01', 1), ('2', '1800-01-01', 1)")
    (v,) = _error(f"duckdb:///{db}").violations
    assert (v.column, v.n_rows, v.examples) == ("timestamp", 1, [{"row": 2, "timestamp": "1800-01-01 00:00:00", "customer_id": "2"}])
    assert v.rule.startswith("date/datetime outside the plausible range")


# --- malformed CSV: an error naming the line, or quarantined with the reason; never absorbed --------


def _transactions_csv(path: Path, n: int, *, seed: int = 0) -> list[str]:
    """``n`` data lines of plausible transactions (ids with leading zeros), written to ``path``."""
    rng = np.random.default_rng(seed)
    days = pd.Timestamp("2022-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D")
    lines = [f"{i:06d},{d.date()},{a:.2f}" for i, d, a in zip(rng.integers(0, 2400, n), days, rng.gamma(2, 20, n))]
    path.write_text("customer_id,timestamp,amount\n" + "\n".join(lines) + "\n")
    return lines


def test_an_unbalanced_quote_in_a_large_file_is_named_not_absorbed(tmp_path):
    # 60,000 rows, about 1.4 MB: more than one block of Arrow's multithreaded reader, whose parser
    # stops at the quote still open at the end of the block and silently drops the rest of it.
    n, bad = 60_000, 30_000
    path = tmp_path / "transactions.csv"
    lines = _transactions_csv(path, n)
    broken = lines[bad - 1].replace(",", ',"', 1)  # 000123,"2022-02-14,52.54
    lines[bad - 1] = broken
    path.write_text("customer_id,timestamp,amount\n" + "\n".join(lines) + "\n")

    (v,) = _error(tmp_path).violations
    assert (v.source, v.column, v.n_rows) == (str(path), None, 1)
    assert v.rule.startswith("malformed CSV row: a quoted value runs past the end of its line")
    assert v.examples[0]["row"] == bad and v.examples[0]["line"] == bad + 1 and v.examples[0]["text"] == broken
    assert f"{path}: malformed CSV row: a quoted value runs past the end of its line" in str(_error(tmp_path))

    result = load_tables(tmp_path, on_invalid="quarantine", quarantine_dir=tmp_path / "q")
    tx = result.tables.transactions
    assert len(tx) == n - 1  # every other line is a row, those after the quote included
    expected = [line.split(",")[0] for k, line in enumerate(lines) if k != bad - 1]
    assert tx["customer_id"].tolist() == expected
    assert (result.report.rows_read, result.report.rows_expected, result.report.rows_quarantined) == (
        {"transactions": n}, {"transactions": n}, {"transactions": 1}
    )
    q = pd.read_csv(tmp_path / "q" / "transactions.quarantine.csv", dtype=str, keep_default_na=False)
    assert q[["row", "line", "text"]].values.tolist() == [[str(bad), str(bad + 1), broken]]
    assert q["reason"].iloc[0] == v.rule


def test_a_row_with_another_number_of_fields_is_named_by_its_line(tmp_path):
    text = "customer_id,timestamp,amount\n1,2024-01-01,1\n2,2024-01-01,1,extra\n3,2024-01-02\n4,2024-01-03,1\n\n,,\n"
    _write(tmp_path, "transactions.csv", text)
    (v,) = _error(tmp_path).violations
    assert v.rule == "malformed CSV row: number of fields differs from the header's" and v.n_rows == 2
    assert v.examples == [
        {"row": 2, "line": 3, "fields": 4, "expected": 3, "text": "2,2024-01-01,1,extra"},
        {"row": 3, "line": 4, "fields": 2, "expected": 3, "text": "3,2024-01-02"},
    ]
    result = load_tables(tmp_path, on_invalid="quarantine", quarantine_dir=tmp_path / "q")
    assert result.tables.transactions["customer_id"].tolist() == ["1", "4"]
    assert result.report.quarantined == {"transactions": {v.rule: 2}}
    # The empty line and the spreadsheet's empty row at the end are not data, and say so.
    report = result.report
    assert (report.rows_read, report.rows_expected, report.blank_lines_at_end) == (
        {"transactions": 4}, {"transactions": 4}, {"transactions": 2}
    )


def test_a_line_break_inside_a_quoted_value_is_a_malformed_row(tmp_path):
    # Legal in RFC 4180, but not in the contract's dialect (one row per line): from the parser's
    # side it is indistinguishable from an unbalanced quote that swallows the lines after it.
    _write(tmp_path, "transactions.csv", 'customer_id,timestamp,amount,note\n1,2024-01-01,1,"two\nlines"\n2,2024-01-02,2,ok\n')
    found = [(v.rule.split(" (")[0], [(e["line"], e["text"]) for e in v.examples]) for v in _error(tmp_path).violations]
    assert found == [
        ("malformed CSV row: a quoted value runs past the end of its line", [(2, '1,2024-01-01,1,"two')]),
        ("malformed CSV row: number of fields differs from the header's", [(3, 'lines"')]),
    ]


def test_two_stray_quotes_do_not_make_one_row_of_the_lines_between(tmp_path):
    # The second quote closes the first: Arrow reads one well-formed row whose note holds 3 lines.
    text = 'customer_id,timestamp,amount,note\n1,2024-01-01,1,"a\n2,2024-01-02,2,b\n3,2024-01-03,3,c"\n4,2024-01-04,4,d\n'
    _write(tmp_path, "transactions.csv", text)
    result = load_tables(tmp_path, on_invalid="quarantine", quarantine_dir=tmp_path / "q")
    assert result.tables.transactions["customer_id"].tolist() == ["2", "3", "4"]
    assert result.tables.transactions["note"].tolist() == ["b", 'c"', "d"]  # a quote inside a value is text
    q = pd.read_csv(tmp_path / "q" / "transactions.quarantine.csv", dtype=str)
    assert q[["line", "text"]].values.tolist() == [["2", '1,2024-01-01,1,"a']]


def test_a_quote_left_open_on_the_last_line_is_a_malformed_row(tmp_path):
    # It swallows only the final line end, so rows and lines agree in number.
    _write(tmp_path, "transactions.csv", 'customer_id,timestamp,amount\n1,2024-01-01,1\n2,2024-01-02,"2\n')
    (v,) = _error(tmp_path).violations
    assert v.rule.startswith("malformed CSV row: a quoted value runs past") and v.examples[0]["line"] == 3


def test_line_numbers_stay_exact_after_a_malformed_row(tmp_path):
    # CRLF line ends, a gzip-compressed file, a malformed row and a bad value further down.
    text = "customer_id,timestamp,amount\r\n1,2024-01-01,1\r\n2,2024-01-02,2,x\r\n\r\n4,someday,4\r\n5,2024-01-05,5\r\n"
    with gzip.open(tmp_path / "transactions.csv.gz", "wt", newline="") as f:
        f.write(text)
    found = [(v.column, v.rule.split(" (")[0], [(e["row"], e["line"]) for e in v.examples]) for v in _error(tmp_path).violations]
    assert found == [
        (None, "malformed CSV row: number of fields differs from the header's", [(2, 3)]),
        ("customer_id", "null or blank", [(3, 4)]),  # the blank line, a row of its own
        ("timestamp", "null", [(3, 4)]),
        ("timestamp", "unparseable date/datetime", [(4, 5)]),
        ("amount", "null", [(3, 4)]),
    ]
    result = load_tables(tmp_path, on_invalid="quarantine", quarantine_dir=tmp_path / "q")
    assert result.tables.transactions["customer_id"].tolist() == ["1", "5"]
    q = pd.read_csv(tmp_path / "q" / "transactions.quarantine.csv", dtype=str)
    assert q["line"].tolist() == ["3", "4", "5"] and q["row"].tolist() == ["2", "3", "4"]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 1 << 20])
@pytest.mark.parametrize("suffix", ["csv", "csv.gz"])
def test_line_ends_are_counted_once_whatever_the_chunks(tmp_path, monkeypatch, chunk, suffix):
    # \r\n split across two chunks is one line end; a lone \r is one too, as Arrow reads it.
    monkeypatch.setattr(csv_files, "_CHUNK", chunk)
    text = "customer_id,timestamp,amount\r\n1,2024-01-01,1\r2,2024-01-02,2\n3,2024-01-03,3\r\n4,2024-01-04,4"
    opener = gzip.open if suffix == "csv.gz" else open
    with opener(tmp_path / f"transactions.{suffix}", "wt", newline="") as f:
        f.write(text)
    table = csv_files.read_csv_table(tmp_path / f"transactions.{suffix}", {"customer_id", "timestamp", "amount"})
    # rows is None: the count agreed with Arrow's rows, so the file was read once, at full speed.
    assert (table.data.num_rows, table.data_lines, table.rows, table.malformed) == (4, 4, None, ())
    assert table.data.column("customer_id").to_pylist() == ["1", "2", "3", "4"]


def test_rows_read_are_checked_against_the_file(tmp_path):
    _write(tmp_path, "transactions.csv", GOOD_TRANSACTIONS + "\n\n")  # blank lines at the end are not data
    pd.DataFrame({"customer_id": ["00001"], "channel": ["search"]}).to_parquet(tmp_path / "customers.parquet")
    report = load_tables(tmp_path).report
    assert report.rows_read == report.rows_expected == {"transactions": 2, "customers": 1}
    assert report.blank_lines_at_end == {"transactions": 2}
    assert report.summary() == [
        f"transactions: 2 rows from {tmp_path / 'transactions.csv'} (data lines: 2, and 2 blank at the end)",
        f"customers: 1 rows from {tmp_path / 'customers.parquet'} (footer: 1)",
    ]


def test_an_empty_csv_file_is_an_error(tmp_path):
    _write(tmp_path, "transactions.csv", "")
    with pytest.raises(ValueError, match=r"transactions\.csv: empty file, expected a header line"):
        load_tables(tmp_path)


# --- corrupt Parquet ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def book_tables():
    return generate(3000, seed=0).tables


def _overwrite_middle(path: Path, n_bytes: int = 4096, seed: int = 1) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes())


def test_a_parquet_file_damaged_mid_file_without_checksums_is_caught_by_its_statistics(tmp_path, book_tables):
    # pandas' default writer stores no page checksums: the damaged page still decodes.
    book_tables.transactions.to_parquet(tmp_path / "transactions.parquet", index=False)
    path = tmp_path / "transactions.parquet"
    _overwrite_middle(path)
    raw = pd.read_parquet(path)
    assert len(raw) == len(book_tables.transactions)  # read back without any error...
    assert not raw["timestamp"].equals(book_tables.transactions["timestamp"])  # ...and wrong

    err = _error(tmp_path)
    (v,) = err.violations
    assert (v.source, v.column) == (str(path), "timestamp")
    assert v.rule == (
        "values outside the minimum..maximum the footer records for their row group: "
        "the file is corrupt; restore it from its source"
    )
    changed = raw["timestamp"].ne(book_tables.transactions["timestamp"]).to_numpy()
    assert 0 < v.n_rows <= changed.sum()
    assert [e["row"] for e in v.examples] == (np.flatnonzero(changed)[:5] + 1).tolist()
    # Corruption is never quarantined: the damage reaches beyond the values found.
    with pytest.raises(DataValidationError, match="the file is corrupt"):
        load_tables(tmp_path, on_invalid="quarantine", quarantine_dir=tmp_path / "q")


def test_write_tables_protects_its_files_with_page_checksums(tmp_path, book_tables):
    write_tables(book_tables, tmp_path)
    path = tmp_path / "transactions.parquet"
    _overwrite_middle(path)
    (v,) = _error(tmp_path).violations
    assert (v.source, v.column) == (str(path), "timestamp")
    assert "CRC checksum verification failed" in v.rule and v.rule.endswith("the file is corrupt; restore it from its source")
    assert v.examples == [{"row group": 0, "rows": f"1-{len(book_tables.transactions)}"}]


def test_the_synthetic_book_writer_protects_its_files_with_page_checksums(tmp_path):
    write_book(generate(300, seed=2), tmp_path)
    for name in ("transactions", "events", "customers", "ground_truth"):
        path = tmp_path / f"{name}.parquet"
        data = bytearray(path.read_bytes())
        # Flip one bit in the first data page: just after the 4-byte magic number and page header.
        data[64] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(OSError, match="CRC checksum verification failed"):
            pq.read_table(path, page_checksum_verification=True)


def test_a_file_that_is_not_parquet(tmp_path):
    (tmp_path / "transactions.parquet").write_bytes(b"customer_id,timestamp,amount\n1,2024-01-01,1\n")
    (v,) = _error(tmp_path).violations
    assert v.column is None and v.rule.startswith("not a readable Parquet file")


# --- rows whose customer is unknown: kept, counted and reported --------------------------------


def test_events_customers_and_referrers_without_a_customer_are_counted_not_dropped(tmp_path):
    _write(tmp_path, "transactions.csv", "customer_id,timestamp,amount\n7,2024-01-01,1\n8,2024-01-02,1\n")
    _write(
        tmp_path,
        "events.csv",
        "customer_id,timestamp,event_type\n7,2024-01-01,session\n007,2024-01-01,session\n007,2024-01-02,session\n"
        "9,2024-01-03,session\n",
    )
    _write(tmp_path, "customers.csv", "customer_id,channel,referred_by\n7,search,\n10,social,7\n11,social,10\n12,ads,99\n")
    result = load_tables(tmp_path)
    assert len(result.tables.events) == 4 and len(result.tables.customers) == 4  # nothing dropped
    assert result.report.unmatched == {
        "events": Unmatched(rows=3, ids=2, first=("007", "9")),
        "customers": Unmatched(rows=3, ids=3, first=("10", "11", "12")),
        "customers.referred_by": Unmatched(rows=1, ids=1, first=("99",)),  # 10 is a customer, 99 is nobody
    }
    summary = result.report.summary()
    assert summary[2] == "  3 row(s) of 2 customer(s) with no transaction (kept, used by no feature): 007, 9"
    assert summary[4:] == [
        "  3 row(s) of 3 customer(s) with no transaction (kept, used by no feature): 10, 11, 12",
        "  1 referred_by value(s) naming 1 customer(s) found in no table: 99",
    ]
