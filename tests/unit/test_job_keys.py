"""A message's job key must belong to the tenant the message is stamped with."""

from __future__ import annotations

import pytest

from vaultq import errors
from vaultq.jobs import JobKey
from vaultq.queues import MessageAttribute, ReceivedMessage
from vaultq.runtime.jobs import (
    JOB_ATTRIBUTE,
    TENANT_ATTRIBUTE,
    job_key_of_message,
    job_key_of_record,
)

KEY = JobKey(tenant_id="acme", client_id="alice", job_id="0" * 32)


def message(**attributes: str) -> ReceivedMessage:
    return ReceivedMessage(
        message_id="m-1",
        receipt_handle="h-1",
        body="{}",
        md5_of_body="",
        attributes={
            name: MessageAttribute(data_type="String", value=value)
            for name, value in attributes.items()
        },
        receive_count=1,
        sent_at_ms=0,
        first_received_at_ms=0,
    )


def record(**attributes: str) -> dict[str, object]:
    return {
        "messageId": "m-1",
        "messageAttributes": {
            name: {"stringValue": value, "dataType": "String"} for name, value in attributes.items()
        },
    }


def test_a_job_of_the_stamped_tenant_is_found_from_message_and_record() -> None:
    attributes = {JOB_ATTRIBUTE: str(KEY), TENANT_ATTRIBUTE: "acme"}
    assert job_key_of_message(message(**attributes)) == KEY
    assert job_key_of_record(record(**attributes)) == KEY


def test_a_message_without_a_tenant_stamp_is_an_operator_s_and_keeps_its_job() -> None:
    assert job_key_of_message(message(**{JOB_ATTRIBUTE: str(KEY)})) == KEY
    assert job_key_of_record(record(**{JOB_ATTRIBUTE: str(KEY)})) == KEY


def test_a_message_stamped_with_another_tenant_never_names_this_tenant_s_job() -> None:
    attributes = {JOB_ATTRIBUTE: str(KEY), TENANT_ATTRIBUTE: "globex"}
    with pytest.raises(errors.InvalidParameterValue, match="another tenant"):
        job_key_of_message(message(**attributes))
    with pytest.raises(errors.InvalidParameterValue, match="another tenant"):
        job_key_of_record(record(**attributes))
