"""The job table: keys, the status state machine, conditional writes, stages and
checkpoints, progress, results, tenant-scoped listings with cursors, and the TTL."""

from __future__ import annotations

import datetime as dt
import threading
from typing import TYPE_CHECKING, Any

import pytest

from vaultq import errors
from vaultq.jobs import Checkpoint, Job, JobKey, JobStatus, JobStore
from vaultq.queues import OutgoingMessage

from .jobs_fixtures import (  # noqa: F401 (fixtures register by name)
    dynamodb_client_fixture,
    dynamodb_open_jobs_fixture,
    dynamodb_table_fixture,
    job_in,
    jobs_fixture,
    new_key,
    open_jobs_fixture,
    sqlite_open_jobs_fixture,
)

if TYPE_CHECKING:
    from vaultq.queues import QueueBackend

    from .conftest import Clock
    from .jobs_fixtures import OpenJobs

Q, P = JobStatus.QUEUED, JobStatus.PROCESSING
S, F, D, C = (
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.DEAD_LETTERED,
    JobStatus.CANCELLED,
)
# The state machine as the seed system needs it, written out independently of the code.
# (D, Q): a redriven dead letter gives its job back to the queue.
ALLOWED = {(Q, P), (Q, C), (Q, F), (Q, D), (P, Q), (P, S), (P, F), (P, D), (D, Q)}
EVERY_PAIR = [(a, b) for a in JobStatus for b in JobStatus]
DAY_MS = 24 * 60 * 60 * 1000
KB = 1024


class Pinned:
    """A clock that stands still unless the test moves it: for ties and exact days."""

    def __init__(self, when: dt.datetime) -> None:
        self.seconds = when.timestamp()

    def __call__(self) -> float:
        return self.seconds


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


# -- keys --------------------------------------------------------------------------------


def test_created_job_is_queued_with_empty_progress_and_a_30_day_ttl(
    jobs: JobStore, clock: Clock
) -> None:
    before_ms = int(clock() * 1000)
    key = new_key()

    job = jobs.create(key, input_files=["uploads/a.dwg"], attributes={"estimated_time_seconds": 90})

    assert job == jobs.get(key)
    assert job.status is JobStatus.QUEUED
    assert before_ms <= job.created_at_ms == job.updated_at_ms <= int(clock() * 1000)
    assert job.expires_at_ms == job.created_at_ms + 30 * DAY_MS
    assert (job.stages_completed, job.current_stage, job.progress) == ((), None, 0.0)
    assert (job.checkpoints, job.result, job.error, job.output_files) == ({}, None, None, ())
    assert job.input_files == ("uploads/a.dwg",)
    assert job.attributes == {"estimated_time_seconds": 90}


def test_creating_an_existing_key_fails_and_keeps_the_original(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)

    with pytest.raises(errors.JobAlreadyExists):
        jobs.create(key)

    job = jobs.get(key)
    assert job is not None
    assert job.status is JobStatus.PROCESSING


def test_get_of_an_unknown_job_returns_none(jobs: JobStore) -> None:
    assert jobs.get(new_key()) is None


@pytest.mark.parametrize(
    "change",
    [
        lambda jobs, key: jobs.transition(key, to=JobStatus.PROCESSING),
        lambda jobs, key: jobs.complete_stage(key, "ocr"),
        lambda jobs, key: jobs.save_progress(key, 0.5),
        lambda jobs, key: jobs.set_result(key, {}),
        lambda jobs, key: jobs.fail(key, "boom"),
        lambda jobs, key: jobs.last_checkpoint(key),
    ],
    ids=["transition", "complete_stage", "save_progress", "set_result", "fail", "checkpoint"],
)
def test_writing_to_an_unknown_job_raises_job_not_found(jobs: JobStore, change: Any) -> None:
    with pytest.raises(errors.JobNotFound):
        change(jobs, new_key())


def test_job_key_prints_as_tenant_client_job_and_parses_back() -> None:
    key = JobKey(tenant_id="acme", client_id="web-1", job_id="j:2026.01_a")

    assert str(key) == "acme#web-1#j:2026.01_a"
    assert JobKey.parse(str(key)) == key


