"""Seed system 1, private embeddings: sealed uploads in, sealed vectors out."""
