"""Which statements EXPLAIN ANALYZE may run: it executes them, and a READ ONLY transaction that is
rolled back stops writes to tables, not side effects of functions (pg_cancel_backend(),
pg_terminate_backend(), pg_advisory_lock(), set_config(), nextval(), pg_notify(), dblink ...).

The statement is parsed with libpg_query (pglast), and every function it calls, directly or
through an operator, is looked up in pg_proc: one that is VOLATILE under any of its overloads (or
unknown) makes the statement refused, with the names given as the reason.
"""

from django.db import connection
from pglast import parse_sql
from pglast.parser import ParseError
from pglast.visitors import Visitor


class UnsafeStatement(Exception):
    """The statement could run a side effect: the message says which function and why."""


class _Calls(Visitor):
    def __init__(self):
        super().__init__()
        self.functions: set[tuple[str | None, str]] = set()
        self.operators: set[tuple[str | None, str]] = set()

    @staticmethod
    def _name(parts) -> tuple[str | None, str]:
        names = [part.sval for part in parts]
        return (names[-2] if len(names) > 1 else None, names[-1])

    def visit_FuncCall(self, parent, node):
        self.functions.add(self._name(node.funcname))

    def visit_A_Expr(self, parent, node):
        if node.name:
            self.operators.add(self._name(node.name))


def called_functions(query: str) -> _Calls:
    try:
        tree = parse_sql(query)
    except ParseError as exc:
        raise UnsafeStatement(f"the statement could not be parsed ({exc}): its functions cannot be checked") from None
    calls = _Calls()
    calls(tree)
    return calls


def check_read_only_functions(query: str) -> None:
    """Raise UnsafeStatement unless every function and operator the statement calls is STABLE or
    IMMUTABLE in pg_proc."""
    calls = called_functions(query)
    problems: list[str] = []
    with connection.cursor() as cursor:
        for schema, name in sorted(calls.functions, key=lambda item: (item[0] or "", item[1])):
            cursor.execute(
                """
                SELECT coalesce(bool_or(p.provolatile = 'v'), false), count(*)
                FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE p.proname = %s AND (%s::text IS NULL OR n.nspname = %s)
                """,
                [name, schema, schema],
            )
            volatile, found = cursor.fetchone()
            label = f"{schema}.{name}" if schema else name
            if not found:
                problems.append(f"{label}() is not a known function")
            elif volatile:
                problems.append(f"{label}() is VOLATILE (it may change state or act on the server)")
        for schema, name in sorted(calls.operators, key=lambda item: (item[0] or "", item[1])):
            cursor.execute(
                """
                SELECT coalesce(bool_or(p.provolatile = 'v'), false)
                FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
                JOIN pg_proc p ON p.oid = o.oprcode
                WHERE o.oprname = %s AND (%s::text IS NULL OR n.nspname = %s)
                """,
                [name, schema, schema],
            )
            if cursor.fetchone()[0]:
                problems.append(f"operator {name} calls a VOLATILE function")
    if problems:
        raise UnsafeStatement(
            "EXPLAIN ANALYZE runs the statement, and a read-only transaction does not undo what a "
            "volatile function does: " + "; ".join(problems) + ". Use EXPLAIN (without ANALYZE) instead."
        )
