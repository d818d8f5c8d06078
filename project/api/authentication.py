"""API token authentication: knox's, in one query per request."""

from django.utils import timezone
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.models import get_token_model
from knox.signals import token_expired


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's TokenAuthentication without its per-request sweep of the user's other tokens.

    knox loads every token of the user on every request to delete the expired ones: a second
    query per API call. The presented token's own expiry is still checked here (an expired token
    is refused and deleted, as knox does); the other expired tokens are deleted by the hourly
    `project.delete_expired_api_tokens` job.
    """

    def _cleanup_token(self, auth_token) -> bool:
        if auth_token.expiry is not None and auth_token.expiry < timezone.now():
            username = auth_token.user.get_username()
            auth_token.delete()
            token_expired.send(sender=self.__class__, username=username, source="auth_token")
            return True
        return False


class TokenScheme(KnoxTokenScheme):
    """The OpenAPI security scheme of knox's token, for this subclass (drf-spectacular)."""

    target_class = "project.api.authentication.TokenAuthentication"


def delete_expired_api_tokens() -> int:
    deleted, _ = get_token_model().objects.filter(expiry__lt=timezone.now()).delete()
    return deleted
