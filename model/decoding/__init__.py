"""Decoding: sampling, the batched loop (cached fast path and the recompute oracle), the step-level
engine, what a series and a forecast are (``forecast.py``) and ``KronosPredictor`` (``pipeline.py``)."""
