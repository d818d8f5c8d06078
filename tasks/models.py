from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models

from project.models import WebhookDeliveryBase


class Project(models.Model):
    name = models.CharField(max_length=200, unique=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_projects")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # Cursor pagination of the project list: ORDER BY created_at DESC, id DESC.
            models.Index(fields=["created_at", "id"], name="project_created_id_idx"),
        ]

    def __str__(self) -> str:
        return self.name


class Task(models.Model):
    class Status(models.TextChoices):
        TODO = "todo"
        IN_PROGRESS = "in_progress"
        BLOCKED = "blocked"
        REVIEW = "review"
        DONE = "done"
        CANCELLED = "cancelled"

    class Priority(models.TextChoices):
        LOW = "low"
        MEDIUM = "medium"
        HIGH = "high"
        URGENT = "urgent"

    # A task is open until it is done or cancelled: overdue and deadline views look only at these.
    OPEN_STATUSES = (Status.TODO, Status.IN_PROGRESS, Status.BLOCKED, Status.REVIEW)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    title = models.CharField(max_length=300)
    description = models.TextField(blank=True)
    # No index of its own: (assignee, status) below serves every assignee lookup as its prefix.
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tasks",
        db_index=False,
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.TODO)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.MEDIUM)
    deadline = models.DateTimeField(null=True, blank=True)
    tags = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # Kept by PostgreSQL itself, so no write path can forget it; `search=` ranks against it.
    search_vector = models.GeneratedField(
        expression=SearchVector("title", "description", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        indexes = [
            # Cursor pagination (ORDER BY created_at DESC, id DESC) and created_at ranges; it also
            # serves every query the guide's plain created_at index would, so there is no other.
            models.Index(fields=["created_at", "id"], name="task_created_id_idx"),
            models.Index(fields=["deadline"], name="task_deadline_idx"),
            models.Index(fields=["priority"], name="task_priority_idx"),
            # "my open tasks", per-assignee stats and the assignee foreign key itself.
            models.Index(fields=["assignee", "status"], name="task_assignee_status_idx"),
            # Triage boards (status + priority), and every status-only filter as its prefix: a
            # separate (status) index would be the duplicate PgHero-style checks flag.
            models.Index(fields=["status", "priority"], name="task_status_priority_idx"),
            # Overdue and upcoming-deadline queries only ever look at open tasks.
            models.Index(
                fields=["deadline"],
                name="task_open_deadline_idx",
                condition=models.Q(status__in=["todo", "in_progress", "blocked", "review"]),
            ),
            # tag=... filters: tags @> '["x"]'.
            GinIndex(fields=["tags"], name="task_tags_gin", opclasses=["jsonb_path_ops"]),
            GinIndex(fields=["search_vector"], name="task_search_gin"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES


class TaskWebhookDelivery(WebhookDeliveryBase):
    """A task event for one receiver of TASK_NOTIFY_WEBHOOK_URLS, delivered by project.webhooks."""

    url = models.CharField(max_length=500)

    class Meta:
        indexes = [
            # send_due's scan: deliveries due for another attempt; delivered and dead ones never enter it.
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status__in=["pending", "failed"]),
                name="task_webhook_due_idx",
            ),
        ]
