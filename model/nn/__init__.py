"""The network: configs, layers, the BSQ tokenizer, the autoregressive predictor, the KV cache and the
weights prepared for inference. Imports nothing from decoding, evaluation or training."""
