"""The one place ranklab reads configuration from (environment variables or .env)."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
GPU_CLASS = r"^([a-z0-9][a-z0-9_-]{0,31})?$"
"""A GPU class names part of a queue (`train.a100`): lower-case letters, digits, - and _."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RANKLAB_", env_file=".env", extra="ignore")

    data_dir: Path = ROOT / "data"
    """Where the embedded SQLite DB, the converted default model and artifacts live."""

    database_url: str = ""
    """SQLAlchemy URL. Empty means the embedded SQLite file `<data_dir>/ranklab.sqlite`.
    Production: postgresql+psycopg://user:pass@host/db."""

    secret_key: str = ""
    """Keys the labeler pseudonyms in exports (CSRF tokens are random per login session, not signed).
    Empty: a random key is generated once and kept in <data_dir>/secret_key."""

    host: str = "127.0.0.1"
    port: int = 8000
    web_workers: int = 1
    """uvicorn worker processes for `ranklab serve`."""
    keepalive_requests: int = Field(default=100, ge=0)
    """`ranklab serve` closes a keep-alive connection after this many requests (0: never), so
    long-lived connections spread evenly over the worker processes (app/keepalive.py)."""
    labeling_threads: int = Field(default=4, ge=1)
    """Submits and skips one web process runs at once; more wait their turn in arrival order
    (app/labeling/hot_path.py). Fewer at once kept the labeling loop's p99 near its median."""
    access_log: bool = False
    """uvicorn's per-request access log for `ranklab serve` (off: it costs CPU on every request)."""

    secure_cookies: bool = False
    """Always mark the session cookie Secure. Without it the cookie is still Secure on requests
    that arrive over https, directly or through a proxy whose X-Forwarded-Proto uvicorn trusts
    (uvicorn's FORWARDED_ALLOW_IPS environment variable, default 127.0.0.1)."""
    session_hours: int = 12
    """How long a login lasts; logging out or deactivating the account ends it at once."""

    max_body_bytes: int = 10 * 1024 * 1024
    """Largest JSON request body; larger ones get 413."""
    max_upload_bytes: int = 512 * 1024 * 1024
    """Largest uploaded JSONL file; larger ones get 413."""
    max_text_chars: int = 100_000
    """Longest prompt or completion text accepted."""

    default_lease_minutes: int = 30
    """How long a labeler holds a task before the slot is freed for others."""
    lease_sweep_seconds: float = 5.0
    """How often (at most) a web process frees expired leases."""

    broker_url: str = ""
    """Celery broker. Empty: kombu's SQLAlchemy transport on <data_dir>/broker.sqlite (embedded)."""
    result_backend: str = ""
    embedded_worker: bool = True
    """`ranklab serve` starts a solo-pool worker beside the web process when True."""

    default_model: str = ""
    """Hub id or local folder of the base policy. Empty: the bundled SmolLM2-135M-Instruct."""

    round_stale_seconds: float = 120.0
    """A running round step whose worker heartbeat (every few seconds) is older than this is
    presumed dead (worker killed) and enqueued again."""
    round_sweep_seconds: float = 30.0
    """How often each worker looks for dead steps and rounds whose labeling reached the threshold."""
    active_min_ranked_tasks: int = Field(30, ge=1, le=1_000_000)
    """Active-learning handout orders start scoring tasks once this many training tasks are ranked:
    before that, uncertainty sampling measured worse than the default order (cold start,
    docs/active-learning.md)."""
    train_processes: int = Field(1, ge=1, le=1024)
    """Processes a training worker starts for reward-model and SFT training: one per GPU it owns
    (docs/distributed.md). 1 trains in the worker's own process."""
    train_strategy: Literal["ddp", "fsdp", "deepspeed2", "deepspeed3"] = "ddp"
    """With train_processes > 1: data-parallel DDP, or sharded FSDP / DeepSpeed ZeRO-2/3 (reward
    model only; SFT runs DDP)."""
    train_mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """accelerate's mixed precision for those runs."""
    train_accelerate_config: str = ""
    """An `accelerate config` YAML on the worker for setups the settings above do not cover."""
    train_gpu_class: str = Field("", pattern=GPU_CLASS)
    """Send training tasks to the queue `train.<class>` (e.g. a100), served by workers started with
    that class (docs/deployment.md). Empty: the queue `train`. Web and workers must agree."""
    generate_gpu_class: str = Field("", pattern=GPU_CLASS)
    """The same for generation and AI judge runs: `generate.<class>`."""
    evaluate_gpu_class: str = Field("", pattern=GPU_CLASS)
    """The same for evaluation (eval-set completions and metrics): `evaluate.<class>`."""
    fault_inject: str = ""
    """Testing only: a round step name (e.g. training_policy) whose task raises on purpose;
    `<step>:stall` makes it stop for good at its first progress report, still heartbeating."""

    admin_email: str = "admin@ranklab.local"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'ranklab.sqlite'}"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    def resolved_secret_key(self) -> str:
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            import secrets

            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
        return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
