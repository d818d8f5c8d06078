"""Index advisor, the pure part: which columns a statement filters, joins and sorts on, per table,
and the smallest btree that would serve it.

Statements come normalized from pg_stat_statements (`$1` for every constant) and are parsed with
pglast (PostgreSQL's own parser, libpg_query). Nothing here reads the database: the catalog facts
it needs (each table's columns, its indexes) are passed in, so the rules can be tested alone.
The selector (monitoring.selectors.advisor) reads the catalogs and verifies candidates with HypoPG.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pglast
from pglast import ast
from pglast.enums import A_Expr_Kind, BoolExprType, NullTestType, SetOperation, SubLinkType
from pglast.visitors import Visitor

RANGE_OPERATORS = {"<": "upper", "<=": "upper", ">": "lower", ">=": "lower"}
FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "="}


@dataclass(frozen=True, order=True)
class Relation:
    """A table as a statement names it: schema is None when the statement relies on search_path."""

    schema: str | None
    name: str


@dataclass(frozen=True)
class ParamUse:
    """What a `$n` stands for, so a representative value can be taken from pg_stats."""

    relation: Relation | None
    column: str | None
    role: str  # "eq", "eq_array", "lower", "upper", "limit", "offset"


@dataclass
class TableUse:
    """The columns one statement uses on one table, each list in first-seen order."""

    relation: Relation
    equality: list[str] = field(default_factory=list)
    range: list[str] = field(default_factory=list)
    join: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)

    def add(self, kind: str, column: str) -> None:
        columns = getattr(self, kind)
        if column not in columns:
            columns.append(column)


@dataclass
class ParsedStatement:
    tables: dict[Relation, TableUse] = field(default_factory=dict)
    params: dict[int, ParamUse] = field(default_factory=dict)
    has_limit: bool = False

    def use(self, relation: Relation) -> TableUse:
        return self.tables.setdefault(relation, TableUse(relation))


class _RelationCollector(Visitor):
    def __init__(self):
        self.found: set[Relation] = set()

    def visit_RangeVar(self, ancestors, node):
        self.found.add(Relation(node.schemaname, node.relname))


def parse(sql: str) -> tuple | None:
    """The statement's parse tree, or None when pglast cannot parse it (pg_stat_statements keeps
    texts truncated at track_activity_query_size, and utility statements are of no use here)."""
    try:
        statements = pglast.parse_sql(sql)
    except pglast.parser.ParseError:
        return None
    return statements if len(statements) == 1 else None


class _ParamCollector(Visitor):
    def __init__(self):
        self.found: set[int] = set()

    def visit_ParamRef(self, ancestors, node):
        self.found.add(node.number)


def parameter_numbers(tree) -> set[int]:
    """The `$n` of a parsed statement."""
    if tree is None:
        return set()
    collector = _ParamCollector()
    collector(tree)
    return collector.found


def relations_in(tree) -> set[Relation]:
    """Every table name the statement mentions (CTE names included; the caller's catalog lookup
    drops what is not a table)."""
    collector = _RelationCollector()
    collector(tree)
    return collector.found


ColumnsOf = Callable[[Relation], set[str]]


class _Scope:
    """The relations visible in one SELECT (or UPDATE/DELETE): alias -> table, plus the outer
    scope for correlated subqueries. Derived tables and CTEs are in it as None: their columns
    are not a table's."""

    def __init__(self, columns_of: ColumnsOf, outer: _Scope | None = None):
        self.columns_of = columns_of
        self.outer = outer
        self.by_alias: dict[str, Relation | None] = {}

    def add(self, alias: str, relation: Relation | None) -> None:
        self.by_alias[alias] = relation

    def resolve(self, fields: tuple) -> tuple[Relation, str] | None:
        names = [f.sval for f in fields if isinstance(f, ast.String)]
        if len(names) != len(fields) or not names:
            return None  # t.* and the like
        column = names[-1]
        if len(names) >= 2:
            qualifier = names[-2]
            scope = self
            while scope is not None:
                if qualifier in scope.by_alias:
                    relation = scope.by_alias[qualifier]
                    return (relation, column) if relation is not None else None
                scope = scope.outer
            return None
        scope = self
        while scope is not None:
            owners = [r for r in scope.by_alias.values() if r is not None and column in scope.columns_of(r)]
            if len(owners) == 1:
                return owners[0], column
            if owners or any(r is None for r in scope.by_alias.values()):
                return None  # ambiguous, or possibly a derived table's column
            scope = scope.outer
        return None


def _unwrap(node):
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return node


def _is_value(node) -> bool:
    """A side of a comparison that is fixed for the scan: a constant, a parameter or a function
    of them (now(), lower($1))."""
    node = _unwrap(node)
    if isinstance(node, ast.ParamRef | ast.A_Const):
        return True
    if isinstance(node, ast.FuncCall):
        return all(_is_value(arg) for arg in node.args or ())
    return False


