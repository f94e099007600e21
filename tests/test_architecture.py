"""The house as docs/architecture.md draws it: every module is in the doc, with its line
count, and imports only point down the layers it lists (issue 15).

Imports are read from the source (ast), those inside functions included — a lazy import is
still a dependency — and those under `if TYPE_CHECKING:` left out (they are not run).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("mailqueue", "dashboard")

# Layer of a module (the first prefix that matches wins), from the top (0) down. A module
# may import its own layer and any layer below, never one above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("commands", ("mailqueue.cli",)),
    ("web", ("mailqueue.dashboard",)),
    ("facade", ("mailqueue.manager", "mailqueue.healthcheck", "mailqueue.__init__")),
    ("features", ("mailqueue.campaign_workers", "mailqueue.campaigns", "mailqueue.desk",
                  "mailqueue.desk_query", "mailqueue.monitoring")),
    ("managers", ("mailqueue.queues", "mailqueue.flows", "mailqueue.workers",
                  "mailqueue.events", "mailqueue.audit")),
    ("mail", ("mailqueue.mail",)),
    ("runtime", ("mailqueue.runtime", "mailqueue.bullmq_fixes", "mailqueue.cluster",
                 "mailqueue.redis_server", "mailqueue.redis_memory", "mailqueue.worker_gates")),
    ("base", ("mailqueue.settings", "mailqueue.job_options", "mailqueue.errors",
              "mailqueue.types", "mailqueue.redact", "mailqueue.keys", "mailqueue.lua",
              "mailqueue.smtp_url", "mailqueue.dkim_names", "mailqueue.unsubscribe_url")),
]
# Upward imports allowed, each with the reason it is still there: none (issue 15 removed them).
ALLOWED_UP: dict[tuple[str, str], str] = {}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts)
            if package == "dashboard":  # installed as mailqueue.dashboard
                name = "mailqueue." + name
            found[name.removesuffix(".__init__") if name.endswith(".__init__") and
                  name != "mailqueue.__init__" else name] = path
    return found


def layer(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py")


def imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                base = ".".join(parent[:len(parent) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {_canonical(name) for name in found if name.split(".")[0] in PACKAGES}


def _canonical(name: str) -> str:
    return "mailqueue." + name if name.startswith("dashboard") else name


def test_every_import_points_down_the_layers() -> None:
    known = modules()
    upward = []
    for module, path in known.items():
        for target in imports(path, module):
            while target not in known and "." in target:
                target = target.rpartition(".")[0]  # `from pkg import name`: the module
            if target not in known or target == module:
                continue
            if layer(target) < layer(module) and (module, target) not in ALLOWED_UP:
                upward.append(f"{module} ({LAYERS[layer(module)][0]}) imports {target} "
                              f"({LAYERS[layer(target)][0]})")
    assert upward == []


def test_the_doc_lists_every_module_with_its_size() -> None:
    text = DOC.read_text()
    listed = dict(re.findall(r"^\| `((?:mailqueue|dashboard)/[\w/]+\.py)` \| (\d+) \|", text,
                             re.M))
    actual = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
              for p in modules().values() if p.name != "__init__.py" or p.parent.name in
              ("mailqueue",)}
    missing = sorted(set(actual) - set(listed))
    gone = sorted(set(listed) - set(actual))
    assert (missing, gone) == ([], []), "update docs/architecture.md's tables"
    # Sizes drift as the code changes: within 25% or 40 lines, the table is still true.
    off = {m: (int(listed[m]), n) for m, n in actual.items()
           if abs(int(listed[m]) - n) > max(40, n // 4)}
    assert off == {}, "line counts in docs/architecture.md are stale: (doc, now)"


def module_tables() -> str:
    """The tables of docs/architecture.md: per layer, each module, its lines, its docstring's
    first paragraph."""
    rows: dict[str, list[str]] = {name: [] for name, _ in LAYERS}
    for name, path in modules().items():
        if path.name == "__init__.py" and path.parent.name != "mailqueue":
            continue
        text = path.read_text()
        first = " ".join((ast.get_docstring(ast.parse(text)) or "").split("\n\n")[0].split())
        if len(first) > 160:
            first = first[:157].rsplit(" ", 1)[0] + "..."
        rows[LAYERS[layer(name)][0]].append(
            f"| `{path.relative_to(ROOT)}` | {len(text.splitlines())} | "
            f"{first.replace('|', chr(92) + '|')} |")
    return "".join(f"\n### {name}\n\n| module | lines | what it owns |\n|---|---|---|\n"
                   + "\n".join(lines) + "\n" for name, lines in rows.items())


def write_doc() -> None:
    """`python -m tests.test_architecture`: rewrite the doc's module tables from the code."""
    start, end = "<!-- modules: generated -->", "<!-- /modules -->"
    head, rest = DOC.read_text().split(start, 1)
    DOC.write_text(head + start + module_tables() + end + rest.split(end, 1)[1])


if __name__ == "__main__":
    write_doc()
