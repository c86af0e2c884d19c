"""The proxy's HTTP shell: handlers, forwarding, SSE relay, app assembly."""
