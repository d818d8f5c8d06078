from project.errors import DomainError


class TaskError(DomainError):
    """Base of the tasks app's domain errors; each declares its HTTP answer (project/errors.py)."""


class TasksNotFound(TaskError):
    http_code = "not_found"
    http_field = "ids"

    def __init__(self, missing_ids: list[int]):
        self.missing_ids = missing_ids
        super().__init__(f"{len(missing_ids)} task(s) do not exist: {missing_ids[:20]}")

    def http_message(self) -> str:
        return f"These tasks do not exist; nothing was changed: {self.missing_ids}"


class InvalidAssignee(TaskError):
    http_field = "assignee"
