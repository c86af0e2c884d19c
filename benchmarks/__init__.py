"""The benchmarks: one module per figure, run from the repository root as ``python -m benchmarks.<name>``.

Not part of the product: ``[tool.setuptools.packages.find]`` includes only ``concurproxy*`` and
``loadgen*``, so the wheel carries none of this, and nothing under ``concurproxy/`` or
``loadgen/`` imports from here (tests/bench/test_layout.py checks both). Each module's docstring
starts with its command; the README's *Benchmarks: the table of figures* lists every module,
the figure it produces and the page that cites it.
"""
