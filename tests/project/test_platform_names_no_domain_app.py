"""project/ is the platform under the domain apps: it imports none of them (import-linter's layers
contract) and names none of their modules or jobs in code either (this test): apps register with
the platform (schedules, materialized views, partitions, seeders, metrics), not the reverse.

settings.py and urls.py are the composition root (INSTALLED_APPS, URL includes) and may name apps.
"""

import ast
import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2] / "project"
DOMAIN_APPS = ("tasks", "approvals", "reconciliation", "monitoring")
DOMAIN_NAME = re.compile(rf"^({'|'.join(DOMAIN_APPS)})(\.|$)")
COMPOSITION_ROOT = {"settings.py", "urls.py"}
# Each with its reason; the coordinator empties this as the named work lands.
ALLOWED = {
    "db/routers.py": "REPLICA_APPS: which apps' reads may go to the replica is deployment routing",
}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def domain_names_in(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = _docstrings(tree)
    return [
        f"{path.relative_to(PROJECT)}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and DOMAIN_NAME.match(node.value)
    ]


def test_project_code_names_no_domain_app_module_or_job():
    found = []
    for path in sorted(PROJECT.rglob("*.py")):
        relative = path.relative_to(PROJECT).as_posix()
        if relative in COMPOSITION_ROOT or relative in ALLOWED or "migrations/" in relative:
            continue
        found.extend(domain_names_in(path))
    assert found == []


def test_the_allowlist_names_only_files_that_still_need_it():
    # Once a file is clean, its entry must go (the list only shrinks).
    stale = [name for name in ALLOWED if not (PROJECT / name).exists() or not domain_names_in(PROJECT / name)]
    assert stale == []
