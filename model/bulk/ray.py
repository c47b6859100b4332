"""A universe on a Ray cluster: ``KronosPredictor.predict_df`` over a Ray Dataset of long rows (one row per
id and timestamp), the predictor loaded once per actor, the forecasts written as Parquet.

Needs the ``[ray]`` extra (``pip install 'kronos-service[ray]'``: ``ray[data]`` and pyarrow); ray is
imported inside the functions, so ``import model.bulk.ray`` works without it and the calls say what to
install.

::

    import ray
    from model.bulk.ray import draw_seed, forecast_dataset, forecast_parquet

    ray.init()  # or ray.init(address="ray://head:10001"), or nothing inside a Ray job
    run = forecast_parquet("s3://bucket/candles/", "s3://bucket/forecasts/2026-06-01/",
                           model="NeoQuasar/Kronos-small", pred_len=5, sample_count=8, quantiles=[0.1, 0.9],
                           concurrency=4, num_gpus=1)
    run.seed, run.rows, run.failed  # the seed to record; forecast rows; series that could not be forecast

    ds = forecast_dataset(ray.data.read_parquet("candles/"), pred_len=5, seed=draw_seed(), concurrency=2)

**How the rows travel.** Every id's rows must reach one ``predict_df`` call, and a call should hold many
series (the predictor decodes ``batch_size`` of them together; one series per call would leave a GPU
idle). ``groupby(id).map_groups`` gives one id per call, so each row gets a bucket instead, a stable
hash of its id modulo ``buckets`` (``pandas.util.hash_pandas_object`` of ``str(id)``: the same in every
process), and ``groupby(bucket).map_groups`` hands each actor whole buckets: many complete series a call.
The actors are a fixed pool (``concurrency``; a ``(min, max)`` pair autoscales) of a callable class that
loads the predictor once (``model``/``tokenizer``: a folder every node can read, ``bundled`` or a hub
id, resolved as ``kronos-forecast --model`` does), each asking ``num_gpus`` and ``num_cpus``.

**Seeds.** ``forecast_dataset`` takes the call's seed (``draw_seed()`` draws one, on the driver);
``forecast_parquet`` draws one when none is given and returns it. Every actor gets that one seed, and
``predict_df`` seeds each series from it and the id (``model.decoding.table.series_seed``), so a
symbol's rows are the numbers a local ``predict_df(..., seed=seed)`` gives, however the cluster cuts
the universe. Rows come back in no particular order: sort by ``id``, ``step``.

**Bad series.** The output has an ``error`` column: null on forecast rows; a series that cannot be
forecast (too short, NaN, invalid candles, bad timestamps) is one row with its ``id``, the message in
``error`` and nulls elsewhere, while the others are forecast. ``forecast_parquet`` writes the two
apart: ``<output>/forecasts/`` (no ``error`` column) and ``<output>/errors/`` (``id``, ``error``).

**One schema.** Every block has the same Arrow schema, fixed on the driver from the input's (``id``
keeps its type; ``timestamps`` is ``timestamp[ns]`` with the input's zone, UTC-naive where the input
gave text with offsets), so the Parquet files read back as one table even where a block holds only
errors.

**On Kubernetes (KubeRay).** A ``RayCluster`` (or a ``RayJob`` that creates one and submits the driver)
with a head group and a worker group, both running an image with ``pip install 'kronos-service[ray]'``
(the same Python and Ray version on every pod; the bundled pair ships inside the package). Workers
ask ``nvidia.com/gpu: 1`` in their container limits and ``forecast_parquet(..., num_gpus=1,
concurrency=<GPU workers>)`` gives one actor per GPU; on CPU workers ``num_cpus=<cores per actor>``.
The model is a hub id (each node downloads it once into its cache: set ``HF_HOME`` to a volume, or a
mirror for a cluster with no way out) or a folder on a volume every pod mounts (a ReadOnlyMany PVC).
Input and output paths must be reachable from every pod: object storage (``s3://``, ``gs://``) or a
shared ReadWriteMany volume; a pod's local disk is not. Scaling is the worker group's ``replicas``
(or the autoscaler with ``concurrency=(1, n)``).
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..decoding.forecast import PRICE_COLUMNS, SEED_BITS
from ..decoding.table import TableSettings, quantile_column
from ..errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

INSTALL_HINT = "Kronos on Ray needs ray[data] and pyarrow: pip install 'kronos-service[ray]'"
BUCKET_COLUMN = "__kronos_bucket"
ERROR_COLUMN = "error"
DEFAULT_BUCKETS_PER_ACTOR = 4
# predict_df's options that forecast_dataset passes through (id and timestamp columns and the seed are named)
OPTIONS = ("sample_count", "T", "top_k", "top_p", "clean", "window", "quantiles", "freq", "calendar", "lookback")
OPTIONS += ("batch_size",)


def _import_ray():
    try:
        import pyarrow
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    return ray, pyarrow


def draw_seed() -> int:
    """A fresh call seed (53 bits, as ``predict_df`` draws): draw it once, on the driver, and record it."""
    return secrets.randbits(SEED_BITS)


@dataclass(frozen=True)
class RayRun:
    """What ``forecast_parquet`` wrote: the call's seed, the two folders, forecast rows and failed series."""

    seed: int
    forecasts: str
    errors: str
    rows: int
    failed: int


