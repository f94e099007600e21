"""Every setting, read once from the environment and `.env`, then passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from platformdirs import user_data_dir
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path(user_data_dir("mailqueue", appauthor=False))


class Settings(BaseSettings):
    """The settings of every mailqueue process.

    Names are the environment variables (case-insensitive); `.env` in the working directory
    is read too. The README lists each with its meaning.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # Redis
    redis_url: str | None = Field(
        default=None,
        description="Redis to use. Unset: localhost:6379 when it answers, else an embedded one.",
    )
    redis_cluster: bool = Field(
        default=False,
        description="REDIS_URL is a node of a Redis Cluster (QUEUE_PREFIX must be a {hash tag})",
    )
    queue_prefix: str = Field(default="bull", description="BullMQ key prefix; `{tag}` for Cluster")
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where the embedded Redis keeps its AOF files.",
    )

    # Queues and jobs
    default_queue: str = Field(default="emails", description="The e-mail queue, as in the seed")
    job_attempts: int = Field(default=3, ge=1, description="Default attempts per job")
    job_backoff_type: Literal["exponential", "fixed"] = "exponential"
    job_backoff_delay_ms: int = Field(default=2000, ge=0)
    job_remove_on_complete: int = Field(
        default=1000, ge=0, description="Completed jobs kept per queue (0 keeps all)"
    )
    job_remove_on_fail: int = Field(
        default=5000, ge=0, description="Failed jobs kept per queue (0 keeps all)"
    )

    # Workers
    worker_concurrency: int = Field(default=5, ge=1)
    worker_close_timeout_s: float = Field(
        default=30.0, gt=0, description="How long a graceful close waits for active jobs"
    )

    # Events, audit, alerts
    audit_log_max: int = Field(default=10_000, ge=1, description="Audit entries kept (capped)")
    alert_failure_threshold: int = Field(
        default=5, ge=1, description="Failures of one queue or job name that raise an alert"
    )
    alert_window_s: float = Field(default=60.0, gt=0, description="...within this many seconds")

    # SMTP
    smtp_url: str | None = Field(
        default=None,
        description="smtp://user:pass@host:587?starttls=true. Unset: an in-process sink.",
    )
    mail_from: str = Field(default="mailqueue <noreply@localhost>")
    mail_template_dir: Path | None = Field(
        default=None, description="A folder of templates that override or add to the built-ins"
    )

    # Dashboard
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=3000, ge=0, le=65535)
    dashboard_auth: str | None = Field(
        default=None, description="user:password (basic) or a bearer token; comma-separated"
    )
    dashboard_viewer_auth: str | None = Field(
        default=None, description="Credentials (same forms) with the read-only role"
    )
    dashboard_read_only: bool = False

    log_level: str = "INFO"

    # E-mail rate limit and worker locks
    mail_rate_limit: int = Field(
        default=0, ge=0,
        description="E-mail queue: jobs (messages) per second across all workers; 0 = no limit",
    )
    worker_lock_duration_ms: int = Field(
        default=30_000, ge=500, description="How long a job's lock lasts before it is renewed"
    )
    worker_stalled_interval_ms: int = Field(
        default=30_000, ge=500,
        description="How often workers look for jobs whose worker died (lock expired)",
    )

    @field_validator("queue_prefix")
    @classmethod
    def _prefix_not_blank(cls, value: str) -> str:
        if not value.strip() or value != value.strip():
            raise ValueError("must be non-empty, without surrounding spaces")
        return value

    @field_validator("default_queue")
    @classmethod
    def _queue_name(cls, value: str) -> str:
        from mailqueue.job_options import validate_queue_name

        try:
            return validate_queue_name(value)
        except Exception as exc:
            raise ValueError(str(exc)) from None

    def default_job_options(self) -> dict[str, Any]:
        """Job options applied under every job's own options."""
        options: dict[str, Any] = {
            "attempts": self.job_attempts,
            "backoff": {"type": self.job_backoff_type, "delay": self.job_backoff_delay_ms},
        }
        options["removeOnComplete"] = self.job_remove_on_complete or False
        options["removeOnFail"] = self.job_remove_on_fail or False
        return options
