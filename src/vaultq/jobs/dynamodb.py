"""The job table on DynamoDB: ``JobStore`` over one table and three tenant-scoped GSIs.

One item per job, keyed ``pk = tenant#client#job``. Each listing is one GSI whose partition
key starts with the tenant (``tenant#status``, ``tenant#client``, ``tenant#day``) and whose
sort key is ``created_key = <created_at_ms, 20 digits>#<pk>``, so a query reads newest first
with the key as tie-breaker, exactly as the embedded store orders. The GSIs project only
their keys and ``expires_at_ms``: progress and checkpoint writes touch no index, and a
listing reads its jobs back with a consistent ``BatchGetItem`` and keeps only those that
still sit where the (eventually consistent) index found them.

Every write is a read-modify-write: a consistent read, the shared change from
``_records``, and a put conditional on the ``version`` read, retried when another writer
won in between, so two writers never both move a job. Expiry is vaultq's, on every read and
write: DynamoDB's TTL (``expires_at``, epoch seconds) only reclaims the space, days later.
Payloads are stored as the JSON text that ``_records`` measured, and progress as its
``repr``, so every value reads back exactly (DynamoDB numbers cannot hold every float).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from vaultq import errors
from vaultq._dynamodb import (
    TTL_ATTRIBUTE,
    check_table_name,
    ensure_table,
    n,
    new_client,
    s,
    translated,
)
from vaultq.jobs import _records as records
from vaultq.jobs.protocol import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_TTL_SECONDS,
    Job,
    JobKey,
    JobPage,
    JobStatus,
    encode_json,
    require_key,
    validate_day,
    validate_id,
    validate_limit,
    validate_range,
    validate_status,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from vaultq.jobs._records import Change
    from vaultq.jobs.protocol import JobStore

DEFAULT_TABLE = "vaultq-jobs"
#: GSI name -> its partition key attribute; every GSI sorts on ``created_key``.
INDEXES = {"by-status": "tenant_status", "by-client": "tenant_client", "by-day": "tenant_day"}

# Not a job key (a key part is never empty): the item that holds the cursor secret.
_SIGNER_PK = "#cursor-signer"
_BATCH_GET_KEYS = 100
# Each lost race means another write succeeded; this many in a row is a contended job.
_MAX_RACES = 20
_MAX_MS = 2**63 - 1


class DynamoJobs(records.ChangeWrites):
    """``JobStore`` on a DynamoDB table. ``clock`` returns seconds since the epoch.

    The table is not created on open (workers need no ``CreateTable`` permission): call
    ``create_table()`` once, or deploy it with the same schema.
    """

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        table: str = DEFAULT_TABLE,
        client: Any | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = check_table_name(table)
        self._clock = clock
        self._owns_client = client is None
        self._client = client if client is not None else new_client(region, endpoint_url)
        self._cursor_secret: bytes | None = None

    # -- the table ------------------------------------------------------------------------

    def create_table(self, *, timeout_seconds: float = 600.0) -> None:
        """Create the table with its GSIs and TTL unless it exists; return once it is ACTIVE.
        Idempotent and safe to race; an existing table without these GSIs raises
        ``InvalidSettings``."""
        ensure_table(self._client, table_spec(self.table), timeout_seconds=timeout_seconds)

    # -- one job --------------------------------------------------------------------------

    def create(
        self,
        key: JobKey,
        *,
        input_files: Sequence[str] = (),
        attributes: Mapping[str, Any] | None = None,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> Job:
        make = records.new_job(
            key, input_files=input_files, attributes=attributes, ttl_seconds=ttl_seconds
        )
        now = self._now_ms()
        job = make(now)
        try:
            # An expired job is gone: its key is free again even before TTL deletes it.
            self._call(
                "put_item",
                TableName=self.table,
                Item=_item(job),
                ConditionExpression="attribute_not_exists(pk) OR expires_at_ms <= :now",
                ExpressionAttributeValues={":now": n(now)},
            )
        except errors.ConditionalCheckFailed:
            raise errors.JobAlreadyExists(f"job {key} already exists") from None
        return job

    def get(self, key: JobKey) -> Job | None:
        pk = str(require_key(key))
        item = self._get_item(pk)
        if item is None or not _is_live(item, self._now_ms()):
            return None
        return _job(item)

    def _update(self, key: JobKey, change: Change) -> Job:
        pk = str(require_key(key))
        for _ in range(_MAX_RACES):
            now = self._now_ms()
            item = self._get_item(pk)
            if item is None or not _is_live(item, now):
                raise errors.JobNotFound(f"no job {pk}")
            stored = _job(item)
            job = change(stored, now)
            try:
                self._call(
                    "put_item",
                    TableName=self.table,
                    Item=_item(job),
                    ConditionExpression="version = :version AND expires_at_ms > :now",
                    ExpressionAttributeValues={":version": n(stored.version), ":now": n(now)},
                )
            except errors.ConditionalCheckFailed:
                # Another writer moved the job since our read: apply the change to its state.
                continue
            return job
        raise errors.ConditionalCheckFailed(
            f"job {pk} changed under {_MAX_RACES} attempts in a row to write it"
        )

    def _get_item(self, pk: str) -> dict[str, Any] | None:
        response = self._call(
            "get_item", TableName=self.table, Key={"pk": s(pk)}, ConsistentRead=True
        )
        item: dict[str, Any] | None = response.get("Item")
        return item

    # -- listings -------------------------------------------------------------------------

    def list_by_status(
        self,
        tenant_id: str,
        status: JobStatus,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> JobPage:
        validate_id("tenant_id", tenant_id)
        since, until = validate_range(since_ms, until_ms)
        state = validate_status(status).value
        filters = {"tenant_id": tenant_id, "status": state, "since_ms": since, "until_ms": until}
        return self._page(
            "list_by_status",
            filters,
            index="by-status",
            partition=f"{tenant_id}#{state}",
            created=(since, until),
            limit=limit,
            cursor=cursor,
        )

    def list_by_client(
        self,
        tenant_id: str,
        client_id: str,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> JobPage:
        validate_id("tenant_id", tenant_id)
        validate_id("client_id", client_id)
        since, until = validate_range(since_ms, until_ms)
        filters = {
            "tenant_id": tenant_id,
            "client_id": client_id,
            "since_ms": since,
            "until_ms": until,
        }
        return self._page(
            "list_by_client",
            filters,
            index="by-client",
            partition=f"{tenant_id}#{client_id}",
            created=(since, until),
            limit=limit,
            cursor=cursor,
        )

    def list_by_day(
        self,
        tenant_id: str,
        day: str,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> JobPage:
        validate_id("tenant_id", tenant_id)
        filters = {"tenant_id": tenant_id, "day": validate_day(day)}
        return self._page(
            "list_by_day",
            filters,
            index="by-day",
            partition=f"{tenant_id}#{day}",
            created=(0, _MAX_MS),
            limit=limit,
            cursor=cursor,
        )

    def _page(
        self,
        query: str,
        filters: Mapping[str, object],
        *,
        index: str,
        partition: str,
        created: tuple[int, int],
        limit: int,
        cursor: str | None,
    ) -> JobPage:
        """Query one GSI newest first, then read the jobs back consistently. The cursor is
        the shared signed position (created_at_ms, pk); with the partition its scope fixes,
        it is exactly the GSI's LastEvaluatedKey, so it resumes a query without a lookup."""
        validate_limit(limit)
        scope = records.cursor_scope(query, filters)
        part_attr = INDEXES[index]
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": index,
            "KeyConditionExpression": f"{part_attr} = :part AND created_key BETWEEN :low AND :high",
            "FilterExpression": "expires_at_ms > :now",
            "ScanIndexForward": False,
        }
        if cursor is not None:
            after_ms, after_pk = records.decode_cursor(self._secret(), scope, cursor)
            request["ExclusiveStartKey"] = {
                "pk": s(after_pk),
                part_attr: s(partition),
                "created_key": s(_created_key(after_ms, after_pk)),
            }
        now = self._now_ms()
        request["ExpressionAttributeValues"] = {
            ":part": s(partition),
            # ``#`` sorts before ``$``: the high bound is past every key created at until - 1.
            ":low": s(f"{created[0]:020d}"),
            ":high": s(f"{created[1] - 1:020d}$"),
            ":now": n(now),
        }
        jobs: list[Job] = []
        while len(jobs) <= limit:
            response = self._call("query", Limit=limit + 1 - len(jobs), **request)
            jobs.extend(self._still_indexed(response["Items"], part_attr, now))
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return records.page(jobs, limit=limit, secret=self._secret(), scope=scope)

    def _still_indexed(
        self, entries: Sequence[dict[str, Any]], part_attr: str, now: int
    ) -> Iterator[Job]:
        """The jobs behind ``entries``, read consistently, in their order; an entry whose
        job has since moved (an index lags its table on AWS), expired or gone is skipped."""
        items = self._batch_get([entry["pk"]["S"] for entry in entries])
        for entry in entries:
            item = items.get(entry["pk"]["S"])
            if (
                item is not None
                and _is_live(item, now)
                and item[part_attr] == entry[part_attr]
                and item["created_key"] == entry["created_key"]
            ):
                yield _job(item)

    def _batch_get(self, pks: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(pks), _BATCH_GET_KEYS):
            chunk = pks[start : start + _BATCH_GET_KEYS]
            wanted: dict[str, Any] = {
                self.table: {"Keys": [{"pk": s(pk)} for pk in chunk], "ConsistentRead": True}
            }
            for attempt in range(_MAX_RACES):
                response = self._call("batch_get_item", RequestItems=wanted)
                for item in response["Responses"].get(self.table, []):
                    found[item["pk"]["S"]] = item
                wanted = response.get("UnprocessedKeys") or {}
                if not wanted:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))  # throttled: back off as AWS asks
            else:
                raise errors.BackendUnavailable(f"table {self.table} kept throttling reads")
        return found

    # -- maintenance ----------------------------------------------------------------------

    def count_by_status(self) -> dict[JobStatus, int]:
        """From the by-status index (small entries; eventually consistent on AWS)."""
        counts: dict[JobStatus, int] = {}
        for entry in self._scan_index("expires_at_ms > :now", "tenant_status"):
            status = JobStatus(entry["tenant_status"]["S"].rsplit("#", 1)[1])
            counts[status] = counts.get(status, 0) + 1
        return counts

    def sweep_expired(self) -> int:
        """Delete what TTL has not deleted yet; each delete re-checks expiry, so a job
        created again under an expired key is kept."""
        deleted = 0
        for entry in self._scan_index("expires_at_ms <= :now", "pk"):
            try:
                self._call(
                    "delete_item",
                    TableName=self.table,
                    Key={"pk": entry["pk"]},
                    ConditionExpression="expires_at_ms <= :now",
                    ExpressionAttributeValues={":now": n(self._now_ms())},
                )
            except errors.ConditionalCheckFailed:
                continue
            deleted += 1
        return deleted

    def _scan_index(self, condition: str, projection: str) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "by-status",
            "FilterExpression": condition,
            "ProjectionExpression": projection,
            "ExpressionAttributeValues": {":now": n(self._now_ms())},
        }
        while True:
            response = self._call("scan", **request)
            yield from response["Items"]
            if "LastEvaluatedKey" not in response:
                return
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # -- plumbing -------------------------------------------------------------------------

    def _secret(self) -> bytes:
        """The key that signs cursors: made once, kept in the table, so that every process
        and every reopen accepts the same cursors."""
        if self._cursor_secret is None:
            key = {"pk": s(_SIGNER_PK)}
            item = self._get_item(_SIGNER_PK)
            if item is None:
                # Another process may make it first: then the read below gets theirs.
                with contextlib.suppress(errors.ConditionalCheckFailed):
                    self._call(
                        "put_item",
                        TableName=self.table,
                        Item={**key, "secret": {"B": secrets.token_bytes(32)}},
                        ConditionExpression="attribute_not_exists(pk)",
                    )
                item = self._get_item(_SIGNER_PK)
            if item is None:
                raise errors.BackendUnavailable(f"table {self.table} lost its cursor secret")
            self._cursor_secret = bytes(item["secret"]["B"])
        return self._cursor_secret

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = getattr(self._client, operation)(**params)
        except (ClientError, BotoCoreError) as exc:
            raise translated(exc, operation, too_large=errors.JobTooLarge) from exc
        return response

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def table_spec(table: str) -> dict[str, Any]:
    """The ``CreateTable`` request: on-demand billing, ``pk`` as the key, three GSIs that
    carry only their keys and ``expires_at_ms``."""
    indexes = [
        {
            "IndexName": name,
            "KeySchema": [
                {"AttributeName": part, "KeyType": "HASH"},
                {"AttributeName": "created_key", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["expires_at_ms"]},
        }
        for name, part in INDEXES.items()
    ]
    key_attributes = ["pk", "created_key", *INDEXES.values()]
    return {
        "TableName": table,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"} for name in key_attributes
        ],
        "GlobalSecondaryIndexes": indexes,
    }


