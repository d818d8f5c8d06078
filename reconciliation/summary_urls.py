"""The reconciliation guide's (001) path for an execution's summary: /api/v1/reconciliations/{id}/summary."""

from django.urls import path

from reconciliation.api import ExecutionSummaryView

urlpatterns = [path("<int:pk>/summary", ExecutionSummaryView.as_view(), name="reconciliation-summary")]
