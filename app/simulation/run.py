"""`ranklab simulate`: the whole loop with a scripted labeling team, end to end over HTTP.

It bootstraps a fresh data dir, starts `ranklab serve` (web + embedded worker) as a subprocess,
creates a project and labeler accounts, uploads prompts, launches round 0, and then for every
round: the team labels it through the labeling API, the admin (this script) starts training,
and the next round appears from the new policy. This process never imports torch: all model
work happens in the server's worker.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.settings import ROOT, Settings
from app.simulation.gold import TARGET_AGREEMENT
from app.simulation.report import Report
from app.simulation.team import Team

TOPICS = (
    "sleep",
    "coffee",
    "rain",
    "bicycles",
    "the moon",
    "volcanoes",
    "bread",
    "chess",
    "honey bees",
    "the ocean",
    "trains",
    "music",
    "winter",
    "gardens",
    "libraries",
    "maps",
    "clocks",
    "bridges",
    "tea",
    "owls",
    "deserts",
    "kites",
    "soap",
    "glaciers",
    "penguins",
    "paper",
    "lighthouses",
    "salt",
)
TEMPLATES = ("Tell me about {}.", "Explain {} to a child.", "What is interesting about {}?", "Give one tip about {}.")


@dataclass
class Options:
    rounds: int = 3
    """Training rounds; the report covers rounds 0..rounds (the last one is generated, not trained)."""
    prompts: int = 12
    k: int = 4
    labelers: int = 3
    overlap: int = 2
    max_new_tokens: int = 48
    temperature: float = 1.0
    """Sampling temperature of the labeled completions and of PPO's rollouts alike."""
    ppo_steps: int = 6
    ppo_lr: float = 1e-4
    kl_coef: float = 0.05
    rm_lr: float = 5e-4
    rm_batch: int = 4
    model: str = ""
    """Empty: the bundled SmolLM2-135M-Instruct."""
    data_dir: Path | None = None
    port: int = 0
    seed: int = 0
    torch_threads: int = 0
    """Threads for the worker's torch (OMP_NUM_THREADS); 0 = torch's default (all cores)."""
    target_agreement: float = TARGET_AGREEMENT
    timeout_minutes: float = 60.0


def round_config(o: Options) -> dict[str, Any]:
    return {
        "model": o.model,
        "k": o.k,
        "seed": o.seed,
        "prompts": {"count": o.prompts, "validation_fraction": 0.25},
        # Sampled as a real round samples: no top-p (PPO samples without it), and PPO's rollouts
        # take generation's budget and temperature, so the reward model scores answers drawn the
        # way the ones it learned from were.
        "generation": {"max_new_tokens": o.max_new_tokens, "temperature": o.temperature, "prompts_per_task": 4},
        "reward": {"learning_rate": o.rm_lr, "batch_rankings": o.rm_batch, "max_length": 256, "epochs": 1},
        "ppo": {
            "steps": o.ppo_steps,
            "batch_size": 8,
            "minibatch_size": 4,
            "ppo_epochs": 4,
            "learning_rate": o.ppo_lr,
            "kl_coef": o.kl_coef,
            # No bonus for ending: whatever PPO gains must come from the learned reward model.
            "missing_eos_penalty": 0.0,
        },
        "labeling": {"min_coverage": 1.0, "auto_start": False},
    }


def prompts(o: Options) -> list[dict[str, str]]:
    texts = [t.format(topic) for topic in TOPICS for t in TEMPLATES]
    random.Random(o.seed).shuffle(texts)
    needed = o.prompts * (o.rounds + 1)
    if needed > len(texts):
        raise ValueError(f"--prompts × (--rounds + 1) = {needed}; at most {len(texts)} prompts are built in")
    return [{"external_id": f"sim-{i}", "text": text} for i, text in enumerate(texts[:needed])]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _setup(settings: Settings, o: Options) -> tuple[str, int, list[tuple[str, str]]]:
    """Database, admin token, project and labeler accounts (set-up only; labeling goes over HTTP)."""
    from sqlalchemy.orm import sessionmaker

    from app.admin.service import create_account
    from app.auth.service import create_api_token
    from app.bootstrap import bootstrap
    from app.db import make_engine
    from app.models import ProjectMember
    from app.projects.service import create_project

    bootstrap(settings, demo=False, out=lambda _line: None)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with sessionmaker(bind=engine)() as db, db.begin():
            _row, token = create_api_token(db, name="simulate", scopes=["admin"], created_by=None)
            project = create_project(
                db,
                name=f"simulation {time.strftime('%Y-%m-%d %H:%M:%S')}",
                k_min=o.k,
                k_max=o.k,
                overlap=o.overlap,
                guidelines="Prefer concise answers that finish their sentence.",
            )
            accounts = []
            for i in range(o.labelers):
                user, password = create_account(db, email=f"sim-labeler-{i}@ranklab.local", role="labeler")
                db.add(ProjectMember(project_id=project.id, user_id=user.id))
                accounts.append((user.email, password))
            project_id = project.id
    finally:
        engine.dispose()
    return token, project_id, accounts