@pytest.mark.parametrize("part", ["", "a#b", "x" * 129, "a b", "é", "a/b", "a\n", 7], ids=repr)
@pytest.mark.parametrize("field", ["tenant_id", "client_id", "job_id"])
def test_key_part_outside_1_to_128_safe_characters_is_refused(field: str, part: Any) -> None:
    parts: dict[str, Any] = {"tenant_id": "t", "client_id": "c", "job_id": "j", field: part}

    with pytest.raises(errors.InvalidParameterValue):
        JobKey(**parts)


@pytest.mark.parametrize("text", ["a#b", "a#b#c#d", "", "a##c", None], ids=repr)
def test_malformed_key_string_is_refused(text: Any) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        JobKey.parse(text)


def test_a_key_given_as_a_string_is_refused(jobs: JobStore) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        jobs.get("tenant-a#client-1#job")  # type: ignore[arg-type]


# -- the state machine -------------------------------------------------------------------


@pytest.mark.parametrize(("start", "to"), sorted(ALLOWED), ids=str)
def test_allowed_transition_moves_the_job(jobs: JobStore, start: JobStatus, to: JobStatus) -> None:
    key = job_in(jobs, start)

    job = jobs.transition(key, to=to)

    assert job.status is to
    assert jobs.get(key) == job


@pytest.mark.parametrize(
    ("start", "to"), [pair for pair in EVERY_PAIR if pair not in ALLOWED], ids=str
)
def test_transition_outside_the_state_machine_is_refused(
    jobs: JobStore, start: JobStatus, to: JobStatus
) -> None:
    key = job_in(jobs, start)
    before = jobs.get(key)

    with pytest.raises(errors.InvalidJobTransition):
        jobs.transition(key, to=to)

    assert jobs.get(key) == before


def test_succeeded_failed_dead_lettered_and_cancelled_are_the_terminal_states() -> None:
    terminal = {status for status in JobStatus if status.is_terminal}

    assert terminal == {S, F, D, C}


def test_entering_processing_counts_an_attempt(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)
    jobs.transition(key, to=JobStatus.QUEUED)

    job = jobs.transition(key, to=JobStatus.PROCESSING)

    assert job.attempts == 2


def test_retry_back_to_queued_keeps_stages_and_checkpoints(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)
    jobs.complete_stage(key, "parse", checkpoint={"pages": 3}, progress=0.4)

    job = jobs.transition(key, to=JobStatus.QUEUED, expected=JobStatus.PROCESSING)

    assert job.status is JobStatus.QUEUED
    assert job.stages_completed == ("parse",)
    assert job.progress == 0.4
    assert jobs.last_checkpoint(key) == Checkpoint(stage="parse", data={"pages": 3})


def test_every_write_bumps_version_and_updated_at(jobs: JobStore, clock: Clock) -> None:
    key = new_key()
    created = jobs.create(key)
    clock.advance(2)

    moved = jobs.transition(key, to=JobStatus.PROCESSING)

    assert moved.version == created.version + 1
    assert moved.updated_at_ms >= created.updated_at_ms + 2000
    assert moved.created_at_ms == created.created_at_ms


# -- conditional writes ------------------------------------------------------------------


def test_conditional_transition_succeeds_when_the_status_matches(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.QUEUED)

    job = jobs.transition(key, to=JobStatus.PROCESSING, expected=JobStatus.QUEUED)

    assert job.status is JobStatus.PROCESSING


def test_conditional_transition_fails_when_another_writer_moved_the_job_first(
    jobs: JobStore,
) -> None:
    key = job_in(jobs, JobStatus.QUEUED)
    jobs.transition(key, to=JobStatus.CANCELLED)

    with pytest.raises(errors.ConditionalCheckFailed):
        jobs.transition(key, to=JobStatus.PROCESSING, expected=JobStatus.QUEUED)

    job = jobs.get(key)
    assert job is not None
    assert job.status is JobStatus.CANCELLED


def test_an_expectation_that_cannot_lead_to_the_target_is_refused_up_front(
    jobs: JobStore,
) -> None:
    with pytest.raises(errors.InvalidJobTransition):
        jobs.transition(new_key(), to=JobStatus.PROCESSING, expected=JobStatus.SUCCEEDED)


