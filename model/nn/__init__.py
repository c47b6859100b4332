"""The network: configs, layers, the BSQ tokenizer, the autoregressive predictor, the KV cache, the
weights prepared for inference and random-weight pairs of any shape (``synthetic``, for tests and
benchmarks). Imports nothing from decoding, evaluation or training."""
