"""Notifications for approvals staff, as a specification.

Staff subscribe to conditions; once a minute the job measures every condition once and emails
each subscriber whose digest interval has elapsed one digest of their firing conditions. Each
condition fires above its threshold and is quiet at it. Mail goes to Django's locmem outbox.
"""

from datetime import timedelta
from smtplib import SMTPException, SMTPRecipientsRefused

import pytest
from django.contrib import admin
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from approvals import jobs, notifications
from approvals.broker import AUTOMATION_JOB
from approvals.models import ApprovalRule, NotificationDigest, NotificationSubscription, RuleEvaluation, Version
from project import devservices
from project.admin import EstimatedCountPaginator
from project.models import JobRun
from project.schedules import all_schedules
from tests.approvals.factories import RuleFactory, VersionFactory
from tests.factories import UserFactory
from tests.row_locks import row_locked_elsewhere

pytestmark = pytest.mark.django_db
Kind = NotificationSubscription.Kind
SUBSCRIPTIONS = "/api/v1/approvals/notification-subscriptions/"


@pytest.fixture(autouse=True)
def small_windows(settings):
    settings.APPROVALS_NOTIFY_DISAGREEMENT_MIN_SAMPLE = 4
    settings.APPROVALS_NOTIFY_SKIPS_WINDOW_MINUTES = 60


def staff_member(**fields):
    return UserFactory(is_staff=True, **fields)


def subscribe(user, kind, *, interval_minutes=60, **parameters) -> NotificationSubscription:
    return notifications.subscription_create(user=user, kind=kind, interval_minutes=interval_minutes, **parameters)


def pending_versions(count: int, *, age_minutes: float = 1):
    VersionFactory.create_batch(count)
    Version.objects.update(created_at=timezone.now() - timedelta(minutes=age_minutes))


def rule_in_evaluate_mode(*, compared: int, disagreements: int, **fields) -> ApprovalRule:
    """A rule in evaluate mode that would approve `compared` versions staff decided since, of which
    staff rejected `disagreements`."""
    rule = RuleFactory(is_active=True, mode=ApprovalRule.Mode.EVALUATE, **fields)
    reviewer = UserFactory()
    for number in range(compared):
        rejected = number < disagreements
        version = VersionFactory(
            status="rejected" if rejected else "approved", approved=not rejected, decided_by=reviewer
        )
        RuleEvaluation.objects.create(
            rule_id=rule.pk, rule_revision=rule.revision, version_id=version.pk, would_decide="approved"
        )
    return rule


def guard_skipped_runs(count: int, *, minutes_ago: float = 1, result=None):
    started = timezone.now() - timedelta(minutes=minutes_ago)
    JobRun.objects.bulk_create(
        JobRun(
            name=AUTOMATION_JOB,
            status=JobRun.Status.SKIPPED,
            started_at=started,
            result=result or {"skipped": "lock waits on versions 9 > 5", "guard_skip": "lock"},
        )
        for _ in range(count)
    )


def run(**kwargs) -> dict:
    return notifications.notifications_send_due(**kwargs)


# --- Each condition fires above its threshold and is quiet at it ------------------------------------------


@pytest.mark.parametrize(("pending", "fires"), [(4, True), (3, False), (2, False)])
def test_backlog_fires_above_n_pending_and_is_quiet_at_or_below(pending, fires, mailoutbox):
    subscribe(staff_member(), Kind.BACKLOG, pending_above=3)
    pending_versions(pending)
    run()
    assert len(mailoutbox) == int(fires)
    if fires:
        assert f"{pending} versions pending (more than 3)" in mailoutbox[0].body


@pytest.mark.parametrize(("age_minutes", "fires"), [(31, True), (30, False), (29.5, False)])
def test_backlog_fires_when_the_oldest_pending_is_older_than_m_minutes(age_minutes, fires, mailoutbox):
    subscribe(staff_member(), Kind.BACKLOG, oldest_pending_minutes=30)
    VersionFactory()
    now = timezone.now()
    Version.objects.update(created_at=now - timedelta(minutes=age_minutes))
    run(now=now)
    assert len(mailoutbox) == int(fires)
    if fires:
        assert "the oldest pending version has waited 31 minutes (more than 30)" in mailoutbox[0].body


