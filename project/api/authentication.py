"""API token authentication: knox's, in one query per request, and none for a recently seen token."""

import binascii
import time

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.crypto import hash_token
from knox.models import get_token_model
from knox.signals import token_expired
from rest_framework.exceptions import AuthenticationFailed

# digest of the presented token -> (AuthToken with its user, monotonic time the entry ends).
# Per process: every web worker keeps its own (see TokenAuthentication).
_recent_tokens: dict[str, tuple[object, float]] = {}


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's TokenAuthentication without its per-request sweep, and with recent tokens remembered.

    knox loads every token of the user on every request to delete the expired ones: a second
    query per API call. The presented token's own expiry is still checked here (an expired token
    is refused and deleted, as knox does); the other expired tokens are deleted by the hourly
    `project.delete_expired_api_tokens` job.

    The token -> user lookup (a query joining knox_authtoken and auth_user, ~1-2 ms of a request
    that is otherwise a cache hit) is remembered in the process for API_TOKEN_CACHE_TTL_S seconds,
    keyed by the SHA-512 digest knox computes anyway (the plain token is never kept). Each hit
    still checks the token's expiry and that the user is active. Deleting or saving a token or a
    user, or changing anyone's permissions or groups, forgets the entries at once in the process
    that did it (signals, project/apps.py); other web processes notice within the TTL. So a token
    deleted in the admin stops working everywhere within API_TOKEN_CACHE_TTL_S (0 turns the cache
    off: every request reads the database, as knox does).
    """

    def authenticate_credentials(self, token: bytes):
        ttl_s = settings.API_TOKEN_CACHE_TTL_S
        if ttl_s <= 0:
            return super().authenticate_credentials(token)
        try:
            digest = hash_token(token.decode("utf-8"))
        except (UnicodeDecodeError, TypeError, binascii.Error):
            return super().authenticate_credentials(token)  # knox's own answer to a malformed token
        now = time.monotonic()
        entry = _recent_tokens.get(digest)
        if entry is not None and entry[1] > now:
            auth_token = entry[0]
            if self._cleanup_token(auth_token):
                raise AuthenticationFailed(_("Invalid token."))
            return self.validate_user(auth_token)
        user, auth_token = super().authenticate_credentials(token)
        _remember(digest, auth_token, now + ttl_s)
        return user, auth_token

    def _cleanup_token(self, auth_token) -> bool:
        if auth_token.expiry is not None and auth_token.expiry < timezone.now():
            forget_token(auth_token.digest)
            username = auth_token.user.get_username()
            auth_token.delete()
            token_expired.send(sender=self.__class__, username=username, source="auth_token")
            return True
        return False


def _remember(digest: str, auth_token, until: float) -> None:
    if len(_recent_tokens) >= settings.API_TOKEN_CACHE_SIZE:
        now = time.monotonic()
        for stale in [key for key, (_token, ends) in list(_recent_tokens.items()) if ends <= now]:
            _recent_tokens.pop(stale, None)
        while len(_recent_tokens) >= settings.API_TOKEN_CACHE_SIZE:
            _recent_tokens.pop(next(iter(_recent_tokens)), None)  # the oldest entry
    _recent_tokens[digest] = (auth_token, until)


def forget_token(digest: str) -> None:
    _recent_tokens.pop(digest, None)


def forget_user_tokens(user_id: int) -> None:
    for digest in [key for key, (token, _ends) in list(_recent_tokens.items()) if token.user_id == user_id]:
        _recent_tokens.pop(digest, None)


def forget_all_tokens() -> None:
    _recent_tokens.clear()


def connect_token_cache_signals() -> None:
    """Forget remembered tokens when what they stand for changes in this process."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db.models.signals import m2m_changed, post_delete, post_save

    token_model, user_model = get_token_model(), get_user_model()

    def token_changed(sender, instance, **kwargs):
        forget_token(instance.digest)

    def user_changed(sender, instance, **kwargs):
        forget_user_tokens(instance.pk)

    def permissions_changed(sender, **kwargs):
        # A remembered user carries its permission cache (ModelBackend's _perm_cache).
        forget_all_tokens()

    for signal in (post_save, post_delete):
        signal.connect(token_changed, sender=token_model, weak=False, dispatch_uid="token_cache_token")
        signal.connect(user_changed, sender=user_model, weak=False, dispatch_uid="token_cache_user")
    for through in (user_model.groups.through, user_model.user_permissions.through, Group.permissions.through):
        m2m_changed.connect(permissions_changed, sender=through, weak=False, dispatch_uid=f"token_cache_{through}")


class TokenScheme(KnoxTokenScheme):
    """The OpenAPI security scheme of knox's token, for this subclass (drf-spectacular)."""

    target_class = "project.api.authentication.TokenAuthentication"


def delete_expired_api_tokens() -> int:
    deleted, _ = get_token_model().objects.filter(expiry__lt=timezone.now()).delete()
    return deleted
