"""Run the curl sessions of a README as a user would, and check every answer it documents.

The convention, for any README:

- A fenced block whose info string is ``bash session`` is a session. Its commands run in
  bash, one step after another, in one environment: a variable a step sets (``TOKEN=$(...)``)
  is there for the next steps, as in the reader's shell.
- ``# => ANSWER`` after a command is what the command prints; the ``#`` lines right below
  it continue the answer. Other comment lines are prose (leave a blank line between an
  answer and a comment that follows it).
- An answer may start with the HTTP status (``# => 202 {...}``); the output of ``curl -i``
  starts with its status line and the headers shown (``idempotent-replayed: true``).
- A JSON answer is compared as JSON, so spacing and the order of keys are free. ``...`` (or
  ``…``) stands for members or items left out, for a value, or for part of a string. ``$NAME`` in a
  string is what the answer holds there: the first time it names the value (later commands
  read it as ``$NAME``), then it must be the same value. An object or array without ``...``
  is shown whole.
- Any other answer is compared line by line (with ``...`` and ``$NAME`` in lines); a line
  ``...`` stands for the rest.
- A read (a ``curl`` with no body and no method) whose answer does not match yet is run again
  until it does, as a reader polls a job that is still running.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

DOCUMENTED_URL = "http://127.0.0.1:8000"
#: A read polls this long at most: enough for a worker to load a model on a loaded machine.
POLL_SECONDS = 60.0
_SESSION = re.compile(r"^```bash session\n(.*?)^```", re.MULTILINE | re.DOTALL)
_ANSWER = "# =>"
_WRITES = re.compile(r"\s(-X|-d|-F|-T|--data\S*|--form\S*)\s")
_HOLE = re.compile(r"(\.\.\.|…|\$[A-Z_][A-Z0-9_]*)")
# Every curl also reports its status on stderr, where a reader sees nothing of it.
_PRELUDE = "curl() { command curl --write-out '%{stderr}\\n%{http_code}\\n' \"$@\"; }\nset -a\n"
# Then the shell hands its variables on to the next step.
_EPILOGUE = '\n__status=$?\nenv -0 -u __status -u SESSION_ENV > "$SESSION_ENV"\nexit $__status\n'


class Mismatch(AssertionError):
    """An answer that is not the one the README documents."""


@dataclass(frozen=True)
class Step:
    commands: str
    answer: str | None

    def is_read(self) -> bool:
        return _WRITES.search(self.commands + " ") is None


def steps(readme: str) -> list[Step]:
    """The steps of every session in a README, in order."""
    found = [step for block in _SESSION.findall(readme) for step in _steps(block)]
    if not found:
        raise Mismatch("the README has no ```bash session``` block")
    return found


def _steps(block: str) -> Iterator[Step]:
    commands: list[str] = []
    answer: list[str] | None = None
    for line in [*block.splitlines(), ""]:
        if answer is not None:
            if line.startswith("#") and not line.startswith(_ANSWER):
                answer.append(line[1:].removeprefix(" "))
                continue
            yield Step("\n".join(commands), "\n".join(answer))
            commands, answer = [], None
        if line.startswith(_ANSWER):
            if not commands:
                raise ValueError(f"an answer with no command before it: {line!r}")
            answer = [line.removeprefix(_ANSWER).strip()]
        elif line.strip() and not line.startswith("#"):
            commands.append(line)
        elif commands:
            yield Step("\n".join(commands), None)
            commands = []


@dataclass
class Session:
    """A reader's shell: its directory, its environment, and the app's real address."""

    directory: Path
    environment: dict[str, str]
    base_url: str

    def run(self, step: Step) -> None:
        deadline = time.monotonic() + POLL_SECONDS
        while True:
            status, output = self._execute(step.commands)
            if step.answer is None:
                return
            try:
                self.environment.update(match_answer(step.answer, status, output, self.environment))
                return
            except Mismatch as mismatch:
                if not step.is_read() or time.monotonic() > deadline:
                    raise Mismatch(f"{step.commands}\n  printed {output!r}\n  {mismatch}") from None
            time.sleep(0.2)

    def _execute(self, commands: str) -> tuple[int | None, str]:
        state = self.directory.parent / f"{self.directory.name}.env"
        script = _PRELUDE + commands.replace(DOCUMENTED_URL, self.base_url) + _EPILOGUE
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=self.directory,
            env={**self.environment, "SESSION_ENV": str(state)},
            capture_output=True,
            text=True,
            timeout=POLL_SECONDS,
            check=False,
        )
        if done.returncode != 0:
            raise Mismatch(f"{commands}\n  exited with {done.returncode}: {done.stderr.strip()}")
        exported = state.read_text().split("\0")
        self.environment = dict(item.split("=", 1) for item in exported if "=" in item)
        codes = re.findall(r"^(\d{3})$", done.stderr, re.MULTILINE)
        return (int(codes[-1]) if codes else None), done.stdout


def match_answer(
    answer: str, status: int | None, output: str, bound: Mapping[str, str]
) -> dict[str, str]:
    """The names the answer binds, if ``output`` (with ``status``) is the documented answer."""
    names: dict[str, str] = {}
    scope = _Scope(bound, names)
    if answer.startswith("HTTP/"):
        head, _, output = output.replace("\r\n", "\n").partition("\n\n")
        answer = _match_head(answer, head, scope)
    elif found := re.match(r"(\d{3})(\s+|$)", answer):
        if status != int(found[1]):
            raise Mismatch(f"status {status}, documented {found[1]}")
        answer = answer[found.end() :]
    if answer.startswith(("{", "[")):
        _match_json(_Parser(answer).document(), json.loads(output), "answer", scope)
    else:
        _match_lines(answer.splitlines(), output.splitlines(), scope)
    return names


def _match_head(answer: str, head: str, scope: _Scope) -> str:
    """Checks the status line and headers documented for ``curl -i``; the rest of the answer."""
    documented = answer.splitlines()
    status_line, *headers = head.splitlines() or [""]
    if status_line.split()[1:2] != documented[0].split()[1:2]:
        raise Mismatch(f"{status_line!r}, documented {documented[0]!r}")
    actual = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in headers)}
    rest = 1
    for line in documented[1:]:
        if line.startswith(("{", "[")):
            break
        name, _, value = line.partition(":")
        if name.lower() not in actual:
            raise Mismatch(f"no header {name!r}")
        scope.text(value.strip(), actual[name.lower()], f"header {name}")
        rest += 1
    return "\n".join(documented[rest:])


def _match_lines(documented: list[str], actual: list[str], scope: _Scope) -> None:
    for number, line in enumerate(documented):
        if line.strip() in ("...", "…"):
            return
        if number >= len(actual):
            raise Mismatch(f"line {number + 1} missing, documented {line!r}")
        scope.text(line, actual[number], f"line {number + 1}")
    if len(actual) != len(documented):
        raise Mismatch(f"{len(actual)} lines, documented {len(documented)}")


@dataclass(frozen=True)
class _Text:
    """A documented string: literal parts, ``...`` and ``$NAME`` holes."""

    documented: str


@dataclass(frozen=True)
class _Object:
    members: dict[str, Any]
    complete: bool


@dataclass(frozen=True)
class _Array:
    items: list[Any]
    complete: bool


class _Elided:
    """``...`` where a member or an item is left out."""


class _Scope:
    def __init__(self, bound: Mapping[str, str], names: dict[str, str]) -> None:
        self.bound, self.names = bound, names

    def text(self, documented: str, actual: str, where: str) -> None:
        pattern, fresh = "", []
        for part in _HOLE.split(documented):
            if part in ("...", "…"):
                pattern += ".*?"
            elif _HOLE.fullmatch(part):
                name = part[1:]
                known = self.names.get(name, self.bound.get(name))
                if known is not None:
                    pattern += re.escape(known)
                elif name in fresh:
                    pattern += f"(?P={name})"
                else:
                    pattern += f"(?P<{name}>.+?)"
                    fresh.append(name)
            else:
                pattern += re.escape(part)
        found = re.fullmatch(pattern, actual, re.DOTALL)
        if found is None:
            raise Mismatch(f"{where}: {actual!r}, documented {documented!r}")
        self.names.update(found.groupdict())


def _match_json(documented: Any, actual: Any, where: str, scope: _Scope) -> None:
    if isinstance(documented, _Elided):
        return
    if isinstance(documented, _Text):
        if not isinstance(actual, str):
            raise Mismatch(f"{where}: {actual!r}, documented a string")
        scope.text(documented.documented, actual, where)
    elif isinstance(documented, _Object):
        if not isinstance(actual, dict):
            raise Mismatch(f"{where}: {actual!r}, documented an object")
        missing = documented.members.keys() - actual.keys()
        extra = actual.keys() - documented.members.keys()
        if missing or (documented.complete and extra):
            raise Mismatch(f"{where}: keys missing {sorted(missing)}, undocumented {sorted(extra)}")
        for key, value in documented.members.items():
            _match_json(value, actual[key], f"{where}.{key}", scope)
    elif isinstance(documented, _Array):
        _match_items(documented, actual, where, scope)
    else:
        _match_scalar(documented, actual, where)


def _match_scalar(documented: Any, actual: Any, where: str) -> None:
    # 1.0 is documented for a float the API writes as 1; True is never 1.
    same_type = type(documented) is type(actual) or {type(documented), type(actual)} == {int, float}
    if not same_type or documented != actual:
        raise Mismatch(f"{where}: {actual!r}, documented {documented!r}")


def _match_items(documented: _Array, actual: Any, where: str, scope: _Scope) -> None:
    """Documented items in order; with ``...``, others may come between and around them."""
    if not isinstance(actual, list):
        raise Mismatch(f"{where}: {actual!r}, documented an array")
    if documented.complete and len(actual) != len(documented.items):
        raise Mismatch(f"{where}: {len(actual)} items, documented {len(documented.items)}")
    remaining = iter(enumerate(actual))
    for item in documented.items:
        for index, candidate in remaining:
            names = dict(scope.names)
            try:
                _match_json(item, candidate, f"{where}[{index}]", scope)
                break
            except Mismatch:
                if documented.complete:
                    raise
                scope.names.clear()
                scope.names.update(names)
        else:
            raise Mismatch(f"{where}: no item matches {item!r}")


class _Parser:
    """JSON with ``...`` (or ``…``) for left-out members and items."""

    _TOKEN = re.compile(r'\s*(\.\.\.|…|"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+)')

    def __init__(self, text: str) -> None:
        self.tokens = self._TOKEN.findall(text)
        self.position = 0

    def document(self) -> Any:
        value = self._value()
        if self.position != len(self.tokens):
            raise ValueError(
                f"documented JSON continues after its end: {self.tokens[self.position :]}"
            )
        return value

    def _next(self) -> str:
        symbol: str = self.tokens[self.position]
        self.position += 1
        return symbol

    def _value(self) -> Any:
        symbol = self._next()
        if symbol in ("...", "…"):
            return _Elided()
        if symbol == "{":
            members = self._sequence("}", self._member)
            return _Object(
                {k: v for k, v in members if k is not None}, all(k is not None for k, _ in members)
            )
        if symbol == "[":
            items = self._sequence("]", self._value)
            kept = [item for item in items if not isinstance(item, _Elided)]
            return _Array(kept, len(kept) == len(items))
        if symbol.startswith('"'):
            return _Text(json.loads(symbol))
        return json.loads(symbol)

    def _member(self) -> tuple[str | None, Any]:
        key = self._value()
        if isinstance(key, _Elided):
            return None, key
        if not isinstance(key, _Text) or self._next() != ":":
            raise ValueError(f"documented JSON: a member needs a key and ':', near {key!r}")
        return key.documented, self._value()

    def _sequence(self, end: str, element: Any) -> list[Any]:
        found: list[Any] = []
        if self.tokens[self.position] == end:
            self.position += 1
            return found
        while True:
            found.append(element())
            symbol = self._next()
            if symbol == end:
                return found
            if symbol != ",":
                raise ValueError(f"documented JSON: expected ',' or {end!r}, got {symbol!r}")