def test_an_empty_backlog_fires_neither_backlog_condition(mailoutbox):
    subscribe(staff_member(), Kind.BACKLOG, pending_above=0, oldest_pending_minutes=1)
    assert run()["claimed"] == 0
    assert mailoutbox == []


@pytest.mark.parametrize(("compared", "disagreements", "fires"), [(10, 3, True), (16, 4, False), (10, 2, False)])
def test_a_rule_in_evaluate_mode_fires_above_x_percent_disagreement(compared, disagreements, fires, mailoutbox):
    # 3 of 10 is 30% (> 25%: fires); 4 of 16 is exactly 25% (quiet).
    subscribe(staff_member(), Kind.RULE_DISAGREEMENT, disagreement_percent=25)
    rule = rule_in_evaluate_mode(compared=compared, disagreements=disagreements, name="Trusted authors")
    run()
    assert len(mailoutbox) == int(fires)
    if fires:
        assert "rule 'Trusted authors' (evaluate mode) disagrees with staff on 3 of 10 versions, 30.0%" in (
            mailoutbox[0].body
        )
        (condition,) = NotificationDigest.objects.get().conditions
        assert (condition["rule_id"], condition["compared"], condition["disagreements"]) == (rule.pk, 10, 3)


def test_disagreement_below_the_minimum_sample_pages_nobody(settings, mailoutbox):
    settings.APPROVALS_NOTIFY_DISAGREEMENT_MIN_SAMPLE = 5
    subscribe(staff_member(), Kind.RULE_DISAGREEMENT, disagreement_percent=0)
    rule_in_evaluate_mode(compared=4, disagreements=4)  # 100%, but 4 < 5 compared
    run()
    assert mailoutbox == []
    rule_in_evaluate_mode(compared=5, disagreements=1)
    run()
    assert len(mailoutbox) == 1


def test_disagreement_counts_only_active_rules_in_evaluate_mode_at_their_current_revision(mailoutbox):
    subscribe(staff_member(), Kind.RULE_DISAGREEMENT, disagreement_percent=10)
    live = rule_in_evaluate_mode(compared=6, disagreements=6)
    ApprovalRule.objects.filter(pk=live.pk).update(mode=ApprovalRule.Mode.LIVE)
    inactive = rule_in_evaluate_mode(compared=6, disagreements=6)
    ApprovalRule.objects.filter(pk=inactive.pk).update(is_active=False)
    reworded = rule_in_evaluate_mode(compared=6, disagreements=6)
    ApprovalRule.objects.filter(pk=reworded.pk).update(revision=2)  # its records are of revision 1
    assert notifications.notification_conditions().disagreements == ()
    run()
    assert mailoutbox == []


def test_disagreement_ignores_would_be_decisions_older_than_the_window_and_undecided_versions(settings):
    settings.APPROVALS_NOTIFY_DISAGREEMENT_WINDOW_HOURS = 24
    rule = rule_in_evaluate_mode(compared=4, disagreements=2)
    RuleEvaluation.objects.create(
        rule_id=rule.pk, rule_revision=1, version_id=VersionFactory().pk, would_decide="rejected"
    )  # still pending: nothing to compare with
    (measured,) = notifications.notification_conditions().disagreements
    assert (measured.compared, measured.disagreements) == (4, 2)
    RuleEvaluation.objects.update(created_at=timezone.now() - timedelta(hours=25))
    assert notifications.notification_conditions().disagreements == ()


