"""The exceptions workflow: assign exceptions to members, resolve them with a code (and an
optional adjusting amount), one at a time or in bulk.

A bulk act is one UPDATE over the batch (`WHERE id = ANY(...)`), all or nothing: if any
exception of the batch is missing, resolved, frozen by a sign-off, or (for assignment) in a
tenant the assignee is not a member of, the statement's work is rolled back and the error names
those ids. Every act is one ActivityLog row (a bulk act lists its ids).
"""

from decimal import Decimal

from django.db import connection, transaction

from project.activity import activity_record_bulk
from reconciliation.errors import ExceptionNotFound
from reconciliation.models import ReconciliationException, TenantMembership
from reconciliation.workflow.errors import InvalidWorkflowInput, WorkflowConflict
from reconciliation.workflow.signoff import ensure_exceptions_writable

CATEGORY = "reconciliation"
ENTITY = "reconciliation.unmatched"
BULK_MAX = 1000  # ids per request: one statement, one audit row listing them
ResolutionCode = ReconciliationException.ResolutionCode


class _BatchRefused(Exception):
    pass


def _check_batch(ids: list[int]) -> list[int]:
    ids = sorted(set(ids))
    if not ids:
        raise InvalidWorkflowInput("Give at least one exception id.")
    if len(ids) > BULK_MAX:
        raise InvalidWorkflowInput(f"At most {BULK_MAX} exceptions per request.")
    return ids


def _explain_refusal(ids: list[int], tenant_ids: list[int], done: set[int], assignee_id: int | None) -> None:
    """Roll back (by raising) and say which ids could not be changed and why."""
    rows = dict(
        ReconciliationException.objects.filter(id__in=ids, tenant_id__in=tenant_ids).values_list("id", "resolved_at")
    )
    missing = [i for i in ids if i not in rows]
    if missing:
        raise ExceptionNotFound(f"No exceptions {missing}.")
    resolved = [i for i in ids if rows[i] is not None]
    if resolved:
        raise WorkflowConflict(f"Exceptions already resolved: {resolved}.")
    if assignee_id is not None:
        raise InvalidWorkflowInput(f"User {assignee_id} is not a member of the tenant of exceptions "
                                   f"{[i for i in ids if i not in done]}.")  # fmt: skip
    raise WorkflowConflict(f"Exceptions changed meanwhile: {[i for i in ids if i not in done]}; try again.")


def _one_tenant(tenants: set[int]) -> int | None:
    """The tenant a bulk act touched, for its activity row; None (read by superusers only) when
    one act spans tenants."""
    return next(iter(tenants)) if len(tenants) == 1 else None


def _update_open(
    ids: list[int], tenant_ids: list[int], set_sql: str, params: list, extra_where: str = ""
) -> dict[int, int]:
    """{exception id: tenant id} of the open exceptions updated."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE reconciliation_unmatched u SET {set_sql}
            WHERE u.id = ANY(%s) AND u.tenant_id = ANY(%s) AND u.resolved_at IS NULL {extra_where}
            RETURNING u.id, u.tenant_id
            """,
            [*params, ids, list(tenant_ids)],
        )
        return dict(cursor.fetchall())


@transaction.atomic
def exceptions_assign(*, ids: list[int], tenant_ids: list[int], assignee_id: int | None, user=None) -> list[int]:
    """Assign open exceptions to a member of their tenant (None: unassign)."""
    ids = _check_batch(ids)
    ensure_exceptions_writable(ids)
    member_check, member_params = "", []
    if assignee_id is not None:
        member_check = (
            f"AND u.tenant_id IN (SELECT tenant_id FROM {TenantMembership._meta.db_table} WHERE user_id = %s)"
        )
        member_params = [assignee_id]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE reconciliation_unmatched u SET assigned_to_id = %s, assigned_at = now()
            WHERE u.id = ANY(%s) AND u.tenant_id = ANY(%s) AND u.resolved_at IS NULL {member_check}
            RETURNING u.id, u.tenant_id
            """,
            [assignee_id, ids, list(tenant_ids), *member_params],
        )
        done = dict(cursor.fetchall())
    if set(done) != set(ids):
        _explain_refusal(ids, tenant_ids, set(done), assignee_id)
    activity_record_bulk(
        category=CATEGORY,
        action="exception_assign" if assignee_id is not None else "exception_unassign",
        user=user,
        entity_type=ENTITY,
        entity_ids=ids,
        metadata={"assignee_id": assignee_id},
        tenant_id=_one_tenant(set(done.values())),
    )
    return ids


@transaction.atomic
def exceptions_resolve(
    *,
    ids: list[int],
    tenant_ids: list[int],
    code: str,
    note: str = "",
    adjusting_amount: Decimal | None = None,
    user=None,
) -> list[int]:
    """Resolve open exceptions with a resolution code; the records stay open (as unmatched_resolve)."""
    ids = _check_batch(ids)
    if code not in ResolutionCode.values:
        raise InvalidWorkflowInput(f"Unknown resolution code {code!r}; one of {', '.join(ResolutionCode.values)}.")
    if code == ResolutionCode.OTHER and not note.strip():
        raise InvalidWorkflowInput("Resolution code 'other' needs a note saying what happened.")
    ensure_exceptions_writable(ids)
    resolution = note.strip() or code.replace("_", " ")
    done = _update_open(
        ids,
        tenant_ids,
        "resolved_at = now(), resolved_by_id = %s, resolution = %s, resolution_code = %s, adjusting_amount = %s",
        [getattr(user, "pk", None), resolution, code, adjusting_amount],
    )
    if set(done) != set(ids):
        _explain_refusal(ids, tenant_ids, set(done), None)
    activity_record_bulk(
        category=CATEGORY,
        action="exception_resolve",
        user=user,
        entity_type=ENTITY,
        entity_ids=ids,
        metadata={
            "code": code,
            "note": note.strip()[:500],
            "adjusting_amount": None if adjusting_amount is None else str(adjusting_amount),
        },
        tenant_id=_one_tenant(set(done.values())),
    )
    return ids