def bucket_of(ids: pd.Series, buckets: int) -> np.ndarray:
    """Each id's bucket in ``0 .. buckets-1``: a hash of ``str(id)`` that every process computes alike."""
    hashed = pd.util.hash_pandas_object(ids.astype(str), index=False).to_numpy()
    return (hashed % np.uint64(buckets)).astype(np.int64)


def _add_bucket(batch: pd.DataFrame, id_column: str, buckets: int) -> pd.DataFrame:
    return batch.assign(**{BUCKET_COLUMN: bucket_of(batch[id_column], buckets)})


def _column(names: list[str], wanted: str) -> str | None:
    """The input column that ``predict_df`` reads as ``wanted`` (names are compared stripped, lower-cased)."""
    key = wanted.strip().lower()
    return next((n for n in names if str(n).strip().lower() == key), None)


def output_schema(input_schema: pa.Schema, settings: TableSettings) -> pa.Schema:
    """The Arrow schema of every output block (see the module docstring)."""
    _, pa = _import_ray()
    names = list(input_schema.names)
    id_name, time_name = _column(names, settings.id_column), _column(names, settings.timestamp_column)
    missing = [w for w, n in ((settings.id_column, id_name), (settings.timestamp_column, time_name)) if n is None]
    missing += [c for c in PRICE_COLUMNS if _column(names, c) is None]
    if missing:
        raise InputError(f"the dataset is missing column(s) {', '.join(missing)}; the columns are {', '.join(names)}")
    id_type = input_schema.field(id_name).type
    if pa.types.is_dictionary(id_type):
        id_type = id_type.value_type
    time_type = input_schema.field(time_name).type
    tz = time_type.tz if pa.types.is_timestamp(time_type) else None
    columns = [("id", id_type), ("timestamps", pa.timestamp("ns", tz=tz)), ("step", pa.int64())]
    columns += [(c, pa.float64()) for c in PRICE_COLUMNS]
    if _column(names, "volume") is not None:
        columns.append(("volume", pa.float64()))
        if _column(names, "amount") is not None:
            columns.append(("amount", pa.float64()))
    columns += [(quantile_column(q), pa.float64()) for q in settings.quantiles]
    if settings.sample_count >= 2:
        columns.append(("p_up", pa.float64()))
    columns.append((ERROR_COLUMN, pa.string()))
    return pa.schema(columns)


