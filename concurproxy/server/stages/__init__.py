"""Adapters that plug the pure decision cores into the request path (see `server.hooks`)."""