@pytest.mark.parametrize(("skips", "fires"), [(3, True), (2, False)])
def test_automation_skips_fire_above_n_guard_skips_in_the_window(skips, fires, mailoutbox):
    subscribe(staff_member(), Kind.AUTOMATION_SKIPS, skips_above=2)
    guard_skipped_runs(skips)
    guard_skipped_runs(5, minutes_ago=61)  # outside the 60-minute window
    # Skipped for other reasons than the guard: not counted.
    guard_skipped_runs(5, result={"skipped": "another run of this job holds its lock"})
    run()
    assert len(mailoutbox) == int(fires)
    if fires:
        assert "the guard skipped the automation 3 times in the last 60 minutes (more than 2)" in mailoutbox[0].body


def test_a_run_the_guard_skips_is_recorded_where_the_skip_condition_counts_it(database_signals):
    database_signals(lock_waits_on_versions=9)
    assert jobs.run_automation.run_now({}) == {"skipped": "lock waits on versions 9 > 5"}
    run_row = JobRun.objects.get(name=AUTOMATION_JOB)
    assert run_row.result == {"skipped": "lock waits on versions 9 > 5", "guard_skip": "lock"}
    assert notifications.notification_conditions().guard_skips == 1


def test_the_sql_that_claims_and_the_python_that_writes_agree_at_every_boundary():
    """firing_q picks the subscriptions in SQL; firing_conditions says in Python what fired. They
    must agree, or a claimed subscription sends nothing (or a firing one is never claimed)."""
    subscriptions = []
    for threshold in range(4):
        subscriptions += [
            subscribe(staff_member(), Kind.BACKLOG, pending_above=threshold),
            subscribe(staff_member(), Kind.BACKLOG, oldest_pending_minutes=threshold + 1),
            subscribe(staff_member(), Kind.RULE_DISAGREEMENT, disagreement_percent=[0, 25, 30, 99][threshold]),
            subscribe(staff_member(), Kind.AUTOMATION_SKIPS, skips_above=threshold),
        ]
    rules = {
        "none": (),
        "25%": (notifications.RuleDisagreement(1, "a", compared=16, disagreements=4),),
        "30%": (notifications.RuleDisagreement(1, "a", compared=10, disagreements=3),),
        "0% and 31.25%": (
            notifications.RuleDisagreement(1, "a", compared=8, disagreements=0),
            notifications.RuleDisagreement(2, "b", compared=16, disagreements=5),
        ),
    }
    for figure in range(5):
        for oldest in (None, figure + 0.5, float(figure)):
            for disagreements in rules.values():
                conditions = notifications.NotificationConditions(
                    measured_at=timezone.now(),
                    pending=figure,
                    oldest_pending_minutes=oldest,
                    disagreements=disagreements,
                    guard_skips=figure,
                    skips_window_minutes=60,
                )
                in_sql = set(
                    NotificationSubscription.objects.filter(notifications.firing_q(conditions)).values_list(
                        "pk", flat=True
                    )
                )
                in_python = {s.pk for s in subscriptions if notifications.firing_conditions(s, conditions)}
                assert in_sql == in_python, (figure, oldest, disagreements)


# --- The digest ------------------------------------------------------------------------------------------


def test_one_email_per_subscriber_lists_all_their_firing_conditions(mailoutbox):
    alice, bob = staff_member(username="alice"), staff_member(username="bob")
    subscribe(alice, Kind.BACKLOG, pending_above=1, oldest_pending_minutes=10)
    subscribe(alice, Kind.AUTOMATION_SKIPS, skips_above=0)
    quiet = subscribe(alice, Kind.RULE_DISAGREEMENT, disagreement_percent=50)
    subscribe(bob, Kind.AUTOMATION_SKIPS, skips_above=0)
    pending_versions(2, age_minutes=20)
    guard_skipped_runs(1)

    summary = run()

    assert (summary["digests_sent"], summary["digests_failed"]) == (2, 0)
    by_recipient = {message.to[0]: message for message in mailoutbox}
    assert sorted(by_recipient) == ["alice@example.com", "bob@example.com"]
    assert by_recipient["alice@example.com"].subject == "[Opsdeck] Approvals: 3 conditions need attention"
    assert by_recipient["alice@example.com"].body.count("\n- ") == 3
    assert by_recipient["bob@example.com"].subject == "[Opsdeck] Approvals: 1 condition needs attention"
    digest = NotificationDigest.objects.get(user=alice)
    assert [(c["kind"], c.get("measure")) for c in digest.conditions] == [
        ("backlog", "pending"),
        ("backlog", "oldest_pending_minutes"),
        ("automation_skips", None),
    ]
    assert [c["value"] for c in digest.conditions] == [2, 20.0, 1]
    # The subscription that did not fire is not marked: it stays due for when it does.
    quiet.refresh_from_db()
    assert quiet.last_sent_at is None
    assert NotificationSubscription.objects.filter(last_sent_at__isnull=False).count() == 3


