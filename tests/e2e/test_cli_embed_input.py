"""`vaultq embed` refuses what it cannot upload safely, in one line that names the line, the
field or the store, and never a text: bad JSON lines, unreadable files, and a store or
bucket that no server reads. Input errors run in-process (CliRunner); what depends on the
working directory runs as a subprocess, as a user runs it."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING

import pytest
from examples.private_embeddings.app import BUCKET, QUEUE, app
from typer.testing import CliRunner

from vaultq import wiring
from vaultq.cli import app as cli
from vaultq.client import (
    MAX_MESSAGES,
    MAX_TEXT_BYTES,
    SealedUpload,
    seal_messages,
    split_uploads,
)
from vaultq.jobs.protocol import JobKey
from vaultq.privacy.keys import Kem, generate_worker_key

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

PRIVATE_TEXT = "secret-diagnosis"


@pytest.fixture
def options(tmp_path: Path) -> list[str]:
    """Every option embed needs, with a new vector key and worker public key."""
    vector_key = tmp_path / "acme.vector-key"
    vector_key.write_text(base64.b64encode(os.urandom(32)).decode())
    public_key = base64.b64encode(generate_worker_key().public_key).decode()
    return ["--tenant", "acme", "--public-key", public_key, "--vector-key", str(vector_key)]


def provision(url: str) -> None:
    """What `vaultq up` does first: create the app's queues and buckets."""
    with contextlib.closing(wiring.open_queues(url)) as queues:
        blobs = wiring.open_blobs(url)
        app.provision(queues, blobs)
        blobs.close()


def embed(args: Sequence[str], *, url: str, stdin: bytes = b"") -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["embed", *args, "--url", url], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def run_vaultq(
    args: Sequence[str], *, cwd: Path, url: str | None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULTQ_")}
    env.pop("PYTHONPATH", None)  # only the working directory makes `examples` importable
    if url is not None:
        env["VAULTQ_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "vaultq", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def line(**fields: object) -> bytes:
    return json.dumps(fields).encode() + b"\n"


GOOD = line(id="m1", text=PRIVATE_TEXT)


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        pytest.param(
            line(id=None, text=None),
            "line 1: id must be a string of 1-128 of A-Z a-z 0-9 _ . : -",
            id="null-id",
        ),
        pytest.param(
            GOOD + line(id=5, text=PRIVATE_TEXT),
            "line 2: id must be a string of 1-128 of A-Z a-z 0-9 _ . : -",
            id="number-id",
        ),
        pytest.param(line(id="m1", text=5), "line 1: text must be a string", id="number-text"),
        pytest.param(line(id="m1", text=""), "line 1: text is empty", id="empty-text"),
        pytest.param(
            line(id="m1", text=PRIVATE_TEXT, note=PRIVATE_TEXT),
            "line 1 must have exactly the fields id and text",
            id="unknown-field",
        ),
        pytest.param(
            line(id="m1"), "line 1 must have exactly the fields id and text", id="no-text"
        ),
        pytest.param(
            b'{"id": "m1", "text": "secret", "text": "other"}\n',
            "line 1 names a field twice",
            id="field-twice",
        ),
        pytest.param(
            b'["m1", "secret"]\n', 'line 1 is not a JSON object {"id", "text"}', id="array"
        ),
        pytest.param(b"secret text\n", "line 1 is not JSON", id="not-json"),
        pytest.param(
            GOOD + b'{"id": "m2", "text": "secret \xff"}\n', "line 2 is not UTF-8", id="not-utf8"
        ),
        pytest.param(
            b'{"id": "m1", "text": "secret \\ud800"}\n',
            "line 1: text holds a lone surrogate (e.g. \\ud800), which UTF-8 cannot encode",
            id="lone-surrogate",
        ),
        pytest.param(
            GOOD + line(id="m2", text="s" * (MAX_TEXT_BYTES + 1)),
            f"line 2: text is {MAX_TEXT_BYTES + 1:,} bytes of UTF-8, at most {MAX_TEXT_BYTES:,}",
            id="too-long",
        ),
        pytest.param(
            GOOD + b"\n" + line(id="m1", text="other"),
            "line 3: id m1 is on line 1 too",
            id="duplicate-id-after-a-blank-line",
        ),
        pytest.param(b"\n  \n", "stdin holds no messages", id="only-blank-lines"),
    ],
)
def test_a_bad_line_is_refused_by_line_and_field_before_the_store_is_opened(
    tmp_path: Path, options: list[str], stdin: bytes, message: str
) -> None:
    url = f"sqlite:///{tmp_path}/store/vaultq.db"

    exit_code, stdout, stderr = embed(["-", *options], url=url, stdin=stdin)

    assert (exit_code, stdout) == (2, "")
    assert stderr == f"error: InvalidParameterValue: {message}\n"
    assert not (tmp_path / "store").exists()


