"""Deploying an app on AWS: the Lambda entry point and the SAM template.

``vaultq.deploy.lambda_handler`` is every deployed function's handler; ``vaultq deploy sam``
writes the template (see ``vaultq.deploy.sam``).
"""

from __future__ import annotations

from vaultq.deploy.lambda_entry import InvocationFailed, LambdaEntry, lambda_handler

__all__ = ["InvocationFailed", "LambdaEntry", "lambda_handler"]
