"""The one error tree of vaultq.

Every backend translates its driver's errors into these at its edge, so code above a
Protocol only ever catches ``VaultqError``. Each error has a stable ``code``: the SQS error
code where SQS has one, so scripts and the HTTP API can rely on it across backends.
"""

from __future__ import annotations


class VaultqError(Exception):
    """Base of every error vaultq raises on purpose."""

    code: str = "VaultqError"
    #: True when the caller sent something wrong; False when vaultq or a backend failed.
    client_fault: bool = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidParameterValue(VaultqError):
    """A parameter is outside what the operation accepts."""

    code = "InvalidParameterValue"


class MissingParameter(InvalidParameterValue):
    """A parameter the operation needs was not given (e.g. a FIFO send without a group id)."""

    code = "MissingParameter"


class InvalidAttributeName(InvalidParameterValue):
    """An attribute name the queue does not know."""

    code = "InvalidAttributeName"


class InvalidAttributeValue(InvalidParameterValue):
    """A queue attribute value outside its documented range."""

    code = "InvalidAttributeValue"


class MessageTooLong(InvalidParameterValue):
    """A message body (with its attributes) is larger than the queue's maximum message size."""

    code = "MessageTooLong"


class InvalidMessageContents(InvalidParameterValue):
    """A message body holds characters outside SQS's allowed set."""

    code = "InvalidMessageContents"


class EmptyBatchRequest(InvalidParameterValue):
    code = "EmptyBatchRequest"


class TooManyEntriesInBatchRequest(InvalidParameterValue):
    code = "TooManyEntriesInBatchRequest"


class BatchEntryIdsNotDistinct(InvalidParameterValue):
    code = "BatchEntryIdsNotDistinct"


class InvalidBatchEntryId(InvalidParameterValue):
    code = "InvalidBatchEntryId"


class BatchRequestTooLong(InvalidParameterValue):
    code = "BatchRequestTooLong"


class QueueDoesNotExist(VaultqError):
    code = "QueueDoesNotExist"


class QueueNameExists(VaultqError):
    """A queue of that name exists with different attributes."""

    code = "QueueNameExists"


class ReceiptHandleIsInvalid(VaultqError):
    """A receipt handle that vaultq never issued, or one for another queue."""

    code = "ReceiptHandleIsInvalid"


class StaleReceiptHandle(ReceiptHandleIsInvalid):
    """The message was received again since this handle was issued (a fencing token check)."""

    code = "StaleReceiptHandle"


class MessageNotInflight(VaultqError):
    """Changing the visibility of a message that is not in flight."""

    code = "MessageNotInflight"


class OverLimit(VaultqError):
    """A queue limit is reached, such as 120,000 in-flight messages on a FIFO queue."""

    code = "OverLimit"


class PurgeQueueInProgress(VaultqError):
    code = "PurgeQueueInProgress"


class InvalidSettings(VaultqError):
    """A setting (environment variable, URL, option) is malformed or unknown."""

    code = "InvalidSettings"


class BackendUnavailable(VaultqError):
    """The backend cannot be reached or failed; the operation may be retried."""

    code = "BackendUnavailable"
    client_fault = False


class JobNotFound(VaultqError):
    """No job with that key, or only an expired one (an expired job is gone)."""

    code = "JobNotFound"


class AlarmNotFound(VaultqError):
    """The app declares no alarm of that name."""

    code = "AlarmNotFound"


class JobAlreadyExists(VaultqError):
    """A live job already has that key."""

    code = "JobAlreadyExists"


class ConditionalCheckFailed(VaultqError):
    """The job is not in the state the caller expected (someone else changed it first)."""

    code = "ConditionalCheckFailed"


class InvalidJobTransition(VaultqError):
    """The job's state machine does not allow this change (terminal states are final)."""

    code = "InvalidJobTransition"


class JobTooLarge(InvalidParameterValue):
    """A job, or a payload written to it, is larger than a job item may be (400 KB)."""

    code = "JobTooLarge"


class NoSuchBucket(VaultqError):
    """The bucket does not exist."""

    code = "NoSuchBucket"


class NoSuchKey(VaultqError):
    """The bucket holds no object under that key."""

    code = "NoSuchKey"


class InvalidBucketName(InvalidParameterValue):
    """A bucket name outside S3's naming rules."""

    code = "InvalidBucketName"


class InvalidObjectKey(InvalidParameterValue):
    """An object key outside vaultq's rules: S3's, plus no path traversal, leading '/',
    empty segments, backslashes or control characters."""

    code = "InvalidObjectKey"


