"""``/v1/jobs``: bulk forecasts and backtests that run in the background, survive restarts (graceful
or ``kill -9``) and are kept, in SQLite by default or in one Postgres shared by every replica.

- ``tables.py``, ``database.py``, ``migrations/``: the schema, opening the store, Alembic migrations
  run at start-up (a newer service upgrades an older database in place).
- ``store.py`` (the routes' side) and ``leases.py`` (the worker's: claims under a lease, answers
  written exactly once, sweeps).
- ``inputs.py``: a job's items from a JSON body, a JSONL file or a long CSV/Parquet table, each item
  validated by the route's own parser.
- ``dispatch.py``: an item answered by its route (/v1/predict/single, /v1/backtest) in-process, as
  background work behind interactive requests (``batching.background_priority``).
- ``worker.py``: the per-instance loop; ``runtime.py``: its lifecycle and the store's reachability;
  ``results.py``: JSONL, CSV and Parquet results, streamed; ``metrics.py``, ``errors.py``.

The API is in ``routes/jobs.py`` and documented in docs/jobs.md.
"""