class UniverseForecaster:
    """The callable class of the actor pool: loads the predictor once, then forecasts whole buckets."""

    def __init__(self, sources: dict[str, Any], settings: dict[str, Any], seed: int, schema: pa.Schema):
        from ..checkpoints.hub import resolve_pair
        from ..decoding.pipeline import KronosPredictor
        from ..nn.predictor import Kronos
        from ..nn.tokenizer import KronosTokenizer

        pair = resolve_pair(
            sources["model"],
            sources["revision"],
            sources["tokenizer"],
            sources["tokenizer_revision"],
            sources["max_context"],
        )
        model = Kronos.from_pretrained(pair.model.folder)
        tokenizer = KronosTokenizer.from_pretrained(pair.tokenizer.folder)
        self.predictor = KronosPredictor(model, tokenizer, device=sources["device"], max_context=pair.max_context)
        self.settings, self.seed, self.schema = settings, int(seed), schema

    def __call__(self, group: pd.DataFrame) -> pa.Table:
        _, pa = _import_ray()
        out = self.predictor.predict_df(
            group.drop(columns=[BUCKET_COLUMN]), **self.settings, seed=self.seed, on_error="collect"
        )
        errors = out.attrs.get("errors") or {}  # id -> message
        if isinstance(errors, pd.DataFrame):  # predict_df's first form: a table of id, message
            errors = dict(zip(errors["id"], errors["message"]))
        parts = []
        if len(out):
            stamps = pd.DatetimeIndex(out["timestamps"])
            if stamps.tz is not None and self.schema.field("timestamps").type.tz is None:
                out["timestamps"] = stamps.tz_convert("UTC").tz_localize(None)
            body = self.schema.remove(self.schema.get_field_index(ERROR_COLUMN))
            table = pa.Table.from_pandas(out.reindex(columns=body.names), schema=body, preserve_index=False)
            parts.append(table.append_column(self.schema.field(ERROR_COLUMN), pa.nulls(len(out), pa.string())))
        if len(errors):
            arrays = {
                "id": pa.array(list(errors), type=self.schema.field("id").type),
                ERROR_COLUMN: pa.array([str(m) for m in errors.values()], type=pa.string()),
            }
            n = len(errors)
            parts.append(pa.table([arrays.get(f.name, pa.nulls(n, f.type)) for f in self.schema], schema=self.schema))
        return pa.concat_tables(parts) if parts else self.schema.empty_table()


def forecast_dataset(
    ds: ray.data.Dataset,
    *,
    pred_len: int,
    seed: int,
    model: str = "bundled",
    tokenizer: str | None = None,
    revision: str | None = None,
    tokenizer_revision: str | None = None,
    max_context: int | None = None,
    device: str | None = None,
    id_column: str = "id",
    timestamp_column: str = "timestamps",
    concurrency: int | tuple[int, int] = 1,
    num_gpus: float = 0,
    num_cpus: float = 1,
    buckets: int | None = None,
    ray_remote_args: dict[str, Any] | None = None,
    **options: Any,
) -> ray.data.Dataset:
    """The forecasts of every series of ``ds`` (lazy, as Ray Datasets are): ``predict_df``'s rows plus ``error``.

    ``ds``: long rows (``id_column``, ``timestamp_column``, open, high, low, close, optional volume and
    amount; any order, any blocks). ``options``: ``predict_df``'s (``sample_count``, ``T``, ``top_k``,
    ``top_p``, ``clean``, ``window``, ``quantiles``, ``freq``, ``calendar``, ``lookback``, ``batch_size``).
    ``seed`` is required (``draw_seed()``): one seed for every actor. ``concurrency`` actors (or a
    ``(min, max)`` autoscaling pool), each asking ``num_gpus`` and ``num_cpus`` (and ``ray_remote_args``,
    e.g. ``{"resources": {...}}`` or ``{"memory": ...}``); ``device`` defaults to ``cuda`` with
    ``num_gpus``, else ``cpu``. ``buckets``: how many pieces the universe is cut into, each one call of
    one actor (all its rows in that actor's memory at once); default 4 per actor. Raise it for a
    universe whose quarter-per-actor does not fit, lower it for fewer, larger calls.
    """
    ray, _ = _import_ray()
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)}; forecast_dataset takes {', '.join(OPTIONS)}")
    if seed is None or isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer (draw_seed() draws one, once, on the driver), got {seed!r}")
    settings = TableSettings(
        pred_len=pred_len, id_column=id_column, timestamp_column=timestamp_column, seed=int(seed), **options
    )
    settings.quantiles = tuple(settings.quantiles)
    settings.check()
    pool = tuple(concurrency) if isinstance(concurrency, (tuple, list)) else (concurrency, concurrency)
    if len(pool) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in pool) or pool[0] > pool[1]:
        raise InputError(f"concurrency must be a positive integer or a (min, max) pair, got {concurrency!r}")
    buckets = DEFAULT_BUCKETS_PER_ACTOR * pool[1] if buckets is None else buckets
    if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        raise InputError(f"buckets must be a positive integer, got {buckets!r}")
    input_schema = _arrow_schema(ds)
    schema = output_schema(input_schema, settings)
    id_name = _column(list(input_schema.names), id_column)
    sources = {
        "model": model,
        "tokenizer": tokenizer,
        "revision": revision,
        "tokenizer_revision": tokenizer_revision,
        "max_context": max_context,
        "device": device if device is not None else ("cuda" if num_gpus else "cpu"),
    }
    call = {k: v for k, v in asdict(settings).items() if k in OPTIONS}
    call.update(id_column=id_column, timestamp_column=timestamp_column, pred_len=pred_len)
    strategy = ray.data.ActorPoolStrategy(min_size=pool[0], max_size=pool[1])
    with_buckets = ds.map_batches(
        _add_bucket, batch_format="pandas", fn_kwargs={"id_column": id_name, "buckets": buckets}
    )
    return with_buckets.groupby(BUCKET_COLUMN, num_partitions=buckets).map_groups(
        UniverseForecaster,
        batch_format="pandas",
        compute=strategy,
        fn_constructor_args=(sources, call, int(seed), schema),
        num_gpus=num_gpus or None,
        num_cpus=num_cpus,
        **(ray_remote_args or {}),
    )


