"""Pure decision core: admission windows, limit algorithms, budgets, fairness.

Nothing in this package does I/O, reads a clock or imports asyncio / aiohttp /
redis / prometheus / opentelemetry: time comes in as ``now`` (seconds, float).
`tests/test_core_purity.py` enforces the import rule.
"""
