"""/api/v1/reconciliation/..., the paths before the one prefix (`unmatched/` included): they answer
as before, with a `Deprecation` header, and are absent from the OpenAPI schema."""

from project.api.deprecation import deprecated
from reconciliation.api.urls import router

# A namespace of their own: reverse() by name keeps finding the current paths.
app_name = "reconciliation-deprecated"
urlpatterns = deprecated(router(renamed={"exceptions": "unmatched"}).urls, successor="/api/v1/reconciliations/")
