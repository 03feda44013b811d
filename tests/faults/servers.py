"""Private Redis and PostgreSQL servers that a fault test may stop and start at will.

The shared servers on 6379/5432 serve every engineer and CI job, so a test that stops a
server runs its own: a redis-server subprocess on a free port, and a throw-away PostgreSQL
cluster (initdb into a temp dir, pg_ctl on a free port). PostgreSQL refuses to run as root; as
root, its commands run as the `postgres` OS user (runuser) on a dir that user owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests import services


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(ready, *, timeout: float, what: str) -> None:
    """Polls `ready()` until true; a server that never comes up is a setup failure, not a result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout} s")


class RedisServer:
    """`redis-server` without persistence: a stop loses its queues, as a crashed Redis would."""

    def __init__(self, workdir: Path):
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.log_path = workdir / f"redis-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it; closed with the process
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        _wait_until(self.ping, timeout=30, what=f"redis-server on port {self.port}")

    def stop(self) -> None:
        """SIGTERM and wait: once this returns the port refuses connections."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


class PostgresCluster:
    """A cluster of its own: `initdb` once, then `pg_ctl start/stop/restart` as the test wants."""

    def __init__(self):
        self.bin = _postgres_bin()
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        # Not under pytest's tmp_path: that is root-only (0700), and the server runs as `postgres`.
        self.dir = Path(tempfile.mkdtemp(prefix="ranklab-pg-"))
        self.data = self.dir / "data"
        self.log_path = self.dir / "server.log"
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        return subprocess.run([*prefix, *command], capture_output=True, text=True, check=check)

    def _pg_ctl(self, action: str, *extra: str) -> None:
        # -w: return only when the server accepts connections (start) or is gone (stop).
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        result = self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            "120",
            "-o",
            options,
            action,
            *extra,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl {action} failed: {result.stdout}{result.stderr}\n{self.log_tail()}")

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"
        )

    def start(self) -> None:
        self._pg_ctl("start")

    def stop(self) -> None:
        """Fast shutdown: open sessions are ended, as a crashed or restarted server ends them."""
        self._pg_ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")

    def running(self) -> bool:
        return self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "status", check=False).returncode == 0

    def create_database(self, name: str) -> str:
        from sqlalchemy import text

        from app.db import make_engine

        engine = make_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def destroy(self) -> None:
        if self.running():
            self._pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def require_redis_server() -> None:
    if shutil.which("redis-server") is None:
        services.missing("redis-server (to run a private Redis that the test can stop)")


def require_postgres_binaries() -> None:
    if _postgres_bin() is None:
        services.missing("PostgreSQL server binaries (initdb, pg_ctl) for a private cluster")
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root needs a `postgres` OS user to own the private cluster")
