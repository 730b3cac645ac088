"""Runnable vaultq apps, one per seed system (see DESIGN.md)."""
