"""The admin's login form, throttled: after ADMIN_LOGIN_MAX_FAILURES wrong passwords for one username
from one address within ADMIN_LOGIN_WINDOW_S, every attempt is refused (even the right password)
until the window ends. Counted in the cache (Redis), so every web worker sees the same count."""

import hashlib

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import cache
from django.core.exceptions import ValidationError


def _key(request, username: str) -> str:
    address = (request.META.get("REMOTE_ADDR") or "") if request is not None else ""
    digest = hashlib.sha256(f"{address}\0{username.strip().lower()}".encode()).hexdigest()[:32]
    return f"adminlogin:failures:{digest}"


def login_failures(request, username: str) -> int:
    return cache.get(_key(request, username)) or 0


def login_failure_record(request, username: str) -> None:
    key = _key(request, username)
    # The window starts at the first failure and is not extended by later ones.
    if not cache.add(key, 1, timeout=settings.ADMIN_LOGIN_WINDOW_S):
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr: this failure starts a new window
            cache.add(key, 1, timeout=settings.ADMIN_LOGIN_WINDOW_S)


class ThrottledAdminLoginForm(AdminAuthenticationForm):
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "throttled": "Too many failed logins for this username from your address. Try again in %(minutes)s minutes.",
    }

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        if username and login_failures(self.request, username) >= settings.ADMIN_LOGIN_MAX_FAILURES:
            raise ValidationError(
                self.error_messages["throttled"],
                code="throttled",
                params={"minutes": max(1, round(settings.ADMIN_LOGIN_WINDOW_S / 60))},
            )
        try:
            return super().clean()
        except ValidationError as error:
            if error.code == "invalid_login":
                login_failure_record(self.request, username)
            raise
