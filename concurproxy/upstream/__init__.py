"""Upstream replicas: the pool with health state, and the HTTP forwarding client."""