def test_the_digest_interval_is_respected(mailoutbox):
    subscription = subscribe(staff_member(), Kind.BACKLOG, pending_above=0, interval_minutes=30)
    pending_versions(1)
    start = timezone.now()
    run(now=start)
    run(now=start + timedelta(minutes=1))  # a retried run, or the next minute: not due
    run(now=start + timedelta(minutes=29, seconds=59))
    assert len(mailoutbox) == 1
    run(now=start + timedelta(minutes=30))
    assert len(mailoutbox) == 2
    subscription.refresh_from_db()
    assert subscription.last_sent_at == start + timedelta(minutes=30)
    assert NotificationDigest.objects.count() == 2


def test_disabled_subscriptions_and_users_who_cannot_receive_get_nothing(mailoutbox):
    subscribe(staff_member(), Kind.BACKLOG, pending_above=0, enabled=False)
    subscribe(staff_member(email=""), Kind.BACKLOG, pending_above=0)
    subscribe(staff_member(is_active=False), Kind.BACKLOG, pending_above=0)
    no_longer_staff = staff_member()
    subscribe(no_longer_staff, Kind.BACKLOG, pending_above=0)
    no_longer_staff.is_staff = False
    no_longer_staff.save()
    pending_versions(1)
    assert run()["claimed"] == 0
    assert mailoutbox == []


def test_the_evaluation_costs_the_same_queries_however_many_subscribe(django_assert_num_queries, mailoutbox):
    pending_versions(2)
    guard_skipped_runs(2)
    rule_in_evaluate_mode(compared=4, disagreements=4)
    with django_assert_num_queries(3):  # backlog, rule disagreements, guard skips
        notifications.notification_conditions()

    def queries_of_a_run_with(subscribers: int) -> int:
        NotificationSubscription.objects.all().delete()
        for _ in range(subscribers):
            user = staff_member()
            subscribe(user, Kind.BACKLOG, pending_above=1)
            subscribe(user, Kind.RULE_DISAGREEMENT, disagreement_percent=50)
            subscribe(user, Kind.AUTOMATION_SKIPS, skips_above=1)
        with CaptureQueriesContext(connection) as queries:
            assert run()["digests_sent"] == subscribers
        return len(queries)

    assert queries_of_a_run_with(1) == queries_of_a_run_with(7)
    assert len(mailoutbox) == 8


class RefusingBackend(BaseEmailBackend):
    def send_messages(self, email_messages):
        raise SMTPException("451 relay temporarily unavailable")


class RefusesBobBackend(LocmemBackend):
    def send_messages(self, messages):
        if any("bob@example.com" in message.to for message in messages):
            raise SMTPRecipientsRefused({"bob@example.com": (550, b"mailbox unavailable")})
        return super().send_messages(messages)


def test_a_mail_failure_leaves_the_subscription_due_and_records_nothing(settings, mailoutbox):
    subscription = subscribe(staff_member(), Kind.BACKLOG, pending_above=0)
    pending_versions(1)
    settings.EMAIL_BACKEND = "tests.approvals.test_notifications.RefusingBackend"
    assert run()["digests_failed"] == 1
    subscription.refresh_from_db()
    assert subscription.last_sent_at is None
    assert not NotificationDigest.objects.exists()

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert run()["digests_sent"] == 1
    assert len(mailoutbox) == 1


