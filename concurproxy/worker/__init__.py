"""The bundled worker: a simulated vLLM-like engine behind an OpenAI-compatible server.

See ``docs/worker.md``. Importing this package has no side effects.
"""