class EntityTooLarge(InvalidParameterValue):
    """An object larger than the store's maximum object size."""

    code = "EntityTooLarge"


class InvalidSignature(VaultqError):
    """A signed URL that this store did not sign, that was changed, or that is used with
    another method than the one it was signed for."""

    code = "SignatureDoesNotMatch"


class SignatureExpired(InvalidSignature):
    """A signed URL used after its expiry."""

    code = "SignatureExpired"


class IdempotencyAlreadyInProgress(VaultqError):
    """Another attempt with the same idempotency key is still running: this one did not run
    and may be retried once that attempt finished or its deadline passed."""

    code = "IdempotencyAlreadyInProgress"
    client_fault = False
    #: The reason a dead-letter record shows if the duplicate uses up its receives waiting.
    failure_reason = "IDEMPOTENCY_ALREADY_IN_PROGRESS"


class IdempotencyKeyError(InvalidParameterValue):
    """No idempotency key can be made: the key function returned None, or the value to hash
    is not JSON."""

    code = "IdempotencyKeyError"


class IdempotencyKeyMismatch(InvalidParameterValue):
    """An idempotency key reused, within its window, for a request that differs from the
    one that first used it."""

    code = "IdempotencyKeyMismatch"


class UnsupportedMediaType(InvalidParameterValue):
    """A request or one of its parts has a media type the operation does not take."""

    code = "UnsupportedMediaType"


class IdempotencyResultNotStorable(InvalidParameterValue):
    """An idempotent function's result cannot be kept for its duplicates: it is not JSON that
    reads back equal (tuples, sets, bytes, non-str keys, NaN), or it is over 400 KB."""

    code = "IdempotencyResultNotStorable"


class Unauthenticated(VaultqError):
    """No credentials, or credentials vaultq cannot accept (HTTP 401). The message never says
    which check failed, and never holds the token."""

    code = "UNAUTHENTICATED"


class Forbidden(VaultqError):
    """The caller is authenticated but its roles do not grant the operation (HTTP 403)."""

    code = "FORBIDDEN"


class Throttled(VaultqError):
    """A rate limit refused the request; it may be retried after ``retry_after_seconds``."""

    code = "TooManyRequests"
    failure_reason = "THROTTLED"

    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class DecryptionFailed(VaultqError):
    """A sealed text or wrapped key cannot be opened: tampered, truncated, an unknown format
    version, the wrong key, or bound to another tenant, message or job. The message never
    holds plaintext, key bytes or ciphertext; AES-GCM cannot tell these causes apart."""

    code = "DECRYPTION_FAILED"
    #: The reason a dead-letter record shows for a message that cannot be decrypted.
    failure_reason = "DECRYPTION_FAILED"


class UnknownKeyId(VaultqError):
    """A wrapped key names a worker key id the key ring does not hold (never loaded, or
    already rotated out)."""

    code = "UNKNOWN_KEY_ID"
    failure_reason = "UNKNOWN_KEY_ID"


class CollectionNotFound(VaultqError):
    """No vector collection of that name was created."""

    code = "CollectionNotFound"


class CollectionAlreadyExists(VaultqError):
    """A vector collection of that name exists with other settings (dimension, mode, metric)."""

    code = "CollectionAlreadyExists"


class WrongCollectionMode(InvalidParameterValue):
    """The operation or item belongs to the other mode: ``search`` on a sealed collection,
    ``sealed_items`` on an indexed one, a plain vector given to a sealed one."""

    code = "WrongCollectionMode"


class DimensionMismatch(InvalidParameterValue):
    """A vector's length is not the collection's dimension."""

    code = "DimensionMismatch"


class MissingDependency(VaultqError):
    """An optional dependency of the feature in use is not installed; the message names the
    extra to install (e.g. ``vaultq[embeddings]``)."""

    code = "MissingDependency"
    client_fault = False


class EmbeddingApiError(VaultqError):
    """An embedding provider kept failing (HTTP 429 or 5xx past the retries, a refused or
    malformed answer, a connection error). The message holds the status and the attempts,
    never the texts, the API key or the provider's answer body."""

    code = "EMBEDDING_API_ERROR"
    client_fault = False
    failure_reason = "EMBEDDING_API_ERROR"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        #: The last HTTP status, or None when no answer came.
        self.status_code = status_code
        #: The provider's last ``Retry-After``, when it sent one.
        self.retry_after_seconds = retry_after_seconds


class EmbeddingApiTimeout(EmbeddingApiError):
    """An embedding provider kept failing and its last attempt got no answer in time."""

    code = "EMBEDDING_API_TIMEOUT"
    failure_reason = "EMBEDDING_API_TIMEOUT"
