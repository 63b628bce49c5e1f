"""Background jobs: one correction at a time in a thread, with progress and a result."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xgir.errors import XgirError


@dataclass
class Job:
    """A running or finished job; ``status``: running, done or failed."""

    id: int
    params: dict[str, Any]
    status: str = "running"
    stage: str = "starting"
    progress: float = 0.0
    error: str = ""
    result: dict[str, Any] | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def report(self, progress: float, stage: str) -> None:
        self.progress, self.stage = float(progress), stage

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "stage": self.stage, "progress": round(self.progress, 3),
                "error": self.error, "seconds": round((self.finished or time.time()) - self.started, 1)}


class JobManager:
    """Starts jobs in daemon threads; refuses a second while one runs."""

    def __init__(self) -> None:
        self.jobs: dict[int, Job] = {}
        self._lock = threading.Lock()

    def running(self) -> Job | None:
        return next((j for j in self.jobs.values() if j.status == "running"), None)

    def start(self, params: dict[str, Any], work: Callable[[Job], dict[str, Any]]) -> Job:
        with self._lock:
            if self.running() is not None:
                raise RuntimeError("a correction is already running; wait for it to finish")
            job = Job(len(self.jobs) + 1, params)
            self.jobs[job.id] = job
        threading.Thread(target=self._run, args=(job, work), daemon=True, name=f"xgir-job-{job.id}").start()
        return job

    @staticmethod
    def _run(job: Job, work: Callable[[Job], dict[str, Any]]) -> None:
        try:
            job.result = work(job)
            job.report(1.0, "done")
            job.status = "done"
        except XgirError as err:
            job.error, job.status = str(err), "failed"
        except Exception as err:  # noqa: BLE001 - shown as one line; the traceback goes to the server log
            traceback.print_exc()
            job.error, job.status = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", "failed"
        finally:
            job.finished = time.time()

    def get(self, job_id: int) -> Job:
        if job_id not in self.jobs:
            raise LookupError(f"unknown job {job_id}")
        return self.jobs[job_id]