def _param(node) -> int | None:
    node = _unwrap(node)
    return node.number if isinstance(node, ast.ParamRef) else None


def _conjuncts(node) -> list:
    if node is None:
        return []
    if isinstance(node, ast.BoolExpr) and node.boolop == BoolExprType.AND_EXPR:
        return [c for arg in node.args for c in _conjuncts(arg)]
    return [node]


class _Analyzer:
    def __init__(self, columns_of: ColumnsOf, ctes: set[str] | None = None):
        self.columns_of = columns_of
        self.result = ParsedStatement()
        self.ctes: set[str] = set(ctes or ())

    # --- statements -----------------------------------------------------------------------------

    def statement(self, node, outer: _Scope | None = None) -> None:
        if isinstance(node, ast.SelectStmt):
            self.select(node, outer)
        elif isinstance(node, ast.UpdateStmt | ast.DeleteStmt):
            self.with_clause(node.withClause, outer)
            scope = _Scope(self.columns_of, outer)
            self.from_item(node.relation, scope)
            for item in (node.fromClause if isinstance(node, ast.UpdateStmt) else node.usingClause) or ():
                self.from_item(item, scope)
            self.where(node.whereClause, scope)
        elif isinstance(node, ast.InsertStmt):
            self.with_clause(node.withClause, outer)
            if node.selectStmt is not None:
                self.statement(node.selectStmt, outer)

    def with_clause(self, clause, outer) -> None:
        for cte in (clause.ctes if clause else None) or ():
            self.ctes.add(cte.ctename)
            self.statement(cte.ctequery, outer)

    def select(self, node: ast.SelectStmt, outer: _Scope | None) -> None:
        self.with_clause(node.withClause, outer)
        if node.op != SetOperation.SETOP_NONE:
            self.statement(node.larg, outer)
            self.statement(node.rarg, outer)
            return
        scope = _Scope(self.columns_of, outer)
        for item in node.fromClause or ():
            self.from_item(item, scope)
        self.where(node.whereClause, scope)
        self.where(node.havingClause, scope)
        if node.limitCount is not None:
            self.result.has_limit = True
            if (number := _param(node.limitCount)) is not None:
                self.result.params[number] = ParamUse(None, None, "limit")
        if (number := _param(node.limitOffset)) is not None:
            self.result.params[number] = ParamUse(None, None, "offset")
        self.order_by(node.sortClause or (), scope)
        for target in node.targetList or ():
            self.sublinks(target, scope)

    def from_item(self, item, scope: _Scope) -> None:
        if isinstance(item, ast.RangeVar):
            alias = item.alias.aliasname if item.alias else item.relname
            if item.schemaname is None and item.relname in self.ctes:
                scope.add(alias, None)
            else:
                scope.add(alias, Relation(item.schemaname, item.relname))
        elif isinstance(item, ast.JoinExpr):
            self.from_item(item.larg, scope)
            self.from_item(item.rarg, scope)
            self.where(item.quals, scope)
            for name in item.usingClause or ():  # JOIN ... USING (col): a join on col for both sides
                for side in (item.larg, item.rarg):
                    if isinstance(side, ast.RangeVar) and (
                        relation := scope.by_alias.get(side.alias.aliasname if side.alias else side.relname)
                    ):
                        self.result.use(relation).add("join", name.sval)
        elif isinstance(item, ast.RangeSubselect):
            self.statement(item.subquery, scope if item.lateral else scope.outer)
            if item.alias:
                scope.add(item.alias.aliasname, None)

    # --- clauses --------------------------------------------------------------------------------

    def column(self, node, scope: _Scope) -> tuple[Relation, str] | None:
        node = _unwrap(node)
        return scope.resolve(node.fields) if isinstance(node, ast.ColumnRef) else None

    def where(self, node, scope: _Scope) -> None:
        for conjunct in _conjuncts(node):
            self.condition(conjunct, scope)
            self.sublinks(conjunct, scope)

    def condition(self, node, scope: _Scope) -> None:
        if isinstance(node, ast.NullTest) and node.nulltesttype == NullTestType.IS_NULL:
            if found := self.column(node.arg, scope):
                self.result.use(found[0]).add("equality", found[1])
            return
        if not isinstance(node, ast.A_Expr):
            return
        operator = node.name[-1].sval if node.name else None
        if node.kind == A_Expr_Kind.AEXPR_OP and operator in FLIPPED:
            left, right = self.column(node.lexpr, scope), self.column(node.rexpr, scope)
            if operator == "=" and left and right:
                if left[0] != right[0]:
                    self.result.use(left[0]).add("join", left[1])
                    self.result.use(right[0]).add("join", right[1])
                return
            value = node.rexpr
            if right and not left:  # $1 < col: read as col > $1
                left, value, operator = right, node.lexpr, FLIPPED[operator]
            if not left or not _is_value(value):
                return
            relation, name = left
            if operator == "=":
                self.result.use(relation).add("equality", name)
                self.param(value, relation, name, "eq")
            else:
                self.result.use(relation).add("range", name)
                self.param(value, relation, name, RANGE_OPERATORS[operator])
        elif node.kind == A_Expr_Kind.AEXPR_IN and operator == "=":
            if (found := self.column(node.lexpr, scope)) and all(_is_value(v) for v in node.rexpr):
                self.result.use(found[0]).add("equality", found[1])
                for value in node.rexpr:
                    self.param(value, *found, "eq")
        elif node.kind == A_Expr_Kind.AEXPR_OP_ANY and operator == "=":
            if (found := self.column(node.lexpr, scope)) and _is_value(node.rexpr):
                self.result.use(found[0]).add("equality", found[1])
                self.param(node.rexpr, *found, "eq_array")
        elif (
            node.kind == A_Expr_Kind.AEXPR_BETWEEN
            and all(_is_value(v) for v in node.rexpr)
            and (found := self.column(node.lexpr, scope))
        ):
            self.result.use(found[0]).add("range", found[1])
            self.param(node.rexpr[0], *found, "lower")
            self.param(node.rexpr[1], *found, "upper")

    def param(self, value, relation: Relation, column: str, role: str) -> None:
        if (number := _param(value)) is not None:
            self.result.params.setdefault(number, ParamUse(relation, column, role))

    def sublinks(self, node, scope: _Scope) -> None:
        """Subqueries inside an expression (EXISTS, IN (SELECT ...), scalar): analysed in their own
        scope, which sees this one (correlation)."""

        class Finder(Visitor):
            def __init__(self):
                self.found = []

            def visit_SubLink(self, ancestors, link):
                self.found.append(link)
                return pglast.visitors.Skip

        finder = Finder()
        finder(node)
        for link in finder.found:
            self.statement(link.subselect, scope)
            if link.subLinkType == SubLinkType.ANY_SUBLINK and (found := self.column(link.testexpr, scope)):
                self.result.use(found[0]).add("join", found[1])  # col IN (SELECT ...): a semi-join on col

    def order_by(self, sort_clause, scope: _Scope) -> None:
        columns = [self.column(sort.node, scope) for sort in sort_clause]
        if columns and all(columns) and len({relation for relation, _ in columns}) == 1:
            for relation, name in columns:
                self.result.use(relation).add("order", name)


