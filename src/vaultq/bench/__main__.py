"""``python -m vaultq.bench queue ...`` until the CLI mounts ``vaultq bench``."""

from __future__ import annotations

from vaultq.bench import bench_app

if __name__ == "__main__":
    bench_app()
