"""A throw-away PostgreSQL cluster for tests and benchmarks: temporary data directory, loopback only.

:func:`throwaway_cluster` runs ``initdb`` into a new temporary directory, starts the server with
``pg_ctl`` on a free port of 127.0.0.1 (its Unix socket in the same temporary directory), waits until
it accepts connections, and on exit stops it and deletes everything, also when the body raised.

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user that Debian's
package creates (through :func:`subprocess.run`'s ``user``/``group``, no ``su`` or PAM), and the
temporary directory is handed to that user. Connections use a random password over TCP, so the
cluster is no open door for other local users while it runs.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pcsv
from psycopg import sql

from serving.service import free_port

SERVER_USER = "postgres"
"""The unprivileged account the server runs as when the caller is root (created by Debian's package)."""

SUPERUSER = "clvcast"
"""The cluster's superuser (the database role, not a system account)."""

START_TIMEOUT_S = 60


class ClusterUnavailable(RuntimeError):
    """PostgreSQL's server programs, or an account to run them as, are not on this machine."""


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: on ``PATH``, else Debian's newest version.

    Debian keeps the server programs of each major version in ``/usr/lib/postgresql/<version>/bin``,
    off ``PATH`` (only the client wrappers are on it).
    """
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    found = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    if not found:
        return None

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", Path(path).parent.parent.name))

    return Path(max(found, key=version)).parent


@dataclass(frozen=True)
class Cluster:
    """A running throw-away cluster."""

    port: int
    password: str
    root: Path  # temporary directory: data/, the socket, server.log
    host: str = "127.0.0.1"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        """SQLAlchemy URL of ``database`` (``postgresql+<driver>://``; ``driver=""`` for ``postgresql://``)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{SUPERUSER}:{self.password}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres", **kwargs) -> psycopg.Connection:
        """A psycopg connection to ``database``."""
        return psycopg.connect(
            host=self.host, port=self.port, user=SUPERUSER, password=self.password, dbname=database, **kwargs
        )

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its ``postgresql+psycopg://`` URL."""
        with self.connect(autocommit=True) as con:  # CREATE DATABASE cannot run in a transaction
            con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def create_table(self, database: str, name: str, frame: pd.DataFrame, types: Mapping[str, str]) -> None:
        """Create table ``name`` with the given column types and copy the rows of ``frame`` into it.

        The rows travel as CSV written by Arrow (``COPY ... FROM STDIN``): text quoted, a missing
        value as an unquoted empty field, which PostgreSQL reads as NULL. Naive timestamps are read
        as UTC also into ``timestamptz`` columns (the session's time zone is UTC).
        """
        columns = list(types)
        definition = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(types[c])) for c in columns
        )
        buffer = io.BytesIO()
        pcsv.write_csv(
            pa.Table.from_pandas(frame[columns], preserve_index=False), buffer, pcsv.WriteOptions(include_header=False)
        )
        with self.connect(database) as con:
            con.execute("SET TIME ZONE 'UTC'")
            con.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(name), definition))
            copy = sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(sql.Identifier(name))
            with con.cursor().copy(copy) as cp:
                cp.write(buffer.getbuffer())


@contextlib.contextmanager
def throwaway_cluster(*, settings: dict[str, str] | None = None) -> Iterator[Cluster]:
    """Start a new PostgreSQL cluster in a temporary directory; stop it and delete it on exit.

    Parameters
    ----------
    settings : dict of str to str, optional
        Server settings (``-c name=value``) on top of the defaults here, which trade durability for
        speed (``fsync=off``): the data is thrown away anyway.

    Yields
    ------
    Cluster
        Host, port and password of the running server.

    Raises
    ------
    ClusterUnavailable
        The server programs are not installed, or the caller is root and there is no ``postgres``
        account to run the server as.
    RuntimeError
        ``initdb`` or ``pg_ctl start`` failed; the message holds the server log's tail.
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise ClusterUnavailable(
            "PostgreSQL server programs (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin; "
            "install Debian's postgresql package (.ci/run does)"
        )
    run_as: dict = {}
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise ClusterUnavailable(
                f"running as root and there is no {SERVER_USER!r} account to run the server as"
            ) from None
        run_as = dict(user=account.pw_uid, group=account.pw_gid, extra_groups=[])

    root = Path(tempfile.mkdtemp(prefix="clvcast-pg-"))
    started = False
    try:
        if run_as:
            os.chown(root, run_as["user"], run_as["group"])
        password = secrets.token_hex(16)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        if run_as:
            os.chown(pwfile, run_as["user"], run_as["group"])
        data = root / "data"

        def run(*args: str) -> subprocess.CompletedProcess:
            # cwd: the server account may not be allowed into the caller's working directory.
            return subprocess.run(
                [str(bin_dir / args[0]), *args[1:]], cwd=root, capture_output=True, text=True, **run_as
            )

        init = run(
            "initdb", "-D", str(data), "-U", SUPERUSER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )
        pwfile.unlink()
        if init.returncode:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")

        options = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(root),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            **(settings or {}),
        }
        for attempt in range(3):  # another process may take the free port before the server does
            port = free_port()
            opts = " ".join(f"-c {k}={v}" for k, v in {**options, "port": str(port)}.items())
            start = run(
                "pg_ctl", "start", "-D", str(data), "-l", str(root / "server.log"), "-w",
                "-t", str(START_TIMEOUT_S), "-o", opts,
            )
            if start.returncode == 0:
                started = True
                break
        if not started:
            log = (root / "server.log").read_text(errors="replace") if (root / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{start.stdout}\n{start.stderr}\n{log[-3000:]}")
        cluster = Cluster(port=port, password=password, root=root)
        with cluster.connect(connect_timeout=10) as con:  # pg_ctl -w waited; this checks our login works
            con.execute("select 1")
        yield cluster
    finally:
        if started:
            stop = run("pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w", "-t", "30")
            if stop.returncode:
                run("pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w", "-t", "30")
        shutil.rmtree(root, ignore_errors=True)