def analyze(tree, columns_of: ColumnsOf) -> ParsedStatement | None:
    """Per table, the columns the statement compares with a value (equality, range), with another
    table's column (join) and sorts on (when the whole ORDER BY is on that table)."""
    if tree is None:
        return None
    analyzer = _Analyzer(columns_of)
    analyzer.statement(tree[0].stmt)
    return analyzer.result


# --- candidates ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    relation: Relation
    equality: frozenset[str]  # their order in the index is chosen later (most selective first)
    last: str | None  # the one range or sort column after them
    kind: str  # what it serves: "equality", "equality+order", "range", "order", "join"

    def columns(self, distinct_values: Callable[[str], float] = lambda column: 0.0) -> list[str]:
        leading = sorted(self.equality, key=lambda column: (-distinct_values(column), column))
        return leading + ([self.last] if self.last else [])


def candidates_for(use: TableUse, *, has_limit: bool) -> list[Candidate]:
    """The smallest btrees serving one statement on one table: its equality columns first, then
    one range column (a range filter narrows the scan; the sort then happens on few rows) or
    else one sort column. A table the statement only joins to gets its join column: the inner
    side of a nested loop probes it once per outer row."""
    equality = frozenset(use.equality)
    result = []
    if use.range:
        result.append(Candidate(use.relation, equality, use.range[0], "equality+range" if equality else "range"))
    elif equality and use.order:
        last = use.order[0] if use.order[0] not in equality else None
        result.append(Candidate(use.relation, equality, last, "equality+order" if last else "equality"))
    elif equality:
        result.append(Candidate(use.relation, equality, None, "equality"))
    elif use.order and has_limit:  # ORDER BY ... LIMIT reads the first rows of an index and stops
        result.append(Candidate(use.relation, frozenset(), use.order[0], "order"))
    for column in use.join:
        if not any(column in c.equality or column == c.last for c in result):
            result.append(Candidate(use.relation, frozenset([column]), None, "join"))
    return result


def covered_by(candidate: Candidate, index_keys: Iterable[list[str]]) -> list[str] | None:
    """The key columns of an existing index that already serves the candidate: its leading
    columns are the candidate's equality columns (in any order), followed by its last column."""
    n = len(candidate.equality)
    for keys in index_keys:
        if len(keys) < n + (1 if candidate.last else 0):
            continue
        if set(keys[:n]) != candidate.equality:
            continue
        if candidate.last and keys[n] != candidate.last:
            continue
        return keys
    return None
