"""Checkpoints: safetensors in and out, hub ids and their cache, ``kronos-fetch``, the bundled pair and
random-weight pairs of any shape for tests and benchmarks. Importing this package loads no torch."""
