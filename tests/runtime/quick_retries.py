"""Short upload retries for tests of the private-embeddings example, whose 12.5-minute
retry window would outlast them. Handler processes import the test module that names the
app, and with it this one: the variable ``shorten_upload_retries`` sets shortens theirs too.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from examples.private_embeddings.app import QUEUE, app

from vaultq.app import DeadLetterQueue, RetryPolicy

VARIABLE = "VAULTQ_TEST_QUICK_RETRIES"
#: What the example had before its window grew: three receives, a second apart.
RECEIVES = 3
RETRY = RetryPolicy(base_seconds=1, cap_seconds=1, jitter=False)


def shorten_upload_retries(patch: pytest.MonkeyPatch) -> None:
    """Until ``patch`` is undone: three receives of ``embed-jobs``, a second apart."""
    queue = app.queues[QUEUE]
    patch.setitem(
        app.queues, QUEUE, replace(queue, dead_letter=DeadLetterQueue(max_receive_count=RECEIVES))
    )
    handler = app.handlers["embed_uploads"]
    patch.setitem(
        app.handlers, handler.name, replace(handler, mapping=replace(handler.mapping, retry=RETRY))
    )
    patch.setenv(VARIABLE, "1")


if os.environ.get(VARIABLE):  # a handler process of a test that shortened them
    shorten_upload_retries(pytest.MonkeyPatch())
