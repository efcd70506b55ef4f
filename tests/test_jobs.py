"""The job model every long-running piece of work shares: states, stop, failures, one job at a time."""

import threading

import pytest

from lora_studio.errors import DataError, JobError
from lora_studio.events import Failed, Finished
from lora_studio.i18n import msg
from lora_studio.jobs import Job, JobSlot


class Counting(Job):
    """Counts until stopped (or until `limit`); fails on demand."""

    def __init__(self, limit=None, error=None):
        super().__init__()
        self.limit, self.error_to_raise, self.count = limit, error, 0
        self.started = threading.Event()

    def work(self):
        self.started.set()
        while not self.stop_requested:
            if self.error_to_raise is not None:
                raise self.error_to_raise
            self.count += 1
            if self.limit is not None and self.count >= self.limit:
                return "completed"
            self._stop.wait(0.001)
        return "stopped"


def test_a_job_runs_to_completion_and_says_so():
    job = Counting(limit=5).start()
    assert job.join(10) and job.state == "completed" and not job.is_active
    assert isinstance(job.events.last(), Finished) and job.events.last().status == "completed"


def test_stop_ends_the_work_at_its_next_safe_point():
    job = Counting().start()
    assert job.started.wait(10)
    job.stop()
    assert job.state in ("stopping", "stopped")
    assert job.join(10) and job.state == "stopped" and job.count > 0


def test_a_users_mistake_fails_the_job_with_its_message():
    job = Counting(error=DataError(msg("config.file_not_found"), "x.json")).start()
    job.join(10)
    assert job.state == "failed"
    assert job.events.last(Failed).message == "x.json: config file not found."


def test_a_bug_of_ours_is_an_internal_error_not_a_users_mistake():
    job = Counting(error=TypeError("boom")).start()
    job.join(10)
    assert job.state == "failed" and isinstance(job.error, TypeError)
    assert job.events.last(Failed).message.startswith("Internal error: TypeError: boom.")


def test_a_job_starts_once():
    job = Counting(limit=1).start()
    job.join(10)
    with pytest.raises(JobError, match="already been started"):
        job.start()


def test_the_slot_refuses_a_second_job_while_one_is_active():
    slot = JobSlot()
    first = slot.launch(Counting)
    assert first.started.wait(10)
    with pytest.raises(JobError, match="already in progress"):
        slot.launch(Counting)
    first.stop()
    first.join(10)
    second = slot.launch(lambda: Counting(limit=1))
    assert second.join(10) and slot.job is second
