"""SQL expressions Django's ORM does not spell by itself."""

from django.db.models import BooleanField, Expression, F


class RowComparison(Expression):
    """`(col_a, col_b, ...) < (%s, %s, ...)`: a row-value comparison.

    Unlike the expanded `a < x OR (a = x AND b < y)`, PostgreSQL uses this as an index condition
    on a composite btree index, so keyset pagination stays fast at any depth.
    """

    output_field = BooleanField()
    conditional = True
    OPERATORS = frozenset({"<", ">", "<=", ">="})

    def __init__(self, columns: list[str], operator: str, values: list):
        if operator not in self.OPERATORS:
            raise ValueError(f"unsupported row comparison operator {operator!r}")
        if len(columns) != len(values) or not columns:
            raise ValueError("a row comparison needs as many values as columns")
        super().__init__()
        self.columns = [F(column) for column in columns]
        self.operator = operator
        self.values = list(values)

    def get_source_expressions(self):
        return self.columns

    def set_source_expressions(self, exprs):
        self.columns = list(exprs)

    def resolve_expression(self, query=None, allow_joins=True, reuse=None, summarize=False, for_save=False):
        clone = self.copy()
        clone.columns = [col.resolve_expression(query, allow_joins, reuse, summarize) for col in self.columns]
        return clone

    def as_sql(self, compiler, connection):
        column_sql, params = [], []
        for column in self.columns:
            sql, column_params = compiler.compile(column)
            column_sql.append(sql)
            params.extend(column_params)
        placeholders = ", ".join(["%s"] * len(self.values))
        params.extend(self.values)
        return f"({', '.join(column_sql)}) {self.operator} ({placeholders})", params
