"""Benchmarks: each script writes JSON and a markdown table."""
