"""Rate limits shared by every process of a deployment.

The policy (``TokenBucket``) and the port (``RateLimiter``) live in
``vaultq.runtime.rate_limit``; this package holds the backends, one module each, imported
by name (``vaultq.ratelimits.sqlite``) so that importing the package loads no driver.
"""

from __future__ import annotations

from vaultq.runtime.rate_limit import Decision, RateLimiter, TokenBucket, wait

__all__ = ["Decision", "RateLimiter", "TokenBucket", "wait"]
