"""What every reconciliation API module shares: domain errors as 4xx, the tenant field of bodies."""

import functools

from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response

from project.api.errors import Conflict, error_body
from reconciliation.api.tenancy import has_role, roles_of
from reconciliation.errors import (
    ConcurrentUpload,
    ExecutionActive,
    InvalidRules,
    InvalidUpload,
    JobInactive,
    NotReviewable,
    ReconciliationError,
    RecordsNotOpen,
    WebhookTargetRefused,
)
from reconciliation.models import Match, ReconciliationException, Record, Tenant, TenantMembership, WebhookDelivery
from reconciliation.workflow.errors import WorkflowConflict

Role = TenantMembership.Role


def domain_errors_to_http(view):
    """Turn the app's domain errors into 4xx with the standard envelope."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except InvalidRules as error:
            raise ValidationError(
                {"rules": [f"{path}: {message}" for path, message in error.errors.items()]}, code="invalid_rules"
            ) from None
        except InvalidUpload as error:
            body = error_body("invalid_upload", str(error), rows=error.row_errors, bad_rows=error.bad_rows)
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        except (ExecutionActive, ConcurrentUpload) as error:
            raise Conflict(str(error)) from None
        except (NotReviewable, RecordsNotOpen, WorkflowConflict) as error:  # a signed-off period too
            raise Conflict(str(error)) from None
        except WebhookTargetRefused as error:
            raise ValidationError({"url": [str(error)]}, code="webhook_target_refused") from None
        except (JobInactive, ReconciliationError) as error:
            raise ValidationError({"non_field_errors": [str(error)]}, code="invalid") from None
        except (
            Match.DoesNotExist,
            ReconciliationException.DoesNotExist,
            Record.DoesNotExist,
            WebhookDelivery.DoesNotExist,
        ):
            raise NotFound() from None

    return wrapped


class TenantField(serializers.PrimaryKeyRelatedField):
    """A tenant id in a body: only the user's own tenants exist here, so another tenant's id and a
    nonexistent one get the same 400 `does_not_exist` (no existence oracle)."""

    def get_queryset(self):
        request = self.context.get("request")
        return Tenant.objects.filter(pk__in=list(roles_of(request.user) if request else ()))


def require_tenant_admin(user, tenant) -> None:
    # A member without the admin role is forbidden (403), not told their input is wrong (400).
    if not has_role(user, tenant.pk, Role.ADMIN):
        raise PermissionDenied("You need the admin role in this tenant.")
