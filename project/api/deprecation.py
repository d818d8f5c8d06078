"""Old paths kept answering after an endpoint moved: `deprecated(urlpatterns, successor=...)`.

Each view answers as before, adding `Deprecation` (RFC 9745: when the path was deprecated) and a
`Link` to its successor. The wrapped views carry no `cls`, so drf-spectacular leaves them out of
the OpenAPI schema: clients find only the current paths there.
"""

from django.urls import URLPattern, URLResolver

# 2026-12-05T00:00:00Z, the day the reconciliation API moved to one prefix (issue 12).
DEPRECATED_SINCE = "@1796428800"


def deprecated(urlpatterns: list, *, successor: str, since: str = DEPRECATED_SINCE) -> list:
    return [_deprecated(pattern, successor, since) for pattern in urlpatterns]


def _deprecated(pattern, successor: str, since: str):
    if isinstance(pattern, URLResolver):
        return URLResolver(
            pattern.pattern,
            deprecated(pattern.url_patterns, successor=successor, since=since),
            pattern.default_kwargs,
            pattern.app_name,
            pattern.namespace,
        )
    return URLPattern(
        pattern.pattern, _with_headers(pattern.callback, successor, since), pattern.default_args, pattern.name
    )


def _with_headers(view, successor: str, since: str):
    def deprecated_view(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response["Deprecation"] = since
        response["Link"] = f'<{successor}>; rel="successor-version"'
        return response

    # Like the view it wraps (DRF's are csrf-exempt: they check CSRF themselves), minus `cls`.
    deprecated_view.csrf_exempt = getattr(view, "csrf_exempt", False)
    deprecated_view.__name__ = f"deprecated_{getattr(view, '__name__', 'view')}"
    return deprecated_view
