class TaskError(Exception):
    """Base of the tasks app's domain errors; the API turns them into 4xx."""


class TasksNotFound(TaskError):
    def __init__(self, missing_ids: list[int]):
        self.missing_ids = missing_ids
        super().__init__(f"{len(missing_ids)} task(s) do not exist: {missing_ids[:20]}")


class InvalidAssignee(TaskError):
    pass
