"""The reconciliation admin, one module per capability (Django's admin autodiscovery imports this
package; importing the modules registers their ModelAdmins). See admin/executions.py for the
permissions staff need."""

from reconciliation.admin import executions, jobs, records, tenants, webhooks  # noqa: F401
from reconciliation.admin import workflow as workflow_admin  # noqa: F401  (schedules, periods; issue 14)
