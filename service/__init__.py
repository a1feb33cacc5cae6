"""Scoring half: a FastAPI service that serves a model bundle with batched ONNX Runtime inference."""