def test_two_threads_racing_a_conditional_transition_exactly_one_wins(
    open_jobs: OpenJobs,
) -> None:
    # Each thread has its own store, as two worker processes would.
    stores = [open_jobs(), open_jobs()]
    keys = [job_in(stores[0], JobStatus.QUEUED) for _ in range(20)]
    outcomes: list[list[str]] = [[], []]

    def claim(worker: int, barrier: threading.Barrier, key: JobKey) -> None:
        barrier.wait()
        try:
            stores[worker].transition(key, to=JobStatus.PROCESSING, expected=JobStatus.QUEUED)
        except errors.ConditionalCheckFailed:
            outcomes[worker].append("lost")
        else:
            outcomes[worker].append("won")

    for key in keys:
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=claim, args=(w, barrier, key)) for w in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    results = [sorted(pair) for pair in zip(*outcomes, strict=True)]
    assert results == [["lost", "won"]] * len(keys)
    assert all(stores[1].get(key).attempts == 1 for key in keys)  # type: ignore[union-attr]


# -- stages, checkpoints, progress -------------------------------------------------------


def test_stages_are_recorded_in_the_order_they_complete(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)

    for stage in ("parse", "render", "vectorise"):
        jobs.complete_stage(key, stage)

    job = jobs.get(key)
    assert job is not None
    assert job.stages_completed == ("parse", "render", "vectorise")


def test_last_checkpoint_is_the_most_recently_saved(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)
    jobs.complete_stage(key, "parse", checkpoint={"pages": 3})
    jobs.complete_stage(key, "render", checkpoint={"png": "out/1.png"})

    assert jobs.last_checkpoint(key) == Checkpoint(stage="render", data={"png": "out/1.png"})


def test_last_checkpoint_is_none_before_any_was_saved(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)
    jobs.complete_stage(key, "parse")

    assert jobs.last_checkpoint(key) is None


def test_progress_checkpoint_is_saved_under_the_current_stage(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)
    jobs.complete_stage(key, "parse", checkpoint={"pages": 3})

    job = jobs.save_progress(key, 0.6, stage="render", checkpoint={"page": 2})

    assert (job.current_stage, job.progress) == ("render", 0.6)
    assert job.stages_completed == ("parse",)
    assert job.last_checkpoint == Checkpoint(stage="render", data={"page": 2})
    assert dict(job.checkpoints) == {"parse": {"pages": 3}, "render": {"page": 2}}


def test_completing_a_stage_clears_the_current_stage(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)
    jobs.save_progress(key, 0.2, stage="parse")

    job = jobs.complete_stage(key, "parse", progress=0.5)

    assert (job.current_stage, job.progress) == (None, 0.5)


def test_completing_a_stage_again_replaces_its_checkpoint_without_a_second_entry(
    jobs: JobStore,
) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)
    jobs.complete_stage(key, "parse", checkpoint={"try": 1})
    jobs.complete_stage(key, "render", checkpoint={"png": 1})

    job = jobs.complete_stage(key, "parse", checkpoint={"try": 2})

    assert job.stages_completed == ("parse", "render")
    assert job.last_checkpoint == Checkpoint(stage="parse", data={"try": 2})


def test_a_checkpoint_without_any_stage_is_refused(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)

    with pytest.raises(errors.MissingParameter):
        jobs.save_progress(key, 0.1, checkpoint={"offset": 10})


def test_a_reopened_store_resumes_from_everything_saved(open_jobs: OpenJobs) -> None:
    first = open_jobs()
    key = job_in(first, JobStatus.PROCESSING)
    first.complete_stage(key, "parse", checkpoint={"pages": 3}, progress=0.3)
    saved = first.save_progress(key, 0.55, stage="render", checkpoint={"page": 2})
    first.close()

    reopened = open_jobs()

    assert reopened.get(key) == saved
    assert reopened.last_checkpoint(key) == Checkpoint(stage="render", data={"page": 2})


@pytest.mark.parametrize("progress", [0, 0.5, 1, 1.0])
def test_progress_from_zero_to_one_is_accepted(jobs: JobStore, progress: float) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)

    assert jobs.save_progress(key, progress).progress == progress


