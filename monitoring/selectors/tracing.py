"""Which Django model, field or `Meta.indexes` entry stands behind a table or an index.

Findings on the index page name their source in code and offer the migration operation that
fixes them, written by Django's own migration writer so it can be pasted as is.
"""

import functools
from dataclasses import dataclass
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.db import models
from django.db.migrations.operations import AlterField
from django.db.migrations.writer import OperationWriter


@dataclass(frozen=True)
class Trace:
    model: str  # "app_label.ModelName"
    source: str  # "Meta.indexes: name" / "field assignee (ForeignKey)" / "Meta.constraints: name"
    index: models.Index | None = None
    field: models.Field | None = None
    ours: bool = True  # the model is Opsdeck's own (not Django's or a package's): its migrations can change it


def _is_ours(model) -> bool:
    app_path = Path(model._meta.app_config.path).resolve()
    return not model._meta.auto_created and app_path.is_relative_to(settings.BASE_DIR) and ".venv" not in app_path.parts


def _operation_code(operation) -> str:
    code, _imports = OperationWriter(operation, indentation=0).serialize()
    return code.rstrip(",\n")


@functools.cache
def _models_by_table() -> dict[str, type[models.Model]]:
    return {
        model._meta.db_table: model
        for model in apps.get_models(include_auto_created=True)
        if not model._meta.proxy and model._meta.managed
    }


# Opsdeck's migrations create every table in the default schema (search_path "$user", public):
# a table or index of the same name in another schema is not the model's, and must never be
# traced to it (its migration would drop the real one in public).
MODELS_SCHEMA = "public"


def model_for_table(table: str, *, schema: str = MODELS_SCHEMA) -> str | None:
    if schema != MODELS_SCHEMA:
        return None
    model = _models_by_table().get(table)
    return model._meta.label if model else None


def trace_index(table: str, index_name: str, key_columns: list[str], *, schema: str = MODELS_SCHEMA) -> Trace | None:
    model = _models_by_table().get(table) if schema == MODELS_SCHEMA else None
    if model is None:
        return None
    opts = model._meta
    ours = _is_ours(model)
    for index in opts.indexes:
        if index.name == index_name:
            return Trace(model=opts.label, source=f"Meta.indexes: {index.name}", index=index, ours=ours)
    for constraint in opts.constraints:
        if constraint.name == index_name:
            return Trace(model=opts.label, source=f"Meta.constraints: {constraint.name}", ours=ours)
    if len(key_columns) == 1:
        for field in opts.local_fields:
            if field.column == key_columns[0] and (field.db_index or field.unique or field.primary_key):
                kind = "primary key" if field.primary_key else type(field).__name__
                return Trace(model=opts.label, source=f"field {field.name} ({kind})", field=field, ours=ours)
    return Trace(model=opts.label, source="no index of the model: created outside its migrations", ours=ours)


def removal_code(trace: Trace | None) -> str:
    """The migration operation that drops the index behind `trace`, or "" when there is none (or
    the model is Django's or a package's, whose migrations Opsdeck does not write)."""
    if trace is None or not trace.ours:
        return ""
    model_name = trace.model.split(".")[1].lower()
    if trace.index is not None:
        from django.contrib.postgres.operations import RemoveIndexConcurrently

        operation = RemoveIndexConcurrently(model_name=model_name, name=trace.index.name)
        return "# in a migration with atomic = False\n" + _operation_code(operation)
    if trace.field is not None and not trace.field.primary_key and not trace.field.unique:
        field = trace.field.clone()
        field.db_index = False
        return "# the field's index goes with db_index=False\n" + _operation_code(
            AlterField(model_name=model_name, name=trace.field.name, field=field)
        )
    return ""


def rebuild_code(trace: Trace | None) -> str:
    """Drop and re-create a broken `Meta.indexes` entry without locking writes."""
    if trace is None or trace.index is None or not trace.ours:
        return ""
    from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently

    model_name = trace.model.split(".")[1].lower()
    return "# in a migration with atomic = False\n" + "\n".join(
        [
            _operation_code(RemoveIndexConcurrently(model_name=model_name, name=trace.index.name)),
            _operation_code(AddIndexConcurrently(model_name=model_name, index=trace.index)),
        ]
    )


def addition_code(table: str, columns: list[str]) -> tuple[str, str] | None:
    """(model label, the `Meta.indexes` entry and `AddIndexConcurrently` operation) for a new
    btree on `table`'s `columns`, or None when the table is not one of Opsdeck's own models or
    a column is not a concrete field of it. The index name is Django's own for those fields."""
    model = _models_by_table().get(table)
    if model is None or not _is_ours(model):
        return None
    by_column = {f.column: f.name for f in model._meta.local_fields if f.column}
    if not all(column in by_column for column in columns):
        return None
    from django.contrib.postgres.operations import AddIndexConcurrently

    index = models.Index(fields=[by_column[column] for column in columns])
    index.set_name_with_model(model)
    meta = f"models.Index(fields={[by_column[c] for c in columns]!r}, name={index.name!r})"
    operation = AddIndexConcurrently(model_name=model._meta.model_name, index=index)
    return model._meta.label, (
        f"# {model._meta.label}: Meta.indexes += [{meta}]\n"
        "# in a migration with atomic = False\n" + _operation_code(operation)
    )
