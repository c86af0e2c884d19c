"""Launchers for real inference engines (vLLM) behind `concurproxy worker --engine ...`."""