@pytest.mark.parametrize(
    "progress", [-0.01, 1.01, float("nan"), float("inf"), True, "0.5"], ids=repr
)
def test_progress_outside_zero_to_one_is_refused(jobs: JobStore, progress: Any) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)

    with pytest.raises(errors.InvalidParameterValue):
        jobs.save_progress(key, progress)
    with pytest.raises(errors.InvalidParameterValue):
        jobs.complete_stage(key, "parse", progress=progress)


@pytest.mark.parametrize("status", [Q, S, F, D, C])
def test_progress_and_stages_need_a_processing_job(jobs: JobStore, status: JobStatus) -> None:
    key = job_in(jobs, status)

    with pytest.raises(errors.ConditionalCheckFailed):
        jobs.save_progress(key, 0.5)
    with pytest.raises(errors.ConditionalCheckFailed):
        jobs.complete_stage(key, "parse")


@pytest.mark.parametrize("stage", ["", "a#b", "x" * 129, "two words"], ids=repr)
def test_stage_names_follow_the_key_rules(jobs: JobStore, stage: str) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)

    with pytest.raises(errors.InvalidParameterValue):
        jobs.complete_stage(key, stage)


# -- results and failures ----------------------------------------------------------------


def test_set_result_succeeds_the_job_with_its_output_files(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)
    jobs.save_progress(key, 0.9, stage="render")

    job = jobs.set_result(key, {"pages": 3}, output_files=["out/a.pdf", "out/b.png"])

    assert job.status is JobStatus.SUCCEEDED
    assert (job.result, job.output_files) == ({"pages": 3}, ("out/a.pdf", "out/b.png"))
    assert (job.progress, job.current_stage) == (1.0, None)
    assert jobs.get(key) == job


def test_set_result_on_a_job_no_worker_took_is_refused(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.QUEUED)

    with pytest.raises(errors.InvalidJobTransition):
        jobs.set_result(key, {"pages": 3})


def test_fail_records_the_error_and_keeps_the_stage_it_failed_in(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)
    jobs.save_progress(key, 0.3, stage="render")

    job = jobs.fail(key, "RenderError: page 2 is empty")

    assert (job.status, job.error) == (JobStatus.FAILED, "RenderError: page 2 is empty")
    assert job.current_stage == "render"


def test_fail_can_dead_letter_a_queued_job(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.QUEUED)

    job = jobs.fail(key, "maxReceiveCount exceeded", to=JobStatus.DEAD_LETTERED)

    assert job.status is JobStatus.DEAD_LETTERED


def test_fail_into_a_status_that_is_no_failure_is_refused(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)

    with pytest.raises(errors.InvalidParameterValue):
        jobs.fail(key, "boom", to=JobStatus.SUCCEEDED)


@pytest.mark.parametrize("error", ["", "x" * (8 * KB + 1), None], ids=["empty", "long", "none"])
def test_fail_needs_an_error_text_of_at_most_8_kb(jobs: JobStore, error: Any) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)

    with pytest.raises(errors.InvalidParameterValue):
        jobs.fail(key, error)


def test_a_finished_job_refuses_a_second_outcome(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)
    jobs.set_result(key, {"ok": True})

    with pytest.raises(errors.InvalidJobTransition):
        jobs.fail(key, "late failure")


# -- payloads ----------------------------------------------------------------------------


