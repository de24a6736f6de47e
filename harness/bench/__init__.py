"""Evaluations and performance benchmarks."""
