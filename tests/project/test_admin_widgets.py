"""project.admin_widgets: the read-only admin mixin and the JSON field people read and edit."""

from django.contrib import admin
from django.forms.fields import InvalidJSONInput
from django.test import RequestFactory

from project.admin_widgets import PrettyJSONField, ReadOnlyAdminMixin
from project.models import JobRun


def test_the_read_only_mixin_refuses_add_change_and_delete_whatever_the_user():
    class JobRunReadOnly(ReadOnlyAdminMixin, admin.ModelAdmin):
        pass

    model_admin = JobRunReadOnly(JobRun, admin.site)
    request = RequestFactory().get("/")

    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)


def test_pretty_json_is_indented_and_keeps_unicode():
    shown = PrettyJSONField().prepare_value({"name": "café", "n": [1]})

    assert shown == '{\n  "name": "café",\n  "n": [\n    1\n  ]\n}'


def test_pretty_json_puts_keys_in_the_given_order_at_every_depth():
    field = PrettyJSONField(key_order=("field", "op", "value"))

    shown = field.prepare_value({"all": [{"value": 3, "op": ">", "field": "x"}]})

    assert shown.index('"field"') < shown.index('"op"') < shown.index('"value"')


def test_pretty_json_gives_back_invalid_input_as_typed():
    assert PrettyJSONField().prepare_value(InvalidJSONInput("{oops")) == "{oops"
