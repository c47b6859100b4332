"""Bulk forecasts: a universe of series from files or a cluster.

``runner`` runs ``kronos-forecast INPUT --id-column COL --out OUT`` (CSV or Parquet in and out), written
chunk by chunk so that a killed run loses at most the series in flight and ``--resume`` finishes it;
``files`` reads the input and appends the output (CSV rows, Parquet part files); ``manifest`` is the
sidecar ``OUT.progress`` that says what is done. ``ray`` forecasts a Ray Dataset on a cluster.
"""
