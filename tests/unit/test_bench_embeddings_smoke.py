"""A smoke run of ``vaultq bench embeddings``: a tiny backlog through one real worker."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vaultq.bench import bench_app
from vaultq.bench.embeddings import make_messages

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_messages_are_deterministic_chat_texts_of_10_to_30_words() -> None:
    messages = make_messages(200)

    assert messages == make_messages(200)
    assert len({text for _id, text in messages}) > 150
    assert all(10 <= len(text.split()) <= 31 for _id, text in messages)  # 30 + an ending


# A worker and a raw-speed process each load the model: 162 s at a load average of 11.
@pytest.mark.timeout(300)
def test_a_tiny_embeddings_bench_reports_positive_figures() -> None:
    # Given 40 messages and one worker process
    # When the benchmark prints its figures as JSON
    result = CliRunner().invoke(
        bench_app, ["embeddings", "--messages", "40", "--workers", "1", "--json"]
    )

    # Then every message got a vector and every figure is positive
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["messages"] == 40
    assert report["uploads"] == 1
    for figure in ("seconds", "msgs_per_second", "peak_rss_mib", "raw_msgs_per_second", "ratio"):
        assert report[figure] > 0, figure
    assert set(report["targets_met"]) == {"ratio", "throughput", "peak_rss"}
