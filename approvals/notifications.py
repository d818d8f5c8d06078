"""Notifications for approvals staff: conditions measured once a minute, a digest email per person.

A staff member subscribes to conditions (NotificationSubscription): the backlog above N pending
or its oldest version older than M minutes, a rule in evaluate mode disagreeing with staff more
than X%, the guard skipping the automation more than N times. Every run of the beat job
`approvals.send_notifications`:

1. measures every condition once (`notification_conditions`: three queries, however many
   subscribe);
2. claims, in one statement, the enabled subscriptions whose digest interval has elapsed and whose
   condition fires on those figures (`FOR UPDATE SKIP LOCKED`: a concurrent or retried run skips
   what this one holds, and finds it not due once this one commits);
3. sends one email per person, listing all their claimed conditions, over one mail connection;
4. in the same transaction, marks the subscriptions of the emails that went as sent and records
   each digest (NotificationDigest). A person whose email failed is not marked: still due, next run.

A crash after an email went but before the commit sends it again on the next run (at least once:
a digest twice beats a digest lost).
"""

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core import mail
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Value
from django.utils import timezone

from approvals.broker import AUTOMATION_JOB, GUARD_SKIP_KEY
from approvals.exceptions import SubscriptionInvalid
from approvals.models import ApprovalRule, NotificationDigest, NotificationSubscription, RuleEvaluation, Version
from project.models import JobRun

logger = logging.getLogger("opsdeck.approvals")
Kind = NotificationSubscription.Kind
PARAMETERS_OF_KIND = {
    Kind.BACKLOG: ("pending_above", "oldest_pending_minutes"),
    Kind.RULE_DISAGREEMENT: ("disagreement_percent",),
    Kind.AUTOMATION_SKIPS: ("skips_above",),
}
PARAMETERS = ("pending_above", "oldest_pending_minutes", "disagreement_percent", "skips_above")
INTERVAL_MINUTES_MAX = 10_080  # a week; the table's constraint says the same
INTEGER_MAX = 2**31 - 1


# --- Measuring the conditions ------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleDisagreement:
    """A rule in evaluate mode against staff: of `compared` versions it would have decided that a
    person decided since, `disagreements` were decided otherwise."""

    rule_id: int
    name: str
    compared: int
    disagreements: int

    @property
    def percent(self) -> float:
        return 100 * self.disagreements / self.compared

    def above(self, percent: int) -> bool:
        # In integers: 100 * d / c > X, with no float rounding at the boundary (3 of 10 is 30%).
        return 100 * self.disagreements > percent * self.compared


@dataclass(frozen=True)
class NotificationConditions:
    """The figures every subscription is compared with, measured once per run."""

    measured_at: datetime
    pending: int
    oldest_pending_minutes: float | None  # None: nothing pending
    disagreements: tuple[RuleDisagreement, ...]  # rules with at least the minimum sample
    guard_skips: int  # automation runs the guard skipped within skips_window_minutes
    skips_window_minutes: int


def backlog_figures(*, now: datetime) -> tuple[int, float | None]:
    """(pending versions, age in minutes of the oldest): one index-only scan of the partial index
    on pending versions (version_pending_created_idx)."""
    row = Version.objects.filter(status=Version.Status.PENDING).aggregate(pending=Count("pk"), oldest=Min("created_at"))
    oldest = row["oldest"]
    return row["pending"], None if oldest is None else (now - oldest).total_seconds() / 60


def rule_disagreements(*, since: datetime, min_sample: int) -> tuple[RuleDisagreement, ...]:
    """Every active rule in evaluate mode compared with staff, in one GROUP BY: its would-be
    decisions (approve or reject, current revision) recorded since `since` on versions a person
    has decided, the ones a person decided otherwise counted as disagreements. The same comparison
    as selectors.evaluation_agreement, for all rules at once; rules below `min_sample` are left out."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT r.id, r.name, count(*), count(*) FILTER (WHERE v.status <> e.would_decide)
            FROM {ApprovalRule._meta.db_table} AS r
            JOIN {RuleEvaluation._meta.db_table} AS e
                ON e.rule_id = r.id AND e.rule_revision = r.revision  -- one_evaluation_per_rule's index
            JOIN {Version._meta.db_table} AS v ON v.id = e.version_id
            WHERE r.is_active AND r.mode = %s
              AND e.would_decide <> 'left' AND e.created_at >= %s
              AND v.decided_by_id IS NOT NULL AND v.status IN ('approved', 'rejected', 'reverted')
            GROUP BY r.id, r.name
            HAVING count(*) >= %s
            ORDER BY r.id
            """,
            [ApprovalRule.Mode.EVALUATE, since, min_sample],
        )
        return tuple(RuleDisagreement(*row) for row in cursor.fetchall())


