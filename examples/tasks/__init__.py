"""The ordered task API (seed system 4): a FIFO queue, in-order processing."""
