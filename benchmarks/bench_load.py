"""Time ``load_tables`` on about a million transactions as CSV, gzip-compressed CSV and Parquet.

Usage::

    python benchmarks/bench_load.py                              # 53,000 customers: ~1.07M rows
    python benchmarks/bench_load.py --all-tables                 # with their events and customers
    python benchmarks/bench_load.py --all-tables --breakdown     # CPU time of each integrity check
    python benchmarks/bench_load.py --customers 5000 --repeat 3 --data-dir /tmp/books

The transactions (with ``--all-tables``: and the events and customers) of a synthetic book are
written once per (customers, seed, tables) with this checkout's :func:`features.io.write_tables`
(Parquet with page checksums, CSV one row per line) into ``--data-dir``, then loaded ``--repeat``
times per format in this process (the files in the page cache). Reported per format: rows, the
minimum and the median wall time of ``load_tables`` (read, integrity checks, validation, the
report and the pandas frames it returns) and the minimum CPU time of the process over the load (all
threads: less sensitive than wall time to other jobs on a shared machine). ``--breakdown`` times,
instead, each check that the loader adds to reading (CPU time, minimum of ``--repeat`` runs): the
line count of the CSV files, Parquet page checksums and footer statistics, the plausible timestamp
range, the count of unmatched ids, and the slower path of a CSV file with one unbalanced quote.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Runs as a script from a checkout as well as with the package installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402

from features.contract import TABLE_SPECS, Tables  # noqa: E402
from features.io import load_tables, write_tables  # noqa: E402
from features.io.csv_files import _count_lines, _file_chunks, _parse, read_csv_table  # noqa: E402
from features.io.load import _unmatched_ids  # noqa: E402
from features.io.parquet_files import _footer_mismatches  # noqa: E402
from features.io.sources import DirectoryReader  # noqa: E402
from features.io.validate import _outside_plausible_range, validate_table  # noqa: E402
from features.synthetic import generate  # noqa: E402

FORMATS = ("csv", "csv.gz", "parquet")


def book_dirs(data_dir: Path, n_customers: int, seed: int, all_tables: bool) -> dict[str, Path]:
    """One directory per format holding the book's tables, written on first use."""
    which = "all" if all_tables else "tx"
    dirs = {fmt: data_dir / f"clvcast-load-{n_customers}-seed{seed}-{which}-{fmt}" for fmt in FORMATS}
    missing = [fmt for fmt, d in dirs.items() if not d.exists()]
    if missing:
        print(f"generating {n_customers:,} customers ...", flush=True)
        tables = generate(n_customers, seed=seed).tables
        if not all_tables:
            tables = Tables(transactions=tables.transactions)
        for fmt in missing:
            write_tables(tables, dirs[fmt], format=fmt)
    return dirs


def time_load(path: Path, repeat: int) -> tuple[int, list[float], list[float]]:
    """Rows loaded (all tables), and the wall and CPU seconds (all threads) of each of ``repeat`` loads."""
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = load_tables(path)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    t = result.tables
    return sum(len(frame) for frame in (t.transactions, t.events, t.customers) if frame is not None), wall, cpu


def cpu_ms(f, repeat: int) -> float:
    """Minimum CPU milliseconds of ``repeat`` calls of ``f``."""
    seconds = []
    for _ in range(repeat):
        start = time.process_time()
        f()
        seconds.append(time.process_time() - start)
    return 1000 * min(seconds)


def breakdown(dirs: dict[str, Path], repeat: int) -> None:
    """CPU time of each check the loader adds, beside the reading it checks."""
    rows = []
    for path in sorted(dirs["csv"].glob("*.csv")):
        declared = {c.name for c in TABLE_SPECS[path.stem].columns}
        rows.append((f"{path.name}: Arrow's parse", cpu_ms(lambda: _parse(path, declared), repeat)))
        rows.append((f"{path.name}: line count (added)", cpu_ms(lambda: _count_lines(_file_chunks(path)), repeat)))
    for path in sorted(dirs["parquet"].glob("*.parquet")):
        rows.append((f"{path.name}: read", cpu_ms(lambda: pq.ParquetFile(path).read(), repeat)))
        verified = cpu_ms(lambda: pq.ParquetFile(path, page_checksum_verification=True).read(), repeat)
        rows.append((f"{path.name}: read, checksums verified (added)", verified))
        table, metadata = pq.read_table(path), pq.ParquetFile(path).metadata
        footer = cpu_ms(lambda: _footer_mismatches(table, metadata, ""), repeat)
        rows.append((f"{path.name}: footer statistics (added)", footer))
    reader = DirectoryReader(dirs["parquet"])
    checked = {n: validate_table(TABLE_SPECS[n], reader.read(n, {}), {}) for n in reader.table_names}
    timestamps = checked["transactions"].columns["timestamp"]
    plausible = cpu_ms(lambda: _outside_plausible_range(timestamps), repeat)
    rows.append(("transactions: plausible timestamp range (added)", plausible))
    rows.append(("all tables: unmatched ids (added)", cpu_ms(lambda: _unmatched_ids(checked), repeat)))
    # The path of a malformed file: one unbalanced quote in the middle of the transactions.
    source = dirs["csv"] / "transactions.csv"
    lines = source.read_bytes().split(b"\n")
    middle = len(lines) // 2
    lines[middle] = lines[middle].replace(b",", b',"', 1)
    declared = {c.name for c in TABLE_SPECS["transactions"].columns}
    with tempfile.TemporaryDirectory() as tmp:
        broken = Path(tmp) / "transactions.csv"
        broken.write_bytes(b"\n".join(lines))
        whole = cpu_ms(lambda: read_csv_table(source, declared), min(repeat, 3))
        rows.append(("transactions.csv: read, checked (the usual path)", whole))
        malformed = cpu_ms(lambda: read_csv_table(broken, declared), min(repeat, 3))
        rows.append((f"same, unbalanced quote on line {middle + 1:,}", malformed))
    for label, ms in rows:
        print(f"{label:55s} {ms:7.1f} ms CPU", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=53_000, help="synthetic customers (~20 transactions each)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=7, help="loads per format")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp"), help="where the files are written once")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--all-tables", action="store_true", help="events and customers too, not only transactions")
    parser.add_argument("--breakdown", action="store_true", help="time each added check instead of whole loads")
    args = parser.parse_args(argv)

    dirs = book_dirs(args.data_dir, args.customers, args.seed, args.all_tables)
    if args.breakdown:
        breakdown(dirs, args.repeat)
        return
    for fmt in args.formats:
        rows, wall, cpu = time_load(dirs[fmt], args.repeat)
        print(
            f"{fmt:8s} {rows:>10,} rows  wall min {min(wall):6.3f} s  median {statistics.median(wall):6.3f} s"
            f"  cpu min {min(cpu):6.3f} s  ({args.repeat} loads)",
            flush=True,
        )


if __name__ == "__main__":
    main()