def guard_skips(*, since: datetime) -> int:
    """Automation runs the guard skipped since `since` (their JobRun rows: jobrun_name_started_idx)."""
    return JobRun.objects.filter(
        name=AUTOMATION_JOB, status=JobRun.Status.SKIPPED, started_at__gte=since, result__has_key=GUARD_SKIP_KEY
    ).count()


def notification_conditions(*, now: datetime | None = None) -> NotificationConditions:
    """Every condition, measured once: three queries."""
    now = now or timezone.now()
    pending, oldest_minutes = backlog_figures(now=now)
    skips_window = settings.APPROVALS_NOTIFY_SKIPS_WINDOW_MINUTES
    return NotificationConditions(
        measured_at=now,
        pending=pending,
        oldest_pending_minutes=oldest_minutes,
        disagreements=rule_disagreements(
            since=now - timedelta(hours=settings.APPROVALS_NOTIFY_DISAGREEMENT_WINDOW_HOURS),
            min_sample=settings.APPROVALS_NOTIFY_DISAGREEMENT_MIN_SAMPLE,
        ),
        guard_skips=guard_skips(since=now - timedelta(minutes=skips_window)),
        skips_window_minutes=skips_window,
    )


def firing_q(conditions: NotificationConditions) -> Q:
    """The subscriptions whose condition fires on these figures, as SQL. Thresholds are whole
    numbers, so `threshold < ceil(figure)` is `threshold < figure` (and keeps the column integer)."""
    firing = Q(kind=Kind.BACKLOG, pending_above__lt=conditions.pending)
    if conditions.oldest_pending_minutes is not None:
        firing |= Q(kind=Kind.BACKLOG, oldest_pending_minutes__lt=math.ceil(conditions.oldest_pending_minutes))
    if conditions.disagreements:
        # The rule furthest from staff decides whether anything fires; the digest lists each rule above.
        worst = max(math.ceil(rule.percent) for rule in conditions.disagreements)
        firing |= Q(kind=Kind.RULE_DISAGREEMENT, disagreement_percent__lt=worst)
    firing |= Q(kind=Kind.AUTOMATION_SKIPS, skips_above__lt=conditions.guard_skips)
    return firing


def firing_conditions(subscription: NotificationSubscription, conditions: NotificationConditions) -> list[dict]:
    """What a digest says for this subscription: one entry per firing condition (none: quiet)."""
    fired = []
    if subscription.kind == Kind.BACKLOG:
        above, minutes = subscription.pending_above, subscription.oldest_pending_minutes
        if above is not None and conditions.pending > above:
            fired.append(
                {
                    "kind": Kind.BACKLOG,
                    "measure": "pending",
                    "value": conditions.pending,
                    "threshold": above,
                    "summary": f"{conditions.pending:,} versions pending (more than {above:,})",
                }
            )
        oldest = conditions.oldest_pending_minutes
        if minutes is not None and oldest is not None and oldest > minutes:
            fired.append(
                {
                    "kind": Kind.BACKLOG,
                    "measure": "oldest_pending_minutes",
                    "value": round(oldest, 1),
                    "threshold": minutes,
                    "summary": f"the oldest pending version has waited {oldest:,.0f} minutes (more than {minutes:,})",
                }
            )
    elif subscription.kind == Kind.RULE_DISAGREEMENT:
        percent = subscription.disagreement_percent
        fired.extend(
            {
                "kind": Kind.RULE_DISAGREEMENT,
                "rule_id": rule.rule_id,
                "rule": rule.name,
                "value": round(rule.percent, 1),
                "threshold": percent,
                "compared": rule.compared,
                "disagreements": rule.disagreements,
                "summary": (
                    f"rule {rule.name!r} (evaluate mode) disagrees with staff on {rule.disagreements} of "
                    f"{rule.compared} versions, {rule.percent:.1f}% (more than {percent}%)"
                ),
            }
            for rule in conditions.disagreements
            if rule.above(percent)
        )
    elif subscription.kind == Kind.AUTOMATION_SKIPS and conditions.guard_skips > subscription.skips_above:
        fired.append(
            {
                "kind": Kind.AUTOMATION_SKIPS,
                "value": conditions.guard_skips,
                "threshold": subscription.skips_above,
                "window_minutes": conditions.skips_window_minutes,
                "summary": (
                    f"the guard skipped the automation {conditions.guard_skips} times in the last "
                    f"{conditions.skips_window_minutes} minutes (more than {subscription.skips_above})"
                ),
            }
        )
    return fired