def _arrow_schema(ds: ray.data.Dataset) -> pa.Schema:
    """The input's schema in Arrow types (a column Ray has no Arrow type for counts as text)."""
    _, pa = _import_ray()
    schema = ds.schema()
    if schema is None:
        raise InputError("the dataset has no schema (is it empty?)")
    return pa.schema(
        [(n, t if isinstance(t, pa.DataType) else pa.string()) for n, t in zip(schema.names, schema.types)]
    )


def forecast_rows(batch: pa.Table) -> pa.Table:
    """The forecast rows of an output batch, without the ``error`` column."""
    import pyarrow.compute as pc

    return batch.filter(pc.is_null(batch[ERROR_COLUMN])).drop_columns([ERROR_COLUMN])


def error_rows(batch: pa.Table) -> pa.Table:
    """The failed series of an output batch: ``id`` and ``error``."""
    import pyarrow.compute as pc

    return batch.filter(pc.is_valid(batch[ERROR_COLUMN])).select(["id", ERROR_COLUMN])


def forecast_parquet(
    input_path: str | list[str], output_path: str, *, seed: int | None = None, **kwargs: Any
) -> RayRun:
    """Read long rows from Parquet (``ray.data.read_parquet``: a file, a folder, a list, ``s3://...``),
    forecast them (``forecast_dataset``'s arguments), write ``<output_path>/forecasts/`` and
    ``<output_path>/errors/`` (each a folder of Parquet files; one empty file where there are no rows).
    The forecasts are held in Ray's object store (spilled to disk past it) between the run and the two
    writes. ``seed``: drawn here when not given; returned in ``RayRun``."""
    ray, pa = _import_ray()
    seed = draw_seed() if seed is None else seed
    done = forecast_dataset(ray.data.read_parquet(input_path), seed=seed, **kwargs).materialize()
    schema = _arrow_schema(done)
    out = output_path.rstrip("/")
    forecasts = done.map_batches(forecast_rows, batch_format="pyarrow")
    errors = done.map_batches(error_rows, batch_format="pyarrow")
    rows = _write(forecasts, f"{out}/forecasts", schema.remove(schema.get_field_index(ERROR_COLUMN)))
    failed = _write(errors, f"{out}/errors", pa.schema([schema.field("id"), schema.field(ERROR_COLUMN)]))
    return RayRun(int(seed), f"{out}/forecasts", f"{out}/errors", rows, failed)


def _write(ds: ray.data.Dataset, path: str, schema: pa.Schema) -> int:
    """``ds`` as Parquet under ``path``; Ray writes no file for no rows, so then one empty file. Its row count."""
    _, pa = _import_ray()
    import pyarrow.fs
    import pyarrow.parquet as pq

    rows = ds.count()
    if rows:
        ds.write_parquet(path)
    else:
        fs, folder = pyarrow.fs.FileSystem.from_uri(path)
        fs.create_dir(folder, recursive=True)
        pq.write_table(schema.empty_table(), f"{folder}/empty.parquet", filesystem=fs)
    return rows
