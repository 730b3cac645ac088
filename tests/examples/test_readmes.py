"""Every example's README runs as written: its app started by `vaultq up`, its curl sessions
run in bash, each documented answer checked (the convention: tests/examples/readme_sessions.py).
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from typing import TYPE_CHECKING

import pytest

from tests.api.conftest import ROOT, SECRET, start_server
from tests.examples.readme_sessions import Mismatch, Session, match_answer, steps
from tests.examples.test_drawing_jobs import DRAWING, SPEC
from vaultq.privacy.keys import generate_worker_key

if TYPE_CHECKING:
    from pathlib import Path

# The files a README's reader brings, by example; everything else comes from the repository.
INPUTS = {"drawing_jobs": {"plan.pdf": DRAWING, "spec.txt": SPEC}}
EXAMPLES = sorted(readme.parent.name for readme in ROOT.glob("examples/*/README.md"))
# Examples whose app opens sealed data with the workers' key pair, and runs the bundled model.
PRIVATE = {"private_embeddings"}
_START = re.compile(r"(?:vaultq up|scripts/start) (examples\.\S+:\w+)")


def reader_directory(directory: Path, inputs: dict[str, bytes]) -> Path:
    """The repository root as the reader sees it, with this interpreter's virtual environment
    as ``.venv``; what the session writes stays in ``directory``."""
    directory.mkdir()
    for entry in ROOT.iterdir():
        if entry.name != ".venv":
            (directory / entry.name).symlink_to(entry)
    (directory / ".venv").symlink_to(sys.prefix)
    for name, content in inputs.items():
        (directory / name).write_bytes(content)
    return directory


def worker_key_pair() -> tuple[dict[str, bytes], dict[str, str]]:
    """The files ``vaultq keys generate worker.key > worker.json`` makes, and the server
    environment the README starts the app with."""
    key = generate_worker_key()
    private, public = (
        base64.b64encode(part).decode() for part in (key.private_key, key.public_key)
    )
    entry = f"{key.kem}:{private}"
    described = {"key_id": key.key_id, "kem": str(key.kem), "public_key": public}
    files = {"worker.key": f"{entry}\n".encode(), "worker.json": json.dumps(described).encode()}
    return files, {"VAULTQ_WORKER_KEYS": entry, "VAULTQ_WORKER_PUBLIC_KEY": public}


@pytest.mark.parametrize(
    "example",
    [pytest.param(name, marks=pytest.mark.model if name in PRIVATE else ()) for name in EXAMPLES],
)
def test_readme_session_runs_as_documented(example: str, tmp_path: Path) -> None:
    readme = (ROOT / "examples" / example / "README.md").read_text()
    documented_apps = set(_START.findall(readme))
    assert documented_apps == {f"examples.{example}.app:app"}, "the README starts another app"
    session_steps = steps(readme)
    data = tmp_path / "data"
    data.mkdir()
    inputs, server_environment = worker_key_pair() if example in PRIVATE else ({}, {})
    server = start_server(data, app=documented_apps.pop(), **server_environment)
    try:
        session = Session(
            directory=reader_directory(tmp_path / "reader", {**INPUTS.get(example, {}), **inputs}),
            environment={
                **os.environ,
                # What `vaultq token` needs to mint tokens the server accepts.
                "VAULTQ_URL": f"sqlite:///{data}/vaultq.db",
                "VAULTQ_AUTH_HS256_SECRET": SECRET.decode(),
            },
            base_url=server.base_url,
        )
        for step in session_steps:
            session.run(step)
    finally:
        server.stop()


SAMPLE = """
```bash session
TOKEN=$(vaultq token --tenant acme --role producer)
# prose, not an answer
curl -s -d '{"a": 1,
  "b": 2}' http://127.0.0.1:8000/jobs
# => 202 {"job_id":"$JOB",
#  "status":"queued", ...}

curl -s http://127.0.0.1:8000/jobs/$JOB
```
"""


def test_sessions_are_steps_with_their_answers() -> None:
    assert [
        (step.commands.splitlines()[0], step.answer, step.is_read()) for step in steps(SAMPLE)
    ] == [
        ("TOKEN=$(vaultq token --tenant acme --role producer)", None, True),
        ('curl -s -d \'{"a": 1,', '202 {"job_id":"$JOB",\n "status":"queued", ...}', False),
        ("curl -s http://127.0.0.1:8000/jobs/$JOB", None, True),
    ]
    with pytest.raises(Mismatch, match="no ```bash session```"):
        steps("```bash\ncurl -s http://127.0.0.1:8000/\n```\n")


def test_a_json_answer_binds_names_and_elides_what_it_does_not_show() -> None:
    answer = '202 {"job_id":"$JOB", "files":[{"key":"jobs/$JOB/out.csv"}, …], ...}'
    output = '{"job_id":"j1","status":"queued","files":[{"key":"jobs/j1/out.csv"},{"key":"x"}]}'
    assert match_answer(answer, 202, output, {}) == {"JOB": "j1"}
    assert match_answer('{"job_id":"$JOB", ...}', 200, output, {"JOB": "j1"}) == {}


@pytest.mark.parametrize(
    ("answer", "status", "output", "reason"),
    [
        ('202 {"a":1}', 200, '{"a":1}', "status 200, documented 202"),
        ('{"a":1}', 200, '{"a":1,"b":2}', r"undocumented \['b'\]"),
        ('{"a":1, ...}', 200, '{"b":2}', r"keys missing \['a'\]"),
        ('{"a":true}', 200, '{"a":1}', "answer.a: 1, documented True"),
        ('{"a":["x"]}', 200, '{"a":["x","y"]}', "2 items, documented 1"),
        ('{"id":"$JOB"}', 200, '{"id":"j2"}', "'j2', documented '\\$JOB'"),
        ("a,b\n1,2\n...", 200, "a,b\n1,3\n4,5", "line 2: '1,3', documented '1,2'"),
        ("HTTP/1.1 200 OK\nreplayed: true\n{}", None, "HTTP/1.1 200 OK\r\n\r\n{}", "no header"),
    ],
)
def test_an_answer_that_differs_from_the_documented_one_fails(
    answer: str, status: int, output: str, reason: str
) -> None:
    with pytest.raises(Mismatch, match=reason):
        match_answer(answer, status, output, {"JOB": "j1"})
