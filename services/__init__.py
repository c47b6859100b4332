"""Network services built on the ``model`` package (the Kronos FastAPI service lives in ``kronos_fastapi``)."""
