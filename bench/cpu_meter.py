"""CPU time of the parts of a benchmark run: the server's process tree, this process, and the
Postgres backends serving the run's database (read from /proc: Linux, Postgres on this machine)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.pool import NullPool

from app.db import make_engine

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class CpuMeter:
    """CPU seconds of the server's process tree, of this process and of the run's Postgres backends."""

    server_pid: int | None
    db_url: str
    readings: list[tuple[float, float, float]] = field(default_factory=list)

    def read(self) -> None:
        server = tree_cpu_seconds(self.server_pid) if self.server_pid else float("nan")
        self.readings.append((server, time.process_time(), postgres_backend_cpu_seconds(self.db_url)))

    def per_loop_ms(self, loops: int) -> tuple[float, float, float]:
        (s0, c0, p0), (s1, c1, p1) = self.readings[0], self.readings[-1]
        return tuple((b - a) / max(loops, 1) * 1000 for a, b in ((s0, s1), (c0, c1), (p0, p1)))


def proc_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def tree_cpu_seconds(pid: int) -> float:
    """The process and its live descendants (uvicorn's supervisor and its workers)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += proc_cpu_seconds(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                pass
    return total


def postgres_backend_cpu_seconds(url: str) -> float:
    """Backends of the run's database; only meaningful for a Postgres on this machine."""
    if not url.startswith("postgresql"):
        return float("nan")
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            pids = conn.scalars(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
            ).all()
    finally:
        engine.dispose()
    return sum(proc_cpu_seconds(pid) for pid in pids)
