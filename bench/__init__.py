"""Benchmarks: offline ceiling, the service under concurrent load, and peers, measured side by side."""
