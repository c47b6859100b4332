"""Checkpoints: safetensors in and out, hub ids and their cache, ``kronos-fetch``, the bundled pair.
Importing this package loads no torch; it imports nothing from nn (the networks use its mixin)."""
