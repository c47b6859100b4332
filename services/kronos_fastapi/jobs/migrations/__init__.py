"""The job store's Alembic migrations (run at start-up by ``jobs/database.py``; no alembic.ini)."""
