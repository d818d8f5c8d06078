"""Platform Celery jobs."""

from dataclasses import asdict

from project.jobrunner import scheduled_job
from project.partitions import maintain_all_partitions


@scheduled_job("project.maintain_partitions")
def maintain_partitions() -> dict:
    return {"tables": [asdict(report) for report in maintain_all_partitions()]}
