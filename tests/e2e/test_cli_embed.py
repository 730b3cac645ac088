"""`vaultq keys generate`, `vaultq keys vector` and `vaultq embed`, end to end with a real
worker process."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from examples.private_embeddings.app import app

from vaultq import errors, wiring
from vaultq.client import WrappedVectorKey, new_vector_key_file, read_vector_key
from vaultq.jobs import Job, JobKey, JobStatus
from vaultq.jobs.sqlite import SqliteJobs
from vaultq.privacy.keys import Kem, KeyRing, generate_worker_key, kem_of_public_key
from vaultq.vectors.embedded import EmbeddedVectors

ROOT = Path(__file__).resolve().parents[2]


def vaultq(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vaultq", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


# Four CLI processes, then a worker that loads the model: over two minutes on a loaded
# 2-core machine (113 s at a load average of 11). Every wait below ends once it holds.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kem", list(Kem), ids=str)
def test_embed_encrypts_uploads_and_the_worker_stores_vectors(tmp_path: Path, kem: Kem) -> None:
    """The fleet rotates to a new key of ``kem``: its ring still holds the previous key (a
    bare base64 x25519 key, as rings were written before the hybrid suite)."""
    env = {**os.environ, "VAULTQ_URL": f"sqlite:///{tmp_path}/vaultq.db"}
    generated = vaultq("keys", "generate", str(tmp_path / "worker.key"), "--kem", kem, env=env)
    assert generated.returncode == 0, generated.stderr
    public = json.loads(generated.stdout)
    assert (public["kem"], kem_of_public_key(base64.b64decode(public["public_key"]))) == (kem, kem)
    assert (tmp_path / "worker.key").read_text().startswith(f"{kem}:")
    assert oct((tmp_path / "worker.key").stat().st_mode & 0o777) == "0o600"
    previous = base64.b64encode(generate_worker_key().private_key).decode()
    made = vaultq("keys", "vector", str(tmp_path / "acme.vector-key"), env=env)
    assert made.returncode == 0, made.stderr
    assert oct((tmp_path / "acme.vector-key").stat().st_mode & 0o777) == "0o600"
    wrapped = vaultq(
        "keys",
        "wrap-vector",
        str(tmp_path / "acme.vector-key"),
        "--tenant",
        "acme",
        "--public-key",
        public["public_key"],
        env=env,
    )
    assert wrapped.returncode == 0, wrapped.stderr
    grant = WrappedVectorKey.from_json(json.loads(wrapped.stdout))
    ring = KeyRing.from_file(tmp_path / "worker.key")
    opened = ring.unwrap_vector_key(grant.wrapped_key, tenant="acme", job_id=grant.request_id)
    assert opened == read_vector_key(tmp_path / "acme.vector-key")
    lines = "\n".join(
        json.dumps({"id": f"m{i}", "text": f"secret note number {i}"}) for i in range(3)
    )
    # As `vaultq up` does: embed uploads only into the app's existing bucket and queues.
    with contextlib.closing(wiring.open_queues(env["VAULTQ_URL"])) as queues:
        blobs = wiring.open_blobs(env["VAULTQ_URL"])
        app.provision(queues, blobs)
        blobs.close()

    embedded = vaultq(
        "embed",
        "-",
        "--tenant",
        "acme",
        "--client",
        "alice",
        "--public-key",
        public["public_key"],
        "--vector-key",
        str(tmp_path / "acme.vector-key"),
        env=env,
        stdin=lines,
    )

    assert embedded.returncode == 0, embedded.stderr
    assert json.loads(embedded.stdout)["messages"] == 3
    ring_text = f"{previous}\n{(tmp_path / 'worker.key').read_text()}"
    worker_env = {**env, "VAULTQ_WORKER_KEYS": ring_text}
    worker = subprocess.Popen(
        [sys.executable, "-m", "vaultq", "worker", "examples.private_embeddings.app:app"],
        cwd=ROOT,
        env=worker_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    vectors = EmbeddedVectors(tmp_path / "vectors.db")
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            # The worker creates the collection when its first event arrives.
            with contextlib.suppress(errors.CollectionNotFound):
                if vectors.count("message_embeddings", tenant="acme") == 3:
                    break
            time.sleep(0.5)
        assert vectors.count("message_embeddings", tenant="acme") == 3
        key = JobKey(
            tenant_id="acme", client_id="alice", job_id=json.loads(embedded.stdout)["job_id"]
        )
        with contextlib.closing(SqliteJobs(tmp_path / "vaultq.db")) as jobs:
            job = wait_for_job(jobs, key)
        assert (job.status, job.progress) == (JobStatus.SUCCEEDED, 1.0)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        vectors.close()


def wait_for_job(jobs: SqliteJobs, key: JobKey) -> Job:
    """The tracked upload's job once it stopped (the worker finishes it after its vectors)."""
    deadline = time.monotonic() + 60
    while (job := jobs.get(key)) is None or not job.status.is_terminal:
        assert time.monotonic() < deadline, f"job still {job and job.status}"
        time.sleep(0.2)
    return job


def test_embed_refuses_bad_input_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "VAULTQ_URL": f"sqlite:///{tmp_path}/vaultq.db"}
    vector_key = str(tmp_path / "acme.vector-key")
    new_vector_key_file(tmp_path / "acme.vector-key")

    not_json = vaultq(
        "embed",
        "-",
        "--tenant",
        "acme",
        "--public-key",
        "AAAA",
        "--vector-key",
        vector_key,
        env=env,
        stdin="not json\n",
    )
    bad_key = vaultq(
        "embed",
        "-",
        "--tenant",
        "acme",
        "--public-key",
        "%%%",
        "--vector-key",
        vector_key,
        env=env,
        stdin='{"id": "a", "text": "b"}\n',
    )

    assert not_json.returncode == bad_key.returncode == 2
    assert not_json.stderr.strip() == "error: InvalidParameterValue: line 1 is not JSON"
    assert bad_key.stderr.strip().startswith("error: ")
    assert "\n" not in bad_key.stderr.strip()