class Server:
    """`ranklab serve` with its embedded worker, logging to <data_dir>/server.log."""

    def __init__(self, settings: Settings, torch_threads: int = 0):
        self.url = f"http://127.0.0.1:{settings.port}"
        env = {
            **os.environ,
            "RANKLAB_DATA_DIR": str(settings.data_dir),
            "RANKLAB_DATABASE_URL": "",
            "RANKLAB_BROKER_URL": "",
            "RANKLAB_RESULT_BACKEND": "",
            "RANKLAB_HOST": "127.0.0.1",
            "RANKLAB_PORT": str(settings.port),
            "RANKLAB_WEB_WORKERS": "1",
            "RANKLAB_EMBEDDED_WORKER": "true",
            "RANKLAB_ROUND_SWEEP_SECONDS": "10",
        }
        if torch_threads:
            env["OMP_NUM_THREADS"] = str(torch_threads)
        self.log_path = settings.data_dir / "server.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/login", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the server did not answer within {timeout} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


class Admin:
    def __init__(self, url: str, token: str, out):
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        self.out = out

    def call(self, method: str, path: str, **kwargs) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code} {response.text}")
        return response.json()

    def wait(self, round_id: int, wanted: tuple[str, ...], deadline: float) -> dict:
        last = ""
        while time.monotonic() < deadline:
            data = self.call("GET", f"/api/v1/rounds/{round_id}")
            if data["status"] in wanted:
                return data
            if data["status"] in ("failed", "cancelled"):
                raise RuntimeError(
                    f"round {data['number']} {data['status']} at {data['error_step']}: {data['error_message']}"
                )
            step = data["current_step"].split(":")[0]
            if step != last:
                self.out(f"    round {data['number']}: {step}")
                last = step
            time.sleep(2)
        raise RuntimeError(f"round {round_id} did not reach {'/'.join(wanted)} in time")

    def round_by_number(self, project_id: int, number: int) -> dict | None:
        return next(
            (r for r in self.call("GET", f"/api/v1/projects/{project_id}/rounds") if r["number"] == number), None
        )


def simulate(o: Options, out=print) -> Report:
    started = time.monotonic()
    deadline = started + o.timeout_minutes * 60
    data_dir = o.data_dir or Path(tempfile.mkdtemp(prefix="ranklab-simulate-"))
    settings = Settings(data_dir=data_dir, database_url="", broker_url="", port=o.port or _free_port(), _env_file=None)
    out(f"data dir {data_dir}; server log {data_dir / 'server.log'}")
    token, project_id, accounts = _setup(settings, o)
    server = Server(settings, o.torch_threads)
    report = Report(o.target_agreement)
    try:
        server.wait_ready()
        admin = Admin(server.url, token, out)
        admin.call("POST", f"/api/v1/projects/{project_id}/prompts", json={"prompts": prompts(o)})
        team = Team(server.url, accounts, seed=o.seed, target=o.target_agreement)
        current = admin.call("POST", f"/api/v1/projects/{project_id}/rounds", json=round_config(o))
        for number in range(o.rounds + 1):
            current = admin.wait(current["id"], ("labeling",), deadline)
            record = team.label_round(project_id)
            out(
                f"    round {number}: labeled {sum(len(v) for v in record.orders.values())} rankings "
                f"(σ = {team.sigma:.3f})"
            )
            if number == o.rounds:
                report.add(number, current, record)
                break
            admin.call("POST", f"/api/v1/rounds/{current['id']}/start", json={})
            finished = admin.wait(current["id"], ("done",), deadline)
            report.add(number, finished, record)
            out(report.line(number))
            nxt = admin.round_by_number(project_id, number + 1)
            if nxt is None:
                raise RuntimeError(f"round {number} finished without a next round (no unused prompts?)")
            current = nxt
        report.refresh_ood(admin, project_id)
        team.close()
    finally:
        server.stop()
    report.minutes = (time.monotonic() - started) / 60
    out("")
    out(report.table())
    return report