def nested_lists(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


NOT_JSON = {
    "set": {"a": {1, 2}},
    "bytes": {"a": b"x"},
    "tuple": {"a": (1, 2)},
    "int key": {1: "x"},
    "nan": {"a": float("nan")},
    "infinity": {"a": float("-inf")},
    "object": {"a": object()},
    "lone surrogate": {"a": "\ud800"},
    "not an object": ["a"],
    "33 levels": {"a": nested_lists(32)},
}


@pytest.mark.parametrize("payload", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_result_that_json_cannot_hold_exactly_is_refused(jobs: JobStore, payload: Any) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)

    with pytest.raises(errors.InvalidParameterValue):
        jobs.set_result(key, payload)

    job = jobs.get(key)
    assert job is not None
    assert job.status is JobStatus.PROCESSING


@pytest.mark.parametrize("payload", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_checkpoint_and_attributes_that_are_not_json_are_refused(
    jobs: JobStore, payload: Any
) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)

    with pytest.raises(errors.InvalidParameterValue):
        jobs.complete_stage(key, "parse", checkpoint=payload)
    with pytest.raises(errors.InvalidParameterValue):
        jobs.create(new_key(), attributes=payload)


def test_json_nested_32_levels_deep_is_accepted(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)
    deep = nested_lists(31)

    job = jobs.set_result(key, {"a": deep})

    assert job.result == {"a": deep}


def test_stored_payloads_are_copies_of_the_callers_objects(jobs: JobStore) -> None:
    attributes: dict[str, Any] = {"estimated_time_seconds": 90}
    key = new_key()
    jobs.create(key, attributes=attributes)

    attributes["estimated_time_seconds"] = 1

    job = jobs.get(key)
    assert job is not None
    assert job.attributes == {"estimated_time_seconds": 90}


def test_result_over_400_kb_is_refused_as_too_large(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)

    with pytest.raises(errors.JobTooLarge):
        jobs.set_result(key, {"blob": "x" * 400 * KB})


def test_checkpoints_that_would_push_the_job_over_400_kb_are_refused(jobs: JobStore) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)
    jobs.complete_stage(key, "one", checkpoint={"data": "x" * 150 * KB})
    jobs.complete_stage(key, "two", checkpoint={"data": "x" * 150 * KB})

    with pytest.raises(errors.JobTooLarge):
        jobs.complete_stage(key, "three", checkpoint={"data": "x" * 150 * KB})

    job = jobs.get(key)
    assert job is not None
    assert job.stages_completed == ("one", "two")


@pytest.mark.parametrize(
    "object_key",
    ["", "../etc/passwd", "a/../b", "/abs/path", "a/./b", "a//b", "a\\b", "a\x00b", "k" * 1025],
    ids=repr,
)
def test_file_keys_with_path_traversal_or_control_characters_are_refused(
    jobs: JobStore, object_key: str
) -> None:
    key = job_in(jobs, JobStatus.PROCESSING)

    with pytest.raises(errors.InvalidParameterValue):
        jobs.create(new_key(), input_files=[object_key])
    with pytest.raises(errors.InvalidParameterValue):
        jobs.set_result(key, {}, output_files=[object_key])


# -- listings ----------------------------------------------------------------------------


