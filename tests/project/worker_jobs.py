"""A job for tests/project/test_worker_lost.py, imported by the real worker it starts (-I)."""

import os
import time
from pathlib import Path

from project.jobrunner import scheduled_job


@scheduled_job("tests.crash_once", soft_time_limit_s=50, time_limit_s=60)
def crash_once(marker: str) -> dict:
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        time.sleep(55)  # the test SIGKILLs this process long before
    return {"pid": os.getpid()}
