"""Evaluation tasks: static preference benchmarks (registered by name) and lm-eval task YAMLs over local data."""