def _created_key(created_at_ms: int, pk: str) -> str:
    return f"{created_at_ms:020d}#{pk}"


def _is_live(item: Mapping[str, Any], now_ms: int) -> bool:
    return int(item["expires_at_ms"]["N"]) > now_ms


def _item(job: Job) -> dict[str, Any]:
    pk, tenant = str(job.key), job.key.tenant_id
    item: dict[str, Any] = {
        "pk": s(pk),
        "status": s(job.status.value),
        "tenant_status": s(f"{tenant}#{job.status.value}"),
        "tenant_client": s(f"{tenant}#{job.key.client_id}"),
        "tenant_day": s(f"{tenant}#{job.day}"),
        "created_key": s(_created_key(job.created_at_ms, pk)),
        "created_at_ms": n(job.created_at_ms),
        "updated_at_ms": n(job.updated_at_ms),
        "expires_at_ms": n(job.expires_at_ms),
        # Rounded up: DynamoDB must never delete a job before vaultq considers it expired.
        TTL_ATTRIBUTE: n(-(-job.expires_at_ms // 1000)),
        "version": n(job.version),
        "attempts": n(job.attempts),
        "progress": s(repr(job.progress)),
        "stages_completed": s(encode_json(job.stages_completed)),
        "checkpoints": s(encode_json(list(job.checkpoints.items()))),
        "input_files": s(encode_json(job.input_files)),
        "output_files": s(encode_json(job.output_files)),
        "attributes": s(encode_json(job.attributes)),
    }
    optional = {"current_stage": job.current_stage, "error": job.error}
    if job.result is not None:
        optional["result"] = encode_json(job.result)
    item.update({name: s(value) for name, value in optional.items() if value is not None})
    return item


def _job(item: Mapping[str, Any]) -> Job:
    def text(name: str) -> str | None:
        value = item.get(name)
        return None if value is None else str(value["S"])

    def number(name: str) -> int:
        return int(item[name]["N"])

    result = text("result")
    return Job(
        key=JobKey.parse(item["pk"]["S"]),
        status=JobStatus(item["status"]["S"]),
        created_at_ms=number("created_at_ms"),
        updated_at_ms=number("updated_at_ms"),
        expires_at_ms=number("expires_at_ms"),
        version=number("version"),
        attempts=number("attempts"),
        stages_completed=tuple(json.loads(item["stages_completed"]["S"])),
        current_stage=text("current_stage"),
        progress=float(item["progress"]["S"]),
        checkpoints=dict(json.loads(item["checkpoints"]["S"])),
        input_files=tuple(json.loads(item["input_files"]["S"])),
        output_files=tuple(json.loads(item["output_files"]["S"])),
        result=None if result is None else json.loads(result),
        error=text("error"),
        attributes=json.loads(item["attributes"]["S"]),
    )


if TYPE_CHECKING:

    def _satisfies_protocol(store: DynamoJobs) -> JobStore:
        """mypy proves here that ``DynamoJobs`` is a ``JobStore``."""
        return store
