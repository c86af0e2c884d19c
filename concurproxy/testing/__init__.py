"""Helpers for tests and benchmarks: a fast OpenAI-compatible stub upstream, bounded waits."""
