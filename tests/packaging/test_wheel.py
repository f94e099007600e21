"""The project as a user gets it: built, installed from the wheel outside the checkout, run.

An editable install hides missing package data (the checkout's folders are right there), so
this builds the sdist and, from the sdist, the wheel (what `pip install mailqueue` would do),
installs the wheel into a fresh virtualenv in a temporary folder, and runs the installed
`mailqueue` from a working directory that holds a `dashboard` package of the user's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailqueue import __version__
from mailqueue.redis_server import free_port
from tests.waiting import eventually_sync

CHECKOUT = Path(__file__).resolve().parents[2]


def _run(args: list[str], timeout: float = 600, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`python -m build`: the sdist, then the wheel built from that sdist."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(CHECKOUT)])
    wheels = list(out.glob("*.whl"))
    sdists = list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


@pytest.fixture(scope="module")
def installed(dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv outside the checkout with the wheel (and its dependencies) in it."""
    env_dir = tmp_path_factory.mktemp("user-venv")
    venv.EnvBuilder(with_pip=True).create(env_dir)
    _run([str(env_dir / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
          str(dists["wheel"])])
    return env_dir / "bin"


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """A user's project folder: their own `dashboard` package, and no .env of ours."""
    (tmp_path / "dashboard").mkdir()
    (tmp_path / "dashboard" / "__init__.py").write_text("OWNER = 'the user'\n")
    return tmp_path


def test_wheel_ships_the_web_layer_under_the_project_namespace(dists: dict[str, Path]) -> None:
    names = set(zipfile.ZipFile(dists["wheel"]).namelist())
    for expected in (
        "mailqueue/py.typed",
        "mailqueue/dashboard/app.py",
        "mailqueue/dashboard/views/queues.py",
        "mailqueue/dashboard/templates/base.html",
        "mailqueue/dashboard/templates/pages/overview.html",
        "mailqueue/dashboard/templates/partials/_sidebar.html",
        "mailqueue/dashboard/static/app.css",
        "mailqueue/dashboard/static/vendor/htmx-2.0.11.min.js",
        "mailqueue/mail/templates/welcome/body.html",
        f"mailqueue-{__version__}.dist-info/licenses/LICENSE",
    ):
        assert expected in names, f"{expected} missing from the wheel"
    # Every package of the checkout is in the wheel (pyproject lists them one by one).
    inits = [*CHECKOUT.glob("mailqueue/**/__init__.py"), *CHECKOUT.glob("dashboard/**/__init__.py")]
    for init in inits:
        relative = init.relative_to(CHECKOUT).as_posix()
        if relative.startswith("dashboard/"):
            relative = "mailqueue/" + relative
        assert relative in names, f"package {relative} missing from the wheel (pyproject)"
    # Every Lua script: package data, read when a script is first loaded (mailqueue.lua).
    for script in CHECKOUT.glob("mailqueue/lua/*.lua"):
        relative = script.relative_to(CHECKOUT).as_posix()
        assert relative in names, f"{relative} missing from the wheel (pyproject package data)"
    # Nothing at the top of site-packages but our package: no `dashboard`, `templates`,
    # `static` or `tests` to shadow (or be shadowed by) a user's own.
    tops = {name.split("/")[0] for name in names}
    assert tops == {"mailqueue", f"mailqueue-{__version__}.dist-info"}, tops
    metadata = zipfile.ZipFile(dists["wheel"]).read(
        f"mailqueue-{__version__}.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata


def test_sdist_holds_the_folders_the_wheel_is_built_from(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for expected in ("LICENSE", "pyproject.toml", "dashboard/app.py",
                     "templates/pages/overview.html", "static/app.css",
                     "static/vendor/SHA256SUMS", "mailqueue/mail/templates/welcome/subject.txt"):
        assert expected in names, f"{expected} missing from the sdist"


def test_installed_package_imports_without_the_web_layer(installed: Path, user_dir: Path
                                                         ) -> None:
    code = (
        "import sys, mailqueue, mailqueue.cli\n"
        "from mailqueue import MailManager, Settings, QueueManager, WorkerManager, "
        "EventManager, FlowManager, MailQueueError\n"
        "import dashboard\n"
        "assert dashboard.OWNER == 'the user', dashboard.__file__\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('mailqueue.dashboard', "
        "'starlette')))\n"
        "assert not loaded, loaded\n"
        "print(mailqueue.__version__, mailqueue.__file__)\n"
    )
    out = _run([str(installed / "python"), "-c", code], cwd=user_dir).stdout
    version, location = out.split()
    assert version == __version__
    assert str(CHECKOUT) not in location and "site-packages" in location
    assert _run([str(installed / "mailqueue"), "--version"],
                cwd=user_dir).stdout.strip() == f"mailqueue {__version__}"


class _Run:
    """The installed `mailqueue run` as a user starts it, output kept for the assertions."""

    def __init__(self, bin_dir: Path, cwd: Path, env: dict[str, str], port: int) -> None:
        self.env = env
        self.log = cwd / "run.log"
        self.log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            [str(bin_dir / "mailqueue"), "run", "--port", str(port)], cwd=cwd, env=env,
            stdout=self.log_file, stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        """eventually_sync(check); a failure shows the run's output."""
        try:
            return eventually_sync(check, timeout, what)
        except AssertionError as failed:
            raise AssertionError(f"{failed}\n{self.output()}") from None

    def serving(self) -> bool:
        assert self.process.poll() is None, "mailqueue run exited"
        return "Ctrl-C to stop" in self.output()


@pytest.fixture
def running(installed: Path, user_dir: Path, redis_url: str, prefix: str) -> Iterator[_Run]:
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": str(user_dir),
        "REDIS_URL": redis_url, "QUEUE_PREFIX": prefix, "DATA_DIR": str(user_dir / "data"),
    }
    run = _Run(installed, user_dir, env, free_port())
    try:
        run.wait_for(run.serving, 60, "mailqueue run serving")
        yield run
    finally:
        if run.process.poll() is None:
            run.process.terminate()
            run.process.wait(60)
        run.log_file.close()


def test_installed_run_serves_pages_and_delivers_mail(running: _Run, installed: Path,
                                                      user_dir: Path) -> None:
    with httpx.Client(base_url=running.base, timeout=10) as http:
        for path in ("/", "/queues/emails", "/schedules", "/workers", "/events", "/outbox",
                     "/static/app.css", "/static/vendor/htmx-2.0.11.min.js", "/health"):
            response = http.get(path)
            assert response.status_code == 200, f"{path}: {response.status_code}"
        assert "text/css" in http.get("/static/app.css").headers["content-type"]
        assert http.get("/health").json()["healthy"] is True
        assert "<title" in http.get("/").text

        sent = _run([str(installed / "mailqueue"), "send", "--to", "ada@example.com",
                     "--template", "welcome", "--var", "name=Ada"],
                    cwd=user_dir, env=running.env)
        assert "job" in sent.stdout.lower(), sent.stdout

        delivered = running.wait_for(
            lambda: [m for m in http.get("/api/outbox").json()["messages"]
                     if "ada@example.com" in m["envelope_to"]], 30, "ada's mail in the outbox")
        subject = delivered[0]["subject"]
        assert subject.startswith("Welcome") and "Ada" in subject, delivered[0]

    running.process.terminate()
    assert running.process.wait(60) == 0, running.output()
    assert "Traceback" not in running.output(), running.output()
