"""``python -m vaultq``: the ``vaultq`` command line."""

from __future__ import annotations

from vaultq.cli import main

if __name__ == "__main__":
    main()
