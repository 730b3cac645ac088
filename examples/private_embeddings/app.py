"""Private embeddings: an encrypted upload becomes one sealed vector per message.

A client seals its messages and puts one upload object into the ``messages`` bucket
(``vaultq.client.upload_messages``); the bucket's ``ObjectCreated`` event goes to the
``embed-jobs`` queue; ``embed_uploads`` opens the texts in memory, embeds them with the
local all-MiniLM-L6-v2 and upserts sealed vectors into ``<data dir>/vectors.db``.

Run it with the worker keys in the environment::

    VAULTQ_WORKER_KEYS=<base64 X25519 private key> vaultq worker examples.private_embeddings.app:app

The vector secret (see ``vaultq.embeddings.pipeline``) is made on first use in
``<data dir>/secrets/vector-secret`` (mode 0600), beside the database: an interim choice
that keeps vectors sealed in the database and its copies, not from whoever can read both.
"""

from __future__ import annotations

import functools
from typing import Any

from vaultq import errors, wiring
from vaultq.app import App, DeadLetterQueue
from vaultq.blobs import BucketNotification
from vaultq.client import UPLOAD_PREFIX, InvalidUpload
from vaultq.embeddings.pipeline import EmbeddingServices, process_upload, records_of
from vaultq.privacy.keys import KeyRing
from vaultq.runtime.failures import NonRetryableError
from vaultq.runtime.jobs import job_key_of_record, job_of

BUCKET = "messages"
QUEUE = "embed-jobs"
COLLECTION = "message_embeddings"
VECTOR_SECRET_NAME = "vector-secret"  # noqa: S105 - a file name, not a secret

app = App("private-embeddings")
app.queue(QUEUE, visibility_timeout_seconds=360, dead_letter=DeadLetterQueue(max_receive_count=3))
app.bucket(BUCKET, notifications=[BucketNotification(QUEUE, prefix=UPLOAD_PREFIX, suffix=".json")])


@functools.cache
def services() -> EmbeddingServices:
    """Built once per handler process, on its first event (the model loads in seconds)."""
    from vaultq.embeddings import LocalSentenceModel  # noqa: PLC0415 - torch loads with it
    from vaultq.vectors.embedded import EmbeddedVectors  # noqa: PLC0415

    root = wiring.data_dir()
    model = LocalSentenceModel()
    vectors = EmbeddedVectors(root / "vectors.db")
    vectors.create_collection(COLLECTION, dimension=model.dimension, mode="sealed")
    return EmbeddingServices(
        blobs=wiring.open_blobs(),
        key_ring=KeyRing.from_env(),
        provider=model,
        vectors=vectors,
        collection=COLLECTION,
        vector_secret=wiring.local_secret(root, VECTOR_SECRET_NAME),
        batch_size=model.batch_size,
    )


# One handler process per worker: each holds its own copy of the model (~600 MB).
@app.handler(queue=QUEUE, batch_size=1, timeout_seconds=300, max_concurrency=1)
def embed_uploads(event: dict[str, Any], context: Any) -> None:
    """Tampered or malformed uploads go to the dead-letter queue at once (no retry changes
    authenticated bytes); an unknown key id is retried, since a key rotation may be under
    way, and dead-lettered with ``UNKNOWN_KEY_ID`` after the last receive."""
    for sqs_record in event["Records"]:
        job = job_of(sqs_record, context) if job_key_of_record(sqs_record) else None
        for s3_record in records_of(sqs_record):
            try:
                results = process_upload(services(), s3_record, job=job)
            except (errors.DecryptionFailed, InvalidUpload) as exc:
                raise NonRetryableError(str(exc), reason=exc.failure_reason) from None
            if job is not None:
                job.succeed({"messages_embedded": len(results), "model": results[0]["model"]})
