"""Writes to tasks and projects. Side effects are queued on commit, never run in the request."""

from collections.abc import Iterable
from functools import partial

from django.core.cache import cache
from django.db import transaction
from django.db.models import Case, F, Value, When
from django.db.models.functions import Now
from django.utils import timezone

from project.activity import activity_record, activity_record_bulk
from tasks import webhooks
from tasks.exceptions import TasksNotFound
from tasks.models import Project, Task
from tasks.selectors import task_stats_cache_key

_record = partial(activity_record, category="tasks")
TASK_FIELDS_EDITABLE = ("project", "title", "description", "assignee", "status", "priority", "deadline", "tags")


def _invalidate_stats_on_commit(assignee_ids: Iterable[int | None]) -> None:
    keys = [task_stats_cache_key(assignee_id) for assignee_id in set(assignee_ids) if assignee_id is not None]
    if keys:
        # robust: the write has committed; a failed delete leaves stats stale for their TTL at worst.
        transaction.on_commit(lambda: cache.delete_many(keys), robust=True)


def _notify_on_commit(task_ids: list[int], event: str) -> None:
    """One webhook delivery per receiver, in the write's transaction; sent after commit (tasks/webhooks.py)."""
    webhooks.queue_task_notifications(task_ids=task_ids, event=event)


@transaction.atomic
def task_webhook_redeliver(*, delivery_ids: list[int], actor, request=None) -> int:
    """Send task webhook deliveries again now, whatever their state (the admin action); one audit row."""
    ids = webhooks.sender.redeliver(delivery_ids)
    if ids:
        activity_record_bulk(
            category="tasks",
            action="webhook_redeliver",
            user=actor,
            entity_type="tasks.webhook_delivery",
            entity_ids=ids,
            request=request,
        )
    return len(ids)


@transaction.atomic
def project_create(*, name: str, owner, actor=None, request=None) -> Project:
    project = Project.objects.create(name=name, owner=owner)
    _record(action="project.create", user=actor, entity_type="project", entity_id=project.pk, request=request)
    return project


@transaction.atomic
def project_update(*, project: Project, data: dict, actor=None, request=None) -> Project:
    for field, value in data.items():
        setattr(project, field, value)
    project.save(update_fields=list(data))
    _record(
        action="project.update",
        user=actor,
        entity_type="project",
        entity_id=project.pk,
        request=request,
        metadata={"fields": sorted(data)},
    )
    return project


def project_delete(*, project: Project, actor=None, request=None) -> None:
    project_bulk_delete(project_ids=[project.pk], actor=actor, request=request)


@transaction.atomic
def project_bulk_delete(*, project_ids: list[int], actor=None, request=None) -> int:
    """Delete projects (and, by cascade, their tasks) in one statement, recording each."""
    ids = sorted(set(project_ids))
    assignee_ids = list(Task.objects.filter(project_id__in=ids).values_list("assignee_id", flat=True).distinct())
    Project.objects.filter(pk__in=ids).delete()
    _invalidate_stats_on_commit(assignee_ids)
    activity_record_bulk(
        category="tasks", action="project.delete", user=actor, entity_type="project", entity_ids=ids, request=request
    )
    return len(ids)


@transaction.atomic
def task_create(*, actor=None, request=None, **data) -> Task:
    task = Task(**data)
    if task.status == Task.Status.DONE:
        task.completed_at = timezone.now()
    task.save()
    _invalidate_stats_on_commit([task.assignee_id])
    _notify_on_commit([task.pk], "task.created")
    _record(action="task.create", user=actor, entity_type="task", entity_id=task.pk, request=request)
    return task


@transaction.atomic
def task_update(*, task: Task, data: dict, actor=None, request=None) -> Task:
    unknown = set(data) - set(TASK_FIELDS_EDITABLE)
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    previous_assignee_id, previous_status = task.assignee_id, task.status
    for field, value in data.items():
        setattr(task, field, value)
    if task.status != previous_status:
        # completed_at is set when a task becomes done and cleared if it is reopened.
        task.completed_at = timezone.now() if task.status == Task.Status.DONE else None
    task.save()
    _invalidate_stats_on_commit([previous_assignee_id, task.assignee_id])
    _notify_on_commit([task.pk], "task.updated")
    _record(
        action="task.update",
        user=actor,
        entity_type="task",
        entity_id=task.pk,
        request=request,
        metadata={"fields": sorted(data)},
    )
    return task


def task_delete(*, task: Task, actor=None, request=None) -> None:
    task_bulk_delete(task_ids=[task.pk], actor=actor, request=request)


@transaction.atomic
def task_bulk_delete(*, task_ids: list[int], actor=None, request=None) -> int:
    """Delete many tasks with one DELETE statement, recording each in ActivityLog."""
    ids = sorted(set(task_ids))
    assignee_ids = list(Task.objects.filter(pk__in=ids).values_list("assignee_id", flat=True).distinct())
    deleted, _ = Task.objects.filter(pk__in=ids).delete()
    _invalidate_stats_on_commit(assignee_ids)
    activity_record_bulk(
        category="tasks", action="task.delete", user=actor, entity_type="task", entity_ids=ids, request=request
    )
    return deleted


@transaction.atomic
def task_bulk_update(*, task_ids: list[int], changes: dict, actor=None, request=None) -> int:
    """Change status and/or assignee of many tasks: all or nothing, one UPDATE statement.

    Rows are locked first (in id order, so two bulk updates cannot deadlock); if any id does not
    exist nothing is changed and TasksNotFound names the missing ids.
    """
    ids = sorted(set(task_ids))
    locked = dict(Task.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk", "assignee_id"))
    missing = [task_id for task_id in ids if task_id not in locked]
    if missing:
        raise TasksNotFound(missing)
    update = {"updated_at": Now()}
    if "assignee" in changes:
        update["assignee"] = changes["assignee"]
    if "status" in changes:
        status = changes["status"]
        update["status"] = status
        update["completed_at"] = (
            Case(When(completed_at__isnull=False, status=status, then=F("completed_at")), default=Now())
            if status == Task.Status.DONE
            else Value(None)
        )
    updated = Task.objects.filter(pk__in=ids).update(**update)
    new_assignee = changes.get("assignee")
    _invalidate_stats_on_commit([*locked.values(), getattr(new_assignee, "pk", new_assignee)])
    _notify_on_commit(ids, "task.updated")
    activity_record_bulk(
        category="tasks",
        action="task.bulk_update",
        user=actor,
        entity_type="task",
        entity_ids=ids,
        metadata={"changes": {key: getattr(value, "pk", value) for key, value in changes.items()}},
        request=request,
    )
    return updated
