"""The service core: it knows nothing of HTTP (settings, lifecycle, error kinds, the batch queue, the served model, the
request path, metrics)."""