def test_one_refused_recipient_does_not_stop_the_others(settings, mailoutbox):
    settings.EMAIL_BACKEND = "tests.approvals.test_notifications.RefusesBobBackend"
    alice, bob = staff_member(username="alice"), staff_member(username="bob")
    for user in (alice, bob):
        subscribe(user, Kind.BACKLOG, pending_above=0)
    pending_versions(1)
    assert run() | {"pending": None} == {
        "pending": None,
        "guard_skips": 0,
        "rules_compared": 0,
        "claimed": 2,
        "digests_sent": 1,
        "digests_failed": 1,
    }
    assert [message.to for message in mailoutbox] == [["alice@example.com"]]
    assert list(NotificationSubscription.objects.filter(last_sent_at__isnull=True).values_list("user", flat=True)) == [
        bob.pk
    ]


@pytest.mark.django_db(transaction=True)
def test_a_concurrent_run_skips_the_subscriptions_another_run_holds(mailoutbox):
    subscription = subscribe(staff_member(), Kind.BACKLOG, pending_above=0)
    pending_versions(1)
    with row_locked_elsewhere(NotificationSubscription, subscription.pk):
        assert run()["claimed"] == 0
    assert mailoutbox == []
    assert run()["digests_sent"] == 1


def test_the_job_is_scheduled_every_minute_and_runs_through_the_job_runner(mailoutbox):
    (schedule,) = [s for s in all_schedules() if s.job == jobs.NOTIFICATIONS_JOB]
    assert (schedule.crontab, schedule.queue) == ({"minute": "*"}, "default")
    subscribe(staff_member(), Kind.BACKLOG, pending_above=0)
    pending_versions(1)
    assert jobs.send_notifications.run_now({})["digests_sent"] == 1
    assert JobRun.objects.get(name=jobs.NOTIFICATIONS_JOB).status == JobRun.Status.SUCCEEDED
    assert len(mailoutbox) == 1


def test_on_the_console_backend_a_digest_is_printed(settings, capsys):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    subscribe(staff_member(username="carol"), Kind.BACKLOG, pending_above=0)
    pending_versions(1)
    assert run()["digests_sent"] == 1
    printed = capsys.readouterr().out
    assert "Subject: [Opsdeck] Approvals: 1 condition needs attention" in printed
    assert "To: carol@example.com" in printed and "1 versions pending (more than 0)" in printed


def test_make_run_prints_mail_on_the_console():
    defaults = devservices.local_production_like_settings({})
    assert defaults["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend"
    assert "EMAIL_BACKEND" not in devservices.local_production_like_settings({"EMAIL_BACKEND": "x.Backend"})


# --- The table's constraints -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "backlog"},  # no threshold
        {"kind": "backlog", "pending_above": 1, "skips_above": 1},  # another kind's
        {"kind": "rule_disagreement", "disagreement_percent": 100},
        {"kind": "automation_skips", "skips_above": 1, "interval_minutes": 0},
        {"kind": "backlog", "oldest_pending_minutes": 0},
    ],
)
def test_the_database_refuses_parameters_that_do_not_fit_the_kind(fields):
    with pytest.raises(IntegrityError), transaction.atomic():
        NotificationSubscription.objects.create(user=staff_member(), **fields)


# --- API --------------------------------------------------------------------------------------------------


@pytest.fixture
def api_for(client_for):
    return client_for


