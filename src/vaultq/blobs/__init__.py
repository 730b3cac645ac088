"""S3-shaped blobs with upload events: the Protocol, its values and the notification types.

Backends live in their own modules (``vaultq.blobs.local``), imported by name.
"""

from __future__ import annotations

from vaultq.blobs.notifications import (
    BucketNotification,
    EventMessage,
    EventOrigin,
    Notifier,
    ObjectEvent,
    QueueNotifier,
    s3_event,
)
from vaultq.blobs.protocol import (
    BlobStore,
    BucketInfo,
    ObjectInfo,
    ObjectListing,
    SignedMethod,
)

__all__ = [
    "BlobStore",
    "BucketInfo",
    "BucketNotification",
    "EventMessage",
    "EventOrigin",
    "Notifier",
    "ObjectEvent",
    "ObjectInfo",
    "ObjectListing",
    "QueueNotifier",
    "SignedMethod",
    "s3_event",
]
