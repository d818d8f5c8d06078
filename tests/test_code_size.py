"""Size limits (docs/style.md): no module over 600 lines outside migrations and tests, no function
over 80 lines outside bench/. A module or function may exceed them with a one-line reason beside
it: a `# size: <reason>` comment in the module's first 10 lines, or on (or just above) the `def`.

ALLOWED lists today's offenders, each with why; it may only shrink: an entry whose file or
function is back under the limit fails the second test until it is removed.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("project", "tasks", "approvals", "reconciliation", "monitoring", "bench")
MODULE_MAX_LINES = 600
FUNCTION_MAX_LINES = 80
REASON = "# size:"

ALLOWED = {
    # Benchmark scripts: split when next touched.
    "bench/chaos.py": "chaos scenarios in one script",
    "bench/fuzz.py": "fuzz runner and its report in one script",
    "bench/load/run.py": "load harness (seeding, servers, locust, report) in one script",
    "bench/recon_data.py": "benchmark data generator in one script",
}


def python_files() -> list[Path]:
    files = []
    for package in PACKAGES:
        files.extend(p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts)
    return sorted(files)


def _has_reason(lines: list[str], line_number: int) -> bool:
    """A `# size:` comment on the def line (1-based) or the line above it."""
    return any(REASON in lines[i - 1] for i in (line_number, line_number - 1) if i >= 1)


def offenders() -> dict[str, int]:
    found = {}
    for path in python_files():
        relative = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        lines = text.splitlines()
        if len(lines) > MODULE_MAX_LINES and not any(REASON in line for line in lines[:10]):
            found[relative] = len(lines)
        if relative.startswith("bench/"):
            continue
        for node in ast.walk(ast.parse(text, filename=relative)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if length > FUNCTION_MAX_LINES and not _has_reason(lines, first):
                    found[f"{relative}::{node.name}"] = length
    return found


def test_no_module_or_function_over_the_limits_without_a_reason():
    over = {name: size for name, size in offenders().items() if name not in ALLOWED}
    assert over == {}, f"split these (or give a one-line `{REASON}` reason beside them): {over}"


def _exists(name: str) -> bool:
    return (ROOT / name.split("::")[0]).exists()


def test_the_allowlist_only_names_current_offenders():
    # An entry whose file does not exist (a path of the tree before or after a move) is skipped.
    stale = sorted(name for name in set(ALLOWED) - set(offenders()) if _exists(name))
    assert stale == [], f"these are within the limits now: remove them from ALLOWED: {stale}"
