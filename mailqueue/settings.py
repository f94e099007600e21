"""Every setting, read once from the environment and `.env`, then passed down."""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any, Literal

from platformdirs import user_data_dir
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from mailqueue.dkim_names import check_dns_name, signed_header_names
from mailqueue.redact import MASK, redact_url
from mailqueue.smtp_url import SmtpConfig
from mailqueue.unsubscribe_url import check_base_url

log = logging.getLogger(__name__)

# A `.env` key that starts like one of ours is surely meant for us: a misspelt one is
# reported, not silently ignored. Other keys (`.env` files are often shared with other
# tools) are reported only when they are a near miss of a setting's name.
_OUR_PREFIXES = ("redis_", "smtp_", "mail_", "dashboard_", "worker_", "job_", "queue_",
                 "alert_", "audit_", "mailqueue_")
# The environment holds many unrelated variables: only these are ours to check there.
_ENV_PREFIX = "mailqueue_"
# Shown as *** in repr() and str(): the password of a URL, or the whole credential list.
_URL_SECRETS = ("redis_url", "smtp_url")
_CREDENTIALS = ("dashboard_auth", "dashboard_viewer_auth", "mail_unsubscribe_secret")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def port_number(value: Any) -> int:
    """A TCP port from text or a number (0: any free port); a ValueError says what is wrong.

    One rule for DASHBOARD_PORT and `--port`.
    """
    text = str(value).strip()
    if isinstance(value, bool) or not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise ValueError(f"{text!r} is not a port number: use 1-65535 (0: any free port)")
    return int(text)


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
    redis_connect_timeout_s: float = Field(
        default=60.0, ge=0,
        description="How long start waits for a REDIS_URL Redis that does not answer yet; 0: "
                    "fail at once",
    )
    redis_command_timeout_s: float = Field(
        default=1.5, ge=0,
        description="How long one Redis command (pages, /health, adding jobs) may go "
                    "unanswered before Redis counts as unavailable; 0: wait forever. "
                    "Blocking reads (workers, events) never time out",
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
    worker_runtime: Literal["native", "bullmq"] = Field(
        default="native",
        description="Worker loop: native (Node BullMQ's loop over bullmq's scripts: fetch-next, "
        "pipelined completions) or bullmq (bullmq-python's Worker)",
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
    # DKIM: all three, or none. The key file is read where the signer is made (worker start).
    mail_dkim_domain: str | None = Field(
        default=None, description="DKIM signing domain (d=); with MAIL_DKIM_SELECTOR and "
        "MAIL_DKIM_KEY_FILE, every message is signed",
    )
    mail_dkim_selector: str | None = Field(
        default=None, description="DKIM selector (s=): the key is published as TXT at "
        "<selector>._domainkey.<domain>",
    )
    mail_dkim_key_file: Path | None = Field(
        default=None, description="The DKIM private key: PEM, RSA, at least 1024 bits (2048 "
        "recommended)",
    )
    mail_dkim_headers: str = Field(
        default="From, To, Cc, Subject, Date, Message-ID, MIME-Version, Content-Type, "
                "Reply-To, List-Unsubscribe, List-Unsubscribe-Post",
        description="Headers the DKIM signature covers, comma-separated (those a message has)",
    )

    # One-click unsubscribe (RFC 8058): mailqueue/mail/unsubscribe.py, docs/mail.md
    mail_unsubscribe_url: str | None = Field(
        default=None, description="Public https base URL of the unsubscribe app "
        "(`mailqueue unsubscribe-server`, or where it is mounted): newsletters then carry "
        "List-Unsubscribe: <URL>/<signed token>",
    )
    mail_unsubscribe_secret: SecretStr | None = Field(
        default=None, validate_default=True,
        description="The key that signs unsubscribe links (16+ characters); required with "
        "MAIL_UNSUBSCRIBE_URL and by the unsubscribe app",
    )
    mail_unsubscribe_ttl_days: int = Field(
        default=365, ge=1, le=3650, description="How long an unsubscribe link works (days)"
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
    dashboard_allowed_hosts: str | None = Field(
        default=None,
        description="Host names the dashboard answers to besides loopback ones and the "
        "address it binds (those a proxy serves), comma-separated; * for any",
    )

    log_level: str = "INFO"

    # E-mail rate limit and worker locks
    mail_rate_limit: int = Field(
        default=0, ge=0,
        description="E-mail queue: jobs (messages) per second across all workers; 0 = no limit",
    )
    # The delivery log (mailqueue.mail.message_log): every send attempt, searchable.
    mail_log_max_entries: int = Field(
        default=100_000, ge=1_000,
        description="Delivery-log entries kept; the oldest go first",
    )
    mail_log_max_age_days: float = Field(
        default=30, gt=0, description="Delivery-log entries older than this go",
    )
    worker_lock_duration_ms: int = Field(
        default=30_000, ge=500, description="How long a job's lock lasts before it is renewed"
    )
    worker_stalled_interval_ms: int = Field(
        default=30_000, ge=500,
        description="How often workers look for jobs whose worker died (lock expired)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The sources have read `.env` and the environment by now: the one place that sees
        # which keys were there, so that a misspelt one is reported instead of ignored.
        if isinstance(dotenv_settings, DotEnvSettingsSource):
            warn_unknown_keys(dotenv_settings.env_vars, ".env", only_prefix=None)
        if isinstance(env_settings, EnvSettingsSource):
            warn_unknown_keys(env_settings.env_vars, "the environment",
                              only_prefix=_ENV_PREFIX)
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    def __repr_args__(self) -> Any:
        # repr(), str() and every log line or traceback that shows the settings: no secrets.
        for name, value in super().__repr_args__():
            if value is not None and name in _URL_SECRETS:
                value = redact_url(str(value))
            elif value and name in _CREDENTIALS:
                value = MASK
            yield name, value

    def for_short_command(self) -> Settings:
        """These settings for a one-shot command (`send`, `status`): it fails at once when
        Redis does not answer, unless REDIS_CONNECT_TIMEOUT_S was set explicitly.

        A long-running worker or dashboard waits for a Redis that starts after it; a command
        a person or a script just typed should say at once that Redis is not there.
        """
        if "redis_connect_timeout_s" in self.model_fields_set:
            return self
        return self.model_copy(update={"redis_connect_timeout_s": 0.0})

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

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        level = "WARNING" if level == "WARN" else level
        if level not in LOG_LEVELS:
            raise ValueError(f"{value!r} is not a log level: use {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("dashboard_port", mode="before")
    @classmethod
    def _dashboard_port(cls, value: Any) -> int:
        return port_number(value)

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        # Checked here, once, so a typo stops the program at start with its reason, instead
        # of failing every e-mail job later.
        if value is None or not value.strip():
            return None
        try:
            SmtpConfig.from_url(value)
        except ValueError as exc:  # its message never quotes the password
            raise ValueError(str(exc).removeprefix("SMTP_URL: ")) from None
        return value

    @field_validator("mail_dkim_domain", "mail_dkim_selector", "mail_dkim_key_file",
                     mode="before")
    @classmethod
    def _dkim_blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("mail_dkim_domain", "mail_dkim_selector")
    @classmethod
    def _dkim_names(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Only what needs no file: the key itself is checked where the signer is made.
        if value is None:
            return None
        what = "domain" if info.field_name == "mail_dkim_domain" else "selector"
        name = check_dns_name(value, what)
        domain = info.data.get("mail_dkim_domain")
        if what == "selector" and domain and len(f"{name}._domainkey.{domain}") > 253:
            raise ValueError(f"{name}._domainkey.{domain} is longer than a DNS name may be")
        return name

    @field_validator("mail_dkim_headers")
    @classmethod
    def _dkim_headers(cls, value: str) -> str:
        return ", ".join(signed_header_names(value))

    @field_validator("mail_unsubscribe_url", mode="before")
    @classmethod
    def _unsubscribe_url(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return check_base_url(value)

    @field_validator("mail_unsubscribe_secret", mode="before")
    @classmethod
    def _unsubscribe_secret(cls, value: Any, info: ValidationInfo) -> Any:
        # Never quoted in a message: it is a secret.
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text is None or (isinstance(text, str) and not text.strip()):
            if info.data.get("mail_unsubscribe_url"):
                raise ValueError(
                    "required when MAIL_UNSUBSCRIBE_URL is set (it signs the links): e.g. "
                    "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
            return None
        if not isinstance(text, str) or len(text.strip()) < 16:
            raise ValueError("too short: use at least 16 random characters")
        return text.strip()

    def default_job_options(self) -> dict[str, Any]:
        """Job options applied under every job's own options."""
        options: dict[str, Any] = {
            "attempts": self.job_attempts,
            "backoff": {"type": self.job_backoff_type, "delay": self.job_backoff_delay_ms},
        }
        options["removeOnComplete"] = self.job_remove_on_complete or False
        options["removeOnFail"] = self.job_remove_on_fail or False
        return options


def warn_unknown_keys(keys: Any, where: str, only_prefix: str | None) -> None:
    """Log one warning per key that looks meant for mailqueue but names no setting.

    `only_prefix`: check only keys with this prefix (the environment); None: keys that start
    like ours or nearly match a setting (`.env`).
    """
    known = list(Settings.model_fields)
    for raw in keys:
        key = str(raw).lower()
        if key in Settings.model_fields:
            continue
        bare = key.removeprefix(_ENV_PREFIX)
        if only_prefix is not None:
            if not key.startswith(only_prefix):
                continue
        elif not key.startswith(_OUR_PREFIXES) and not difflib.get_close_matches(
            key, known, n=1, cutoff=0.85
        ):
            continue
        close = difflib.get_close_matches(bare, known, n=1, cutoff=0.6)
        if bare != key and bare in Settings.model_fields:
            hint = f"settings take no MAILQUEUE_ prefix: use {bare.upper()}"
        elif close:
            hint = f"did you mean {close[0].upper()}?"
        else:
            hint = "no setting is named like it; see .env.example"
        log.warning("Unknown setting %s in %s: ignored (%s)", key.upper(), where, hint)