# --- Sending the digests ---------------------------------------------------------------------------------


def _claim_due(conditions: NotificationConditions, *, limit: int) -> list[NotificationSubscription]:
    """Enabled subscriptions of active staff with an email, due and firing, locked for this run
    (others' locked rows skipped): one query."""
    interval = ExpressionWrapper(F("interval_minutes") * Value(timedelta(minutes=1)), output_field=DurationField())
    due = Q(last_sent_at__isnull=True) | Q(last_sent_at__lte=Value(conditions.measured_at) - interval)
    queryset = (
        NotificationSubscription.objects.filter(due, firing_q(conditions), enabled=True)
        .filter(user__is_active=True, user__is_staff=True)
        .exclude(user__email="")
        .select_related("user")
        .select_for_update(skip_locked=True, of=("self",))
        .order_by(F("last_sent_at").asc(nulls_first=True), "id")
    )
    return list(queryset[:limit])


def _digest_email(user, fired: list[dict], *, mail_connection) -> mail.EmailMessage:
    lines = "\n".join(f"- {condition['summary']}" for condition in fired)
    body = (
        f"Hello {user.get_username()},\n\nThese approvals conditions you subscribed to hold now:\n\n{lines}\n\n"
        "Your subscriptions and past digests: Approvals > Notification subscriptions in the Opsdeck admin.\n"
    )
    return mail.EmailMessage(subject=_subject(fired), body=body, to=[user.email], connection=mail_connection)


def _subject(fired: list[dict]) -> str:
    count = len(fired)
    return f"[Opsdeck] Approvals: {count} {'condition needs' if count == 1 else 'conditions need'} attention"


def _send_each(messages: dict[int, mail.EmailMessage], mail_connection) -> set[int]:
    """Send every user's message over the one `mail_connection`; the ids of the users whose went."""
    sent = set()
    try:
        mail_connection.open()
    except Exception:
        logger.exception("notifications: the mail connection could not be opened; every digest stays due")
        return sent
    try:
        for user_id, message in messages.items():
            try:
                if message.send():
                    sent.add(user_id)
            except Exception:
                logger.exception("notifications: a digest could not be sent; it stays due", extra={"user": user_id})
    finally:
        mail_connection.close()
    return sent


def notifications_send_due(*, now: datetime | None = None) -> dict:
    """Measure the conditions, then send each due subscriber with a firing condition one digest.
    A constant number of queries however many subscribe (three to measure, three to claim and record)."""
    conditions = notification_conditions(now=now)
    now = conditions.measured_at
    with transaction.atomic():
        claimed = _claim_due(conditions, limit=settings.APPROVALS_NOTIFY_MAX_SUBSCRIPTIONS_PER_RUN)
        fired_by_user: dict[int, list[dict]] = defaultdict(list)
        subscriptions_by_user: dict[int, list[int]] = defaultdict(list)
        users = {}
        for subscription in claimed:
            fired = firing_conditions(subscription, conditions)
            if fired:  # the SQL said it fires; the same comparisons in Python say what to write
                fired_by_user[subscription.user_id].extend(fired)
                subscriptions_by_user[subscription.user_id].append(subscription.pk)
                users[subscription.user_id] = subscription.user
        mail_connection = mail.get_connection()
        messages = {
            user_id: _digest_email(users[user_id], fired, mail_connection=mail_connection)
            for user_id, fired in fired_by_user.items()
        }
        sent = _send_each(messages, mail_connection) if messages else set()
        if sent:
            NotificationSubscription.objects.filter(
                pk__in=[pk for user_id in sent for pk in subscriptions_by_user[user_id]]
            ).update(last_sent_at=now)
            NotificationDigest.objects.bulk_create(
                NotificationDigest(
                    user_id=user_id,
                    email=users[user_id].email,
                    subject=messages[user_id].subject,
                    sent_at=now,
                    conditions=fired_by_user[user_id],
                )
                for user_id in sorted(sent)
            )
    return {
        "pending": conditions.pending,
        "guard_skips": conditions.guard_skips,
        "rules_compared": len(conditions.disagreements),
        "claimed": len(claimed),
        "digests_sent": len(sent),
        "digests_failed": len(messages) - len(sent),
    }


