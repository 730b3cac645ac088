"""Scrub secrets from text before vaultq stores or shows it (error records, logs).

Redaction is on by default and errs towards removing too much: an error text keeps its
shape (exception type and words) but loses anything that looks like a token, key, password
or long opaque value.
"""

from __future__ import annotations

import re

MAX_ERROR_CHARS = 1000
_MASK = "[redacted]"
_PATTERNS = [
    # JSON Web Tokens and other dotted base64url triples.
    re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]*"),
    # Bearer credentials.
    re.compile(r"(?i)\bbearer\s+[\w.~+/-]+=*"),
    # name=value / name: value pairs whose name says secret.
    re.compile(
        r"(?i)\b([\w-]*(?:secret|token|password|passwd|api[_-]?key|authorization|credential|"
        r"private[_-]?key|session)[\w-]*)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
    ),
    # Passwords in URLs: scheme://user:password@host.
    re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*)(:)([^\s@/]+)(?=@)"),
    # PEM blocks.
    re.compile(r"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----", re.DOTALL),
    # Long hex or base64 runs: keys, ciphertexts, signatures.
    re.compile(r"\b[0-9a-fA-F]{32,}\b"),
    re.compile(r"[A-Za-z0-9+/_-]{40,}={0,2}"),
]


def redact(text: str, *, max_chars: int = MAX_ERROR_CHARS) -> str:
    """Return ``text`` with secrets masked, cut to ``max_chars``."""
    for pattern in _PATTERNS:
        if pattern.groups == 3:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{_MASK}", text)
        else:
            text = pattern.sub(_MASK, text)
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return text
