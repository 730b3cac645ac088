"""How long a failed message waits before it is visible again."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from vaultq.app import RetryPolicy


def retry_delay_seconds(
    policy: RetryPolicy, receive_count: int, *, random: Callable[[], float]
) -> int:
    """Exponential in the number of receives, capped, with full jitter when asked.

    Whole seconds, as visibility timeouts are. The first retry waits about ``base_seconds``.
    """
    exponent = min(max(receive_count - 1, 0), 62)
    ceiling = min(policy.cap_seconds, policy.base_seconds * (1 << exponent))
    delay = ceiling * random() if policy.jitter else ceiling
    return math.ceil(delay)