# --- Subscriptions ---------------------------------------------------------------------------------------


def subscription_list(*, user=None):
    """Every subscription, or one person's (through one_notification_subscription_per_kind's index)."""
    queryset = NotificationSubscription.objects.all()
    return queryset if user is None else queryset.filter(user=user)


def digest_list(*, user=None):
    """Sent digests, newest first (digest_sent_idx; one person's: digest_user_sent_idx)."""
    queryset = NotificationDigest.objects.select_related("user").order_by("-sent_at", "-id")
    return queryset if user is None else queryset.filter(user=user)


def subscription_validate(*, kind: str, parameters: dict, interval_minutes: int) -> None:
    """Raise SubscriptionInvalid naming the field unless the parameters fit the kind (what the
    table's constraints say, as a 400 rather than an IntegrityError)."""
    if kind not in PARAMETERS_OF_KIND:
        raise SubscriptionInvalid("kind", f"one of: {', '.join(PARAMETERS_OF_KIND)}")
    own = PARAMETERS_OF_KIND[kind]
    for name in PARAMETERS:
        value = parameters.get(name)
        if value is None:
            continue
        if name not in own:
            raise SubscriptionInvalid(name, f"not a parameter of {kind} (its parameters: {', '.join(own)})")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INTEGER_MAX:
            raise SubscriptionInvalid(name, f"a whole number from 0 to {INTEGER_MAX}")
    if all(parameters.get(name) is None for name in own):
        raise SubscriptionInvalid(own[0], f"{kind} needs {' and/or '.join(own)}")
    if (parameters.get("disagreement_percent") or 0) > 99:
        raise SubscriptionInvalid("disagreement_percent", "at most 99 (more than 100% never fires)")
    if parameters.get("oldest_pending_minutes") == 0:
        raise SubscriptionInvalid("oldest_pending_minutes", "at least 1")
    if not 1 <= interval_minutes <= INTERVAL_MINUTES_MAX:
        raise SubscriptionInvalid("interval_minutes", f"from 1 to {INTERVAL_MINUTES_MAX} (a week)")


def _save(subscription: NotificationSubscription) -> NotificationSubscription:
    subscription_validate(
        kind=subscription.kind,
        parameters={name: getattr(subscription, name) for name in PARAMETERS},
        interval_minutes=subscription.interval_minutes,
    )
    try:
        with transaction.atomic():
            subscription.save()
    except IntegrityError:
        # one_notification_subscription_per_kind: another request created it first.
        raise SubscriptionInvalid("kind", f"you already subscribe to {subscription.kind}; change that one") from None
    return subscription


@transaction.atomic
def subscription_create(
    *, user, kind: str, interval_minutes: int = 60, enabled: bool = True, **parameters
) -> NotificationSubscription:
    if NotificationSubscription.objects.filter(user=user, kind=kind).exists():
        raise SubscriptionInvalid("kind", f"you already subscribe to {kind}; change that one")
    unknown = set(parameters) - set(PARAMETERS)
    if unknown:
        raise SubscriptionInvalid(sorted(unknown)[0], "not a subscription parameter")
    return _save(
        NotificationSubscription(user=user, kind=kind, interval_minutes=interval_minutes, enabled=enabled, **parameters)
    )


@transaction.atomic
def subscription_update(*, subscription: NotificationSubscription, data: dict) -> NotificationSubscription:
    """Change the parameters, interval or enabled flag. The kind stays: a subscription to another
    condition is another subscription."""
    if "kind" in data and data["kind"] != subscription.kind:
        raise SubscriptionInvalid("kind", "cannot change; delete this subscription and create one of the other kind")
    for name in (*PARAMETERS, "interval_minutes", "enabled"):
        if name in data:
            setattr(subscription, name, data[name])
    return _save(subscription)


@transaction.atomic
def subscription_delete(*, subscription: NotificationSubscription) -> None:
    subscription.delete()
