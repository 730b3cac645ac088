"""Settings and backend selection by URL: bad settings give one clear error."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from vaultq import errors
from vaultq.queues.sqlite import SqliteQueues
from vaultq.wiring import load_settings, open_queues

if TYPE_CHECKING:
    from pathlib import Path


def test_default_is_an_embedded_database_under_dot_vaultq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VAULTQ_URL", raising=False)

    backend = open_queues()

    assert isinstance(backend, SqliteQueues)
    assert backend.path.resolve() == tmp_path / ".vaultq" / "vaultq.db"
    assert backend.durability == "full"
    backend.close()


def test_url_selects_path_and_durability(tmp_path: Path) -> None:
    backend = open_queues(f"sqlite:///{tmp_path}/q.db?durability=process")

    assert isinstance(backend, SqliteQueues)
    assert backend.path == tmp_path / "q.db"
    assert backend.durability == "process"
    backend.close()


def test_a_caller_s_durability_overrides_the_url_s(tmp_path: Path) -> None:
    # The API delivers its outbox's sends this way: their rows are already durable.
    backend = open_queues(f"sqlite:///{tmp_path}/q.db?durability=full", durability="process")

    assert isinstance(backend, SqliteQueues)
    assert backend.path == tmp_path / "q.db"
    assert backend.durability == "process"
    backend.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://localhost/db",
        "sqlite:///x.db?durability=sometimes",
        "sqlite:///x.db?synchronous=off",
        "sqlite://",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(errors.InvalidSettings):
        open_queues(url)


def test_invalid_url_in_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULTQ_URL", "mysql://nope")

    with pytest.raises(errors.InvalidSettings, match="url"):
        load_settings()
