"""Evaluation and training for kptllm (metrics, datasets, benchmark runner, training loop).

Imports flow one way: `demo -> evaluation -> kptllm`.
"""
