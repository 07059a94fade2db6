"""Experiments and benchmarks: one-shot baselines, the deadline stream, the digits
models, `lrmpi bench`. Not part of the library's API."""
