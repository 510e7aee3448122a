"""Fuzzing of the rewrite passes (see run.py)."""
