"""Importers for other keypoint-LLM checkpoints (`kptllm convert ...`)."""