def test_unreadable_files_are_named_with_the_reason(tmp_path: Path, options: list[str]) -> None:
    url = f"sqlite:///{tmp_path}/vaultq.db"
    (tmp_path / "messages.jsonl").write_bytes(GOOD)
    missing_key = [*options[:-1], str(tmp_path / "nope.key")]

    runs = {
        "missing": embed([str(tmp_path / "nope.jsonl"), *options], url=url),
        "directory": embed([str(tmp_path), *options], url=url),
        "key": embed([str(tmp_path / "messages.jsonl"), *missing_key], url=url),
    }

    assert {name: (code, err) for name, (code, _, err) in runs.items()} == {
        "missing": (
            2,
            "error: InvalidParameterValue: cannot read "
            f"{tmp_path / 'nope.jsonl'}: No such file or directory\n",
        ),
        "directory": (2, f"error: InvalidParameterValue: cannot read {tmp_path}: Is a directory\n"),
        "key": (
            2,
            "error: InvalidParameterValue: cannot read the vector key file "
            f"{tmp_path / 'nope.key'}: No such file or directory\n",
        ),
    }


def test_embed_elsewhere_refuses_to_create_a_store_that_no_server_reads(
    tmp_path: Path, options: list[str]
) -> None:
    """VAULTQ_URL's default store is relative: from another directory it is a new one."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "messages.jsonl").write_bytes(GOOD)

    run = run_vaultq(["embed", "messages.jsonl", *options], cwd=elsewhere, url=None)

    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == (
        f"error: NoSuchBucket: no vaultq store at {elsewhere / '.vaultq' / 'vaultq.db'} "
        f"(VAULTQ_URL sqlite:///.vaultq/vaultq.db, from {elsewhere}): run embed where "
        "`vaultq up` runs, or name its store with VAULTQ_URL or --url\n"
    )
    assert sorted(path.name for path in elsewhere.iterdir()) == ["messages.jsonl"]


def test_embed_refuses_a_store_whose_bucket_was_never_created(
    tmp_path: Path, options: list[str]
) -> None:
    """`vaultq worker` creates the app's queues only; without its bucket no event is sent,
    and a tracked job would stay queued forever: no job is created."""
    url = f"sqlite:///{tmp_path}/vaultq.db"
    with contextlib.closing(wiring.open_queues(url)) as queues:
        app.provision(queues)

    exit_code, stdout, stderr = embed(["-", *options, "--client", "alice"], url=url, stdin=GOOD)

    assert (exit_code, stdout) == (2, "")
    assert stderr == (
        f"error: NoSuchBucket: no bucket {BUCKET} in the store of VAULTQ_URL {url}: "
        "`vaultq up APP` creates the buckets and queues of its app\n"
    )
    blobs = wiring.open_blobs(url)
    jobs = wiring.open_jobs(url)
    try:
        assert blobs.list_buckets() == []
        assert jobs.count_by_status() == {}
    finally:
        blobs.close()
        jobs.close()


def test_an_app_that_does_not_import_here_is_a_one_line_error(
    tmp_path: Path, options: list[str]
) -> None:
    url = f"sqlite:///{tmp_path}/vaultq.db"
    provision(url)
    (tmp_path / "messages.jsonl").write_bytes(GOOD)

    run = run_vaultq(["embed", "messages.jsonl", *options], cwd=tmp_path, url=url)

    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == (
        "error: InvalidParameterValue: cannot import 'examples.private_embeddings.app': No "
        "module named 'examples': on the embedded store, embed needs the app that declares "
        f"bucket {BUCKET}; run it from the directory that holds the app, or name it with --app\n"
    )


def test_more_than_an_upload_holds_becomes_several_tracked_jobs(
    tmp_path: Path, options: list[str]
) -> None:
    """The issue's benchmark uploads 10,000 messages at a time; one more starts a new job."""
    url = f"sqlite:///{tmp_path}/vaultq.db"
    provision(url)
    count = MAX_MESSAGES + 1
    stdin = b"".join(line(id=f"m{i}", text=f"note {i}") for i in range(count))

    exit_code, stdout, stderr = embed(["-", *options, "--client", "alice"], url=url, stdin=stdin)

    assert (exit_code, stderr) == (0, "")
    printed = [json.loads(each) for each in stdout.splitlines()]
    assert [each["messages"] for each in printed] == [MAX_MESSAGES, 1]
    blobs = wiring.open_blobs(url)
    jobs = wiring.open_jobs(url)
    try:
        ids: list[str] = []
        for each in printed:
            data, _ = blobs.get(BUCKET, each["object_key"])
            ids += [message.message_id for message in SealedUpload.from_json(data).messages]
            job = jobs.get(JobKey(tenant_id="acme", client_id="alice", job_id=each["job_id"]))
            assert job is not None
            assert job.attributes["messages_total"] == each["messages"]
        assert ids == [f"m{i}" for i in range(count)]
    finally:
        blobs.close()
        jobs.close()
    with contextlib.closing(wiring.open_queues(url)) as queues:
        assert queues.stats(QUEUE).visible == 2


