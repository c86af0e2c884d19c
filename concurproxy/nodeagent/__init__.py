"""GPU node agent: engine metrics + NVML → one pressure feed (``GET /pressure``) for the proxy."""
