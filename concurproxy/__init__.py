"""concurproxy: agent-level admission control for multi-agent LLM inference."""

__version__ = "0.1.0"
