"""Admin pieces every app uses: a read-only model admin, and a JSON field people can read.

project/ names no domain app: these know nothing of the models they serve.
"""

import json

from django import forms


class ReadOnlyAdminMixin:
    """Rows shown, never written here: no add, change or delete (services and jobs write them;
    actions, where an admin has any, go through services too). Django then shows every field of
    the change page read-only. Put it before ModelAdmin in the bases."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class PrettyJSONField(forms.JSONField):
    """A JSON form field shown indented, for people to edit. With `key_order`, an object's keys
    come in that order (then the rest): jsonb stores them in its own order, not the writer's."""

    def __init__(self, *args, key_order: tuple[str, ...] = (), **kwargs):
        self.key_order = {key: index for index, key in enumerate(key_order)}
        super().__init__(*args, **kwargs)

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(self._in_reading_order(value), ensure_ascii=False, indent=2, cls=self.encoder)

    def _in_reading_order(self, node):
        if not self.key_order:
            return node
        if isinstance(node, dict):
            ordered = sorted(node.items(), key=lambda item: self.key_order.get(item[0], len(self.key_order)))
            return {key: self._in_reading_order(value) for key, value in ordered}
        if isinstance(node, list):
            return [self._in_reading_order(item) for item in node]
        return node
