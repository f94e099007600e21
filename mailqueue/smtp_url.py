"""SMTP_URL: where and how to send mail, parsed and checked (`SmtpConfig.from_url`).

The settings check SMTP_URL with it when they are read, so a typo stops the program at start
with its reason; the transport (mailqueue/mail/transport.py) connects with what it parsed.
It imports nothing of mailqueue: the settings, at the bottom of the layers, use it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, unquote, urlparse

DEFAULT_POOL_SIZE = 5
DEFAULT_TIMEOUT_S = 30.0
# RFC 5321 4.5.3.2.6: wait 10 minutes for the reply to the end of DATA. Giving up sooner on a
# server that did accept the message makes the retry send a second copy.
DEFAULT_DATA_TIMEOUT_S = 600.0

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# What every SMTP_URL error ends with: the shape a person should type.
EXPECTED_FORM = "expected smtp://user:pass@host:587?starttls=true or smtps://user:pass@host:465"
OPTIONS = ("starttls", "timeout", "data_timeout", "pool", "verify", "helo")


def _bad(problem: str) -> ValueError:
    return ValueError(f"SMTP_URL: {problem} ({EXPECTED_FORM})")


def _flag(query: dict[str, list[str]], name: str) -> bool | None:
    if name not in query:
        return None
    value = query[name][-1].strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _bad(f"{name}={value!r} should be true or false")


def _number(query: dict[str, list[str]], name: str, default: float, what: str) -> float:
    raw = query.get(name, [str(default)])[-1]
    try:
        value = float(raw)
    except ValueError:
        raise _bad(f"{name}={raw!r} should be {what}") from None
    if not value > 0:  # also refuses nan
        raise _bad(f"{name}={raw!r} should be {what}, more than 0")
    return value


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Where and how to connect, parsed from `SMTP_URL`.

    `smtp://user:pass@host:587?starttls=true` — STARTTLS required; `starttls=false` never;
    no `starttls`: used when the server offers it. `smtps://host:465` — implicit TLS.
    Other query parameters: `timeout` (seconds, per SMTP command), `data_timeout` (seconds
    for the reply to the message itself, 600 by default as RFC 5321 says), `pool` (connections),
    `verify=false` (accept any certificate: development only), `helo` (the EHLO name).
    """

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool = False
    start_tls: bool | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    data_timeout: float = DEFAULT_DATA_TIMEOUT_S
    pool_size: int = DEFAULT_POOL_SIZE
    validate_certs: bool = True
    local_hostname: str | None = None

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """Parse `url`; a ValueError says which part is wrong, never quoting the password."""
        parsed = urlparse(url.strip())
        if parsed.scheme not in ("smtp", "smtps"):
            if "://" not in url:
                raise _bad("no scheme: it must start with smtp:// or smtps://")
            raise _bad(f"must start with smtp:// or smtps://, not {parsed.scheme}://")
        if not parsed.hostname:
            raise _bad("no host")
        query = parse_qs(parsed.query, keep_blank_values=True)
        unknown = sorted(set(query) - set(OPTIONS))
        if unknown:
            # A misspelt option (`startls`) silently ignored would change how mail is sent.
            close = difflib.get_close_matches(unknown[0], OPTIONS, n=1)
            hint = f"did you mean {close[0]}?" if close else f"options: {', '.join(OPTIONS)}"
            raise _bad(f"unknown option {unknown[0]!r}; {hint}")
        use_tls = parsed.scheme == "smtps"
        start_tls = _flag(query, "starttls")
        if use_tls and start_tls:
            raise _bad("smtps:// is implicit TLS; drop starttls=true")
        if use_tls:
            default_port = 465
        elif start_tls:
            default_port = 587
        else:
            default_port = 25
        try:
            port = parsed.port or default_port
        except ValueError:
            # urllib's message quotes the port text; the netloc would show the password.
            port_text = parsed.netloc.rpartition("@")[2].rpartition(":")[2]
            raise _bad(f"port {port_text!r} is not a port number (1-65535)") from None
        timeout = _number(query, "timeout", DEFAULT_TIMEOUT_S, "a number of seconds")
        data_timeout = _number(query, "data_timeout", DEFAULT_DATA_TIMEOUT_S,
                               "a number of seconds")
        pool_raw = query.get("pool", [str(DEFAULT_POOL_SIZE)])[-1]
        if not pool_raw.isdigit() or int(pool_raw) < 1:
            raise _bad(f"pool={pool_raw!r} should be a number of connections, at least 1")
        pool_size = int(pool_raw)
        verify = _flag(query, "verify")
        return cls(
            host=parsed.hostname,
            port=port,
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password is not None else None,
            use_tls=use_tls,
            start_tls=False if use_tls else start_tls,
            timeout=timeout,
            data_timeout=max(data_timeout, timeout),
            pool_size=pool_size,
            validate_certs=verify is not False,
            local_hostname=query.get("helo", [""])[-1] or None,
        )

    def redacted_url(self) -> str:
        """The URL without the password, for logs and error messages."""
        scheme = "smtps" if self.use_tls else "smtp"
        user = f"{quote(self.username, safe='')}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"
