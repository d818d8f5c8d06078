"""Views that lose their database connection the way a PostgreSQL restart makes them lose it
(the server terminates the backend mid-request), for tests/project/test_database_gone.py."""

from django.db import connection
from django.http import HttpResponse
from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from project.urls import urlpatterns as project_urlpatterns


def _terminate_own_backend() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")


class TerminatedApiView(APIView):
    permission_classes = []
    authentication_classes = []

    def get(self, request):
        _terminate_own_backend()
        return Response({"unreachable": True})


def terminated_page(request):
    _terminate_own_backend()
    return HttpResponse("unreachable")


def broken_page(request):
    raise ZeroDivisionError("a real bug stays a 500")


urlpatterns = [
    path("api/v1/faults/terminated/", TerminatedApiView.as_view()),
    path("admin-faults/terminated/", terminated_page),
    path("admin-faults/broken/", broken_page),
    *project_urlpatterns,
]

handler500 = "project.api.errors.handler500"