def test_pages_return_every_job_exactly_once_newest_first(open_jobs: OpenJobs) -> None:
    # A clock that stands still gives many jobs the same created_at_ms: ties must not
    # lose or repeat a job at a page boundary.
    pinned = Pinned(utc("2026-03-01T12:00:00"))
    jobs = open_jobs(clock=pinned)
    created = []
    for index in range(23):
        created.append(jobs.create(new_key()))
        if index % 5 == 4:
            pinned.seconds += 1

    seen: list[Job] = []
    cursor = None
    while True:
        page = jobs.list_by_status("tenant-a", JobStatus.QUEUED, limit=4, cursor=cursor)
        seen.extend(page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            break

    assert len(seen) == 23
    assert {job.key for job in seen} == {job.key for job in created}
    assert [job.created_at_ms for job in seen] == sorted(
        (job.created_at_ms for job in created), reverse=True
    )


def test_a_listing_that_fits_one_page_has_no_cursor(jobs: JobStore) -> None:
    for _ in range(3):
        jobs.create(new_key())

    page = jobs.list_by_status("tenant-a", JobStatus.QUEUED, limit=3)

    assert (len(page.jobs), page.next_cursor) == (3, None)


def test_cursor_keeps_working_after_the_store_is_reopened(open_jobs: OpenJobs) -> None:
    first = open_jobs()
    for _ in range(3):
        first.create(new_key())
    page = first.list_by_client("tenant-a", "client-1", limit=2)

    rest = open_jobs().list_by_client("tenant-a", "client-1", limit=2, cursor=page.next_cursor)

    assert len(rest.jobs) == 1
    assert rest.jobs[0].key not in {job.key for job in page.jobs}


def test_list_by_status_keeps_to_the_status_and_the_date_range(
    jobs: JobStore, clock: Clock
) -> None:
    early = jobs.create(new_key())
    clock.advance(10)
    middle = jobs.create(new_key())
    processing = job_in(jobs, JobStatus.PROCESSING)
    clock.advance(10)
    jobs.create(new_key())

    page = jobs.list_by_status(
        "tenant-a",
        JobStatus.QUEUED,
        since_ms=early.created_at_ms + 1,
        until_ms=middle.created_at_ms + 5000,
    )

    assert [job.key for job in page.jobs] == [middle.key]
    assert [job.key for job in jobs.list_by_status("tenant-a", P).jobs] == [processing]


def test_list_by_client_returns_that_clients_jobs_newest_first(
    jobs: JobStore, clock: Clock
) -> None:
    older = jobs.create(new_key(client_id="web"))
    clock.advance(1)
    jobs.create(new_key(client_id="mobile"))
    clock.advance(1)
    newer = job_in(jobs, JobStatus.SUCCEEDED, key=new_key(client_id="web"))

    page = jobs.list_by_client("tenant-a", "web")

    assert [job.key for job in page.jobs] == [newer, older.key]


def test_list_by_day_buckets_jobs_by_their_utc_creation_day(open_jobs: OpenJobs) -> None:
    pinned = Pinned(utc("2026-01-01T23:59:59.999"))
    jobs = open_jobs(clock=pinned)
    late = jobs.create(new_key())
    pinned.seconds = utc("2026-01-02T00:00:00").timestamp()
    next_day = jobs.create(new_key())

    first = jobs.list_by_day("tenant-a", "2026-01-01")
    second = jobs.list_by_day("tenant-a", "2026-01-02")

    assert (late.day, next_day.day) == ("2026-01-01", "2026-01-02")
    assert [job.key for job in first.jobs] == [late.key]
    assert [job.key for job in second.jobs] == [next_day.key]


def test_a_tenant_cannot_see_another_tenants_jobs(jobs: JobStore) -> None:
    mine = jobs.create(new_key(tenant_id="tenant-a", client_id="shared"))
    jobs.create(new_key(tenant_id="tenant-b", client_id="shared"))

    by_status = jobs.list_by_status("tenant-a", JobStatus.QUEUED)
    by_client = jobs.list_by_client("tenant-a", "shared")
    by_day = jobs.list_by_day("tenant-a", mine.day)

    for page in (by_status, by_client, by_day):
        assert [job.key for job in page.jobs] == [mine.key]


def test_a_cursor_from_another_tenants_listing_is_refused(jobs: JobStore) -> None:
    for _ in range(2):
        jobs.create(new_key(tenant_id="tenant-b"))
    cursor = jobs.list_by_status("tenant-b", JobStatus.QUEUED, limit=1).next_cursor

    with pytest.raises(errors.InvalidParameterValue):
        jobs.list_by_status("tenant-a", JobStatus.QUEUED, limit=1, cursor=cursor)


def _tampered(cursor: str) -> list[str]:
    flipped = cursor[:5] + ("A" if cursor[5] != "A" else "B") + cursor[6:]
    payload, mac = cursor.split(".")
    return [flipped, f"{mac}.{payload}", cursor + "A", cursor[:-1], "garbage", "", "a.b.c"]


def test_a_tampered_cursor_is_refused(jobs: JobStore) -> None:
    for _ in range(2):
        jobs.create(new_key())
    cursor = jobs.list_by_status("tenant-a", JobStatus.QUEUED, limit=1).next_cursor
    assert cursor is not None

    for bad in _tampered(cursor):
        with pytest.raises(errors.InvalidParameterValue):
            jobs.list_by_status("tenant-a", JobStatus.QUEUED, limit=1, cursor=bad)


@pytest.mark.parametrize("limit", [0, 1001, -1, True, "10"], ids=repr)
def test_page_size_outside_1_to_1000_is_refused(jobs: JobStore, limit: Any) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        jobs.list_by_client("tenant-a", "client-1", limit=limit)


@pytest.mark.parametrize(
    "day", ["2026-1-1", "2026-02-30", "today", "2026-01-01T00:00", "2026-01-01\n"], ids=repr
)
def test_a_day_not_in_yyyy_mm_dd_is_refused(jobs: JobStore, day: str) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        jobs.list_by_day("tenant-a", day)


@pytest.mark.parametrize(("since_ms", "until_ms"), [(10, 10), (20, 10), (-1, None)])
def test_an_empty_or_negative_date_range_is_refused(
    jobs: JobStore, since_ms: int, until_ms: int | None
) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        jobs.list_by_status("tenant-a", JobStatus.QUEUED, since_ms=since_ms, until_ms=until_ms)


def test_listing_with_a_bad_tenant_id_is_refused(jobs: JobStore) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        jobs.list_by_status("tenant#a", JobStatus.QUEUED)


# -- TTL ---------------------------------------------------------------------------------


def test_a_job_is_gone_30_days_after_creation(jobs: JobStore, clock: Clock) -> None:
    key = jobs.create(new_key()).key

    clock.advance(30 * 24 * 3600 - 1)
    assert jobs.get(key) is not None
    clock.advance(1.5)
    assert jobs.get(key) is None


def test_ttl_is_configurable_per_job(jobs: JobStore, clock: Clock) -> None:
    short = jobs.create(new_key(), ttl_seconds=60)
    long = jobs.create(new_key())

    clock.advance(61)

    assert jobs.get(short.key) is None
    assert jobs.get(long.key) is not None


@pytest.mark.parametrize("ttl_seconds", [0, -5, True, 1.5], ids=repr)
def test_a_ttl_that_is_not_a_positive_whole_number_of_seconds_is_refused(
    jobs: JobStore, ttl_seconds: Any
) -> None:
    with pytest.raises(errors.InvalidParameterValue):
        jobs.create(new_key(), ttl_seconds=ttl_seconds)


def test_an_expired_job_is_gone_for_listings_and_writes_before_any_sweep(
    jobs: JobStore, clock: Clock
) -> None:
    key = job_in(jobs, JobStatus.QUEUED)
    clock.advance(31 * 24 * 3600)

    assert jobs.list_by_status("tenant-a", JobStatus.QUEUED).jobs == ()
    with pytest.raises(errors.JobNotFound):
        jobs.transition(key, to=JobStatus.PROCESSING)


def test_an_expired_key_can_be_created_again(jobs: JobStore, clock: Clock) -> None:
    key = jobs.create(new_key(), ttl_seconds=60).key
    clock.advance(61)

    job = jobs.create(key, attributes={"second": True})

    assert job.attributes == {"second": True}
    assert jobs.get(key) == job


def test_sweep_deletes_expired_jobs_and_only_those(jobs: JobStore, clock: Clock) -> None:
    expired = [jobs.create(new_key(), ttl_seconds=60).key for _ in range(3)]
    kept = jobs.create(new_key()).key
    clock.advance(61)

    assert jobs.sweep_expired() == len(expired)
    assert jobs.sweep_expired() == 0
    assert jobs.get(kept) is not None


# -- sharing a database ------------------------------------------------------------------


def test_job_table_and_queues_share_one_database_without_interfering(
    jobs: JobStore, queues: QueueBackend, open_jobs: OpenJobs
) -> None:
    queues.create_queue("drawings")
    key = jobs.create(new_key()).key
    queues.send("drawings", OutgoingMessage(body=str(key)))

    [message] = queues.receive("drawings")

    assert JobKey.parse(message.body) == key
    assert open_jobs().get(key) == jobs.get(key)


def test_counts_by_status_cover_every_tenant_and_skip_expired_jobs(
    jobs: JobStore, clock: Clock
) -> None:
    a = JobKey(tenant_id="t1", client_id="c", job_id="a")
    b = JobKey(tenant_id="t2", client_id="c", job_id="b")
    old = JobKey(tenant_id="t1", client_id="c", job_id="old")
    jobs.create(old, ttl_seconds=60)
    clock.advance(61)
    jobs.create(a)
    jobs.create(b)
    jobs.transition(b, to=JobStatus.PROCESSING)

    assert jobs.count_by_status() == {JobStatus.QUEUED: 1, JobStatus.PROCESSING: 1}