def test_the_api_lists_creates_updates_and_deletes_only_your_own_subscriptions(api_for):
    me, other = staff_member(), staff_member()
    theirs = subscribe(other, Kind.BACKLOG, pending_above=5)
    client = api_for(me)

    created = client.post(SUBSCRIPTIONS, {"kind": "backlog", "pending_above": 100, "interval_minutes": 15})
    assert created.status_code == 201, created.content
    assert created.json() | {"id": 0, "created_at": "", "updated_at": ""} == {
        "id": 0,
        "kind": "backlog",
        "pending_above": 100,
        "oldest_pending_minutes": None,
        "disagreement_percent": None,
        "skips_above": None,
        "interval_minutes": 15,
        "enabled": True,
        "last_sent_at": None,
        "created_at": "",
        "updated_at": "",
    }
    mine = created.json()["id"]
    client.post(SUBSCRIPTIONS, {"kind": "automation_skips", "skips_above": 3})

    listed = client.get(SUBSCRIPTIONS).json()
    assert {row["kind"] for row in listed["results"]} == {"backlog", "automation_skips"}
    assert set(listed) == {"results", "next", "previous"}

    changed = client.patch(f"{SUBSCRIPTIONS}{mine}/", {"oldest_pending_minutes": 45, "enabled": False})
    assert changed.status_code == 200, changed.content
    assert (changed.json()["pending_above"], changed.json()["oldest_pending_minutes"]) == (100, 45)
    assert client.delete(f"{SUBSCRIPTIONS}{mine}/").status_code == 204

    assert client.get(f"{SUBSCRIPTIONS}{theirs.pk}/").status_code == 404
    assert client.delete(f"{SUBSCRIPTIONS}{theirs.pk}/").status_code == 404
    assert NotificationSubscription.objects.filter(pk=theirs.pk).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "weather"}, "kind"),
        ({"kind": "backlog"}, "pending_above"),
        ({"kind": "backlog", "pending_above": 1, "skips_above": 2}, "skips_above"),
        ({"kind": "backlog", "pending_above": -1}, "pending_above"),
        ({"kind": "backlog", "pending_above": "many"}, "pending_above"),
        ({"kind": "backlog", "pending_above": 2**40}, "pending_above"),
        ({"kind": "backlog", "oldest_pending_minutes": 0}, "oldest_pending_minutes"),
        ({"kind": "rule_disagreement", "disagreement_percent": 100}, "disagreement_percent"),
        ({"kind": "rule_disagreement"}, "disagreement_percent"),
        ({"kind": "automation_skips", "skips_above": 1, "interval_minutes": 0}, "interval_minutes"),
        ({"kind": "automation_skips", "skips_above": 1, "interval_minutes": 10_081}, "interval_minutes"),
        ({"kind": "automation_skips", "skips_above": 1, "enabled": "sometimes"}, "enabled"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api_for, body, field):
    response = api_for(staff_member()).post(SUBSCRIPTIONS, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert not NotificationSubscription.objects.exists()


def test_a_second_subscription_of_a_kind_and_a_change_of_kind_are_400s(api_for):
    me = staff_member()
    client = api_for(me)
    first = client.post(SUBSCRIPTIONS, {"kind": "backlog", "pending_above": 1}).json()["id"]
    again = client.post(SUBSCRIPTIONS, {"kind": "backlog", "pending_above": 2})
    assert again.status_code == 400 and "kind" in again.json()["error"]["fields"]
    switched = client.patch(f"{SUBSCRIPTIONS}{first}/", {"kind": "automation_skips", "skips_above": 1})
    assert switched.status_code == 400 and "kind" in switched.json()["error"]["fields"]
    emptied = client.patch(f"{SUBSCRIPTIONS}{first}/", {"pending_above": None}, format="json")
    assert emptied.status_code == 400 and "pending_above" in emptied.json()["error"]["fields"]
    assert NotificationSubscription.objects.get().pending_above == 1


def test_the_schema_says_what_the_api_answers_before_the_first_digest():
    # make fuzz found it: last_sent_at is null until a digest went.
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    assert schema["components"]["schemas"]["Subscription"]["properties"]["last_sent_at"]["nullable"] is True


def test_the_api_is_for_staff_only(api_for, client):
    assert api_for(UserFactory()).get(SUBSCRIPTIONS).status_code == 403
    assert client.get(SUBSCRIPTIONS).status_code in (401, 403)


# --- Admin ------------------------------------------------------------------------------------------------

SUBSCRIPTION_CHANGELIST = reverse("admin:approvals_notificationsubscription_changelist")
SUBSCRIPTION_ADD = reverse("admin:approvals_notificationsubscription_add")
DIGEST_CHANGELIST = reverse("admin:approvals_notificationdigest_changelist")


def test_a_staff_member_manages_their_own_subscriptions_in_the_admin(client):
    me, other = staff_member(username="me"), staff_member(username="other")
    subscribe(other, Kind.AUTOMATION_SKIPS, skips_above=7)
    client.force_login(me)
    assert client.get(SUBSCRIPTION_ADD).status_code == 200
    response = client.post(
        SUBSCRIPTION_ADD, {"kind": "backlog", "pending_above": "50", "interval_minutes": "30", "enabled": "on"}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    mine = NotificationSubscription.objects.get(user=me)
    assert (mine.kind, mine.pending_above, mine.interval_minutes) == ("backlog", 50, 30)

    page = client.get(SUBSCRIPTION_CHANGELIST).content.decode()
    assert "pending &gt; 50" in page and "guard skips &gt; 7" not in page
    theirs = NotificationSubscription.objects.get(user=other)
    change_url = reverse("admin:approvals_notificationsubscription_change", args=[theirs.pk])
    assert client.get(change_url).status_code == 302  # not theirs to see: back to the index
    assert client.post(change_url, {"skips_above": "1", "interval_minutes": "5"}).status_code in (302, 403)
    theirs.refresh_from_db()
    assert theirs.skips_above == 7


def test_the_admin_form_names_the_parameter_that_does_not_fit(client):
    client.force_login(staff_member())
    response = client.post(SUBSCRIPTION_ADD, {"kind": "backlog", "skips_above": "3", "interval_minutes": "30"})
    assert response.status_code == 200
    assert "not a parameter of backlog" in response.content.decode()
    assert not NotificationSubscription.objects.exists()


def test_a_superuser_sees_everyones_subscriptions(admin_client):
    subscribe(staff_member(), Kind.AUTOMATION_SKIPS, skips_above=7)
    subscribe(staff_member(), Kind.BACKLOG, oldest_pending_minutes=90)
    page = admin_client.get(SUBSCRIPTION_CHANGELIST).content.decode()
    assert "guard skips &gt; 7" in page and "oldest pending &gt; 90 min" in page


def test_the_digest_list_shows_your_digests_with_their_conditions_read_only(client, mailoutbox):
    me, other = staff_member(), staff_member()
    subscribe(me, Kind.BACKLOG, pending_above=0)
    subscribe(other, Kind.AUTOMATION_SKIPS, skips_above=0)
    pending_versions(3)
    guard_skipped_runs(1)
    run()
    client.force_login(me)
    page = client.get(DIGEST_CHANGELIST)
    assert page.status_code == 200
    text = page.content.decode()
    assert "3 versions pending (more than 0)" in text
    assert "guard skipped" not in text  # the other person's digest
    digest = NotificationDigest.objects.get(user=me)
    url = reverse("admin:approvals_notificationdigest_change", args=[digest.pk])
    detail = client.get(url)
    assert detail.status_code == 200 and "3 versions pending (more than 0)" in detail.content.decode()
    client.post(url, {"subject": "changed"})
    digest.refresh_from_db()
    assert digest.subject.startswith("[Opsdeck]")


def test_the_digest_list_never_counts_the_whole_table(admin_client):
    model_admin = admin.site._registry[NotificationDigest]
    assert model_admin.show_full_result_count is False
    assert model_admin.paginator is EstimatedCountPaginator  # pg_class's estimate past 10,000 rows
    assert admin_client.get(DIGEST_CHANGELIST).status_code == 200


def test_digests_past_90_days_are_archived_by_retention(mailoutbox):
    from project.retention import apply_retention

    subscribe(staff_member(), Kind.BACKLOG, pending_above=0, interval_minutes=1)
    pending_versions(1)
    start = timezone.now()
    run(now=start - timedelta(days=91))
    run(now=start)
    assert apply_retention()["tables"]["approvals.NotificationDigest"]["rows"] == 1
    assert list(NotificationDigest.objects.values_list("sent_at", flat=True)) == [start]