def test_on_aws_embed_needs_no_app_and_creates_no_bucket(
    aws_url: str, tmp_path: Path, options: list[str]
) -> None:
    """S3 sends the bucket's events itself, so the app is not imported (--app names none)."""
    bucket = f"embed-{uuid.uuid4().hex[:12]}"
    blobs = wiring.open_blobs(aws_url)
    args = ["-", *options, "--bucket", bucket, "--app", "nowhere:app"]
    try:
        missing = embed(args, url=aws_url, stdin=GOOD)
        buckets_after_refusal = {each.name for each in blobs.list_buckets()}
        blobs.create_bucket(bucket)
        uploaded = embed(args, url=aws_url, stdin=GOOD)
        [listed] = blobs.list(bucket).objects
    finally:
        blobs.close()

    # S3's own refusal of the put (listing the account's buckets would need another right).
    assert missing[:2] == (2, "")
    assert missing[2].startswith("error: NoSuchBucket: ")
    assert bucket not in buckets_after_refusal
    assert (uploaded[0], uploaded[2]) == (0, "")
    assert json.loads(uploaded[1])["object_key"] == listed.key


def test_split_uploads_fills_each_upload_up_to_its_size_limit() -> None:
    """What embed cuts by when texts are long: each upload object stays within the bytes a
    worker reads, with a hybrid key (the largest wrapped keys), and holds as many as fit."""
    public_key = generate_worker_key(kem=Kem.MLKEM768_X25519).public_key
    messages = [(f"m{i:02}", "t" * 9_000) for i in range(40)]
    max_bytes = 200_000
    two, one = (
        len(seal_messages(messages[:n], public_key=public_key, tenant="acme").to_json())
        for n in (2, 1)
    )
    per_upload = max_bytes // (two - one)  # one message's exact cost in the upload object

    runs = split_uploads(messages, max_bytes=max_bytes)

    assert [len(run) for run in runs] == [per_upload, per_upload, 40 - 2 * per_upload]
    assert [message for run in runs for message in run] == messages
    for run in runs:
        upload = seal_messages(run, public_key=public_key, tenant="acme", vector_key=b"k" * 32)
        assert len(upload.to_json()) <= max_bytes + 16 * 1024  # the header's allowance
