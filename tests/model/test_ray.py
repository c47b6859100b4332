"""model.bulk.ray on a real two-node Ray cluster: a head and a worker started by ``ray start`` as separate
processes on this machine, a universe of real candles forecast by one actor per node and written as
Parquet, number for number what a local ``predict_df`` gives with the seed the driver drew.

The driver is a third process (as a submitted job would be), so this test process never holds Ray state;
the nodes run under a token of this test's own and are ended by process group (and any stray process
naming their private session folder by its pid), whatever the test's outcome.

Cost: 30-55 s on a 2-core machine, the more the busier it is (both nodes up 8-12 s, the run 20-30 s
with the actors' start, the local reference ~3 s, teardown ~3 s). Skipped only when ray is not
installed (failed instead under KRONOS_TEST_REQUIRE_TOOLS=1, as in CI, where it is).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model import InputError, Kronos, KronosPredictor, KronosTokenizer
from model.checkpoints.bundled import bundled_model_path, bundled_tokenizer_path
from model.decoding.table import TableSettings
from model.training.corpus import universe_frame

REQUIRE_TOOLS = os.environ.get("KRONOS_TEST_REQUIRE_TOOLS") == "1"
START_TIMEOUT = 90  # seconds for both nodes to be up and seen by the driver
RUN_TIMEOUT = 240  # seconds for the forecast on the cluster
SLOT = "kronos_slot"  # one per node: an actor asks one, so the two actors land on the two nodes
PRED_LEN = 5
OPTIONS = {"pred_len": PRED_LEN, "sample_count": 2, "quantiles": [0.1, 0.9], "batch_size": 4}


def need_ray():
    if REQUIRE_TOOLS:
        try:
            import pyarrow  # noqa: F401
            import ray.data  # noqa: F401
        except ImportError as exc:
            pytest.fail(f"ray[data] is not installed ({exc}); KRONOS_TEST_REQUIRE_TOOLS=1: this test may not skip")
    pytest.importorskip("pyarrow")
    return pytest.importorskip("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_command() -> str:
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        pytest.fail("the ray command is not on PATH although ray is importable")
    return found


def ray_env(auth: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    # No drain on SIGTERM (it waits up to 30 s for Serve proxies): the node's processes end at once.
    env.update(auth, RAY_USAGE_STATS_ENABLED="0", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    # The driver and the workers import this checkout's model, installed or not (not another checkout's).
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def start_node(args: list[str], temp: Path, name: str, auth: dict[str, str]) -> subprocess.Popen:
    """``ray start ... --block`` in its own process group: ending the group ends the node's processes."""
    env = ray_env(auth)
    # Two logical CPUs a node: one for the node's actor, one for the read, shuffle and write tasks beside it.
    log = open(temp / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
    command = [ray_command(), "start", *args, "--num-cpus", "2", "--resources", f'{{"{SLOT}": 1}}']
    command += ["--object-store-memory", str(150 * 1024**2), "--disable-usage-stats", "--block"]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    proc.log = log
    return proc


def wait_for_port(port: int, head: subprocess.Popen, temp: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray start --head exited ({head.returncode}):\n{(temp / 'head.log').read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.3)
    pytest.fail(f"the head's GCS did not listen on port {port} within {START_TIMEOUT} s")


def stop_node(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.log.close()


def kill_leftovers(temp: Path) -> None:
    """Any process still naming our session folder (ours alone: the folder is new) is killed by its pid."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if str(temp).encode() in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)


# The driver runs as its own process, as a job on a cluster would: it waits for both nodes, forecasts and
# says where the actors ran (this test process never imports ray, so no Ray state is left in it).
DRIVER = """
import json, sys, time
import ray
from model.bulk.ray import forecast_parquet

args = json.loads(sys.argv[1])
ray.init(address=args["address"], log_to_driver=False)
deadline = time.monotonic() + args["start_timeout"]
while True:
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get(args["slot"])]
    if len(nodes) == 2 or time.monotonic() > deadline:
        break
    time.sleep(0.5)
up_s = time.time() - args["began"]
if len(nodes) != 2:
    print("RESULT " + json.dumps({"nodes": nodes, "up_s": up_s}))
    sys.exit(0)
began = time.monotonic()
run = forecast_parquet(args["input"], args["output"], **args["options"])
ran_s = time.monotonic() - began
# ray.util.state needs the dashboard, which these nodes do not start; the GCS's actor table does not.
actors = [a["Address"]["NodeID"] for a in ray._private.state.actors().values()
          if "UniverseForecaster" in a.get("ActorClassName", "")]
result = {"nodes": nodes, "actors": actors, "up_s": up_s, "ran_s": ran_s, "seed": run.seed, "rows": run.rows,
          "failed": run.failed, "forecasts": run.forecasts, "errors": run.errors}
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def cluster():
    need_ray()
    temp = Path(tempfile.mkdtemp(prefix="kr-", dir="/tmp"))  # short: Ray's socket paths live under it
    port = free_port()
    # Ray listens on this machine's address, not loopback (it swaps 127.0.0.1 for a reachable one):
    # token auth with a token of this test's own keeps anyone else from submitting work to it.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    nodes: list[subprocess.Popen] = []
    began = time.time()
    try:
        head = ["--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--include-dashboard=false"]
        nodes.append(start_node([*head, "--temp-dir", str(temp)], temp, "head", auth))
        wait_for_port(port, nodes[0], temp, time.monotonic() + START_TIMEOUT)
        nodes.append(start_node(["--address", f"127.0.0.1:{port}"], temp, "worker", auth))
        yield {"address": f"127.0.0.1:{port}", "env": ray_env(auth), "temp": temp, "began": began}
    finally:
        for proc in reversed(nodes):
            stop_node(proc)
        kill_leftovers(temp)
        shutil.rmtree(temp, ignore_errors=True)


def drive(cluster, **args) -> dict:
    """Run DRIVER against the cluster; its RESULT line as a dict."""
    script = cluster["temp"] / "driver.py"
    script.write_text(DRIVER)
    args.update(address=cluster["address"], slot=SLOT, start_timeout=START_TIMEOUT, began=cluster["began"])
    try:
        done = subprocess.run(
            [sys.executable, str(script), json.dumps(args)],
            env=cluster["env"],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT + RUN_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the driver ran past {START_TIMEOUT + RUN_TIMEOUT} s:\n{str(exc.stderr)[-4000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        logs = "\n".join((cluster["temp"] / f).read_text()[-1500:] for f in ("head.log", "worker.log"))
        pytest.fail(f"the driver failed ({done.returncode}):\n{done.stderr[-4000:]}\n{logs}")
    return json.loads(lines[-1][len("RESULT ") :])


def universe_with_bad_series() -> pd.DataFrame:
    good = universe_frame(24, 80)
    first = good[good["id"] == good["id"].iloc[0]]
    broken = first.assign(id="BROKEN-0")
    broken.loc[broken.index[40], "close"] = np.nan
    short = first.head(1).assign(id="SHORT-0")
    return pd.concat([good, broken, short], ignore_index=True).sample(frac=1, random_state=5)


def by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["id", "step"]).reset_index(drop=True)


def test_a_universe_on_two_nodes_matches_local_predict_df_number_for_number(cluster, tmp_path):
    universe = universe_with_bad_series()
    universe.to_parquet(tmp_path / "universe.parquet")  # one machine: the nodes share this disk
    options = {"concurrency": 2, "num_cpus": 1, "ray_remote_args": {"resources": {SLOT: 1}}, "buckets": 8, **OPTIONS}
    run = drive(cluster, input=str(tmp_path / "universe.parquet"), output=str(tmp_path / "out"), options=options)
    assert len(set(run["nodes"])) == 2, f"{len(run['nodes'])} of 2 nodes alive after {START_TIMEOUT} s"
    assert sorted(run["actors"]) == sorted(run["nodes"]), "one actor per node"

    demo = KronosPredictor(
        Kronos.from_pretrained(bundled_model_path()), KronosTokenizer.from_pretrained(bundled_tokenizer_path())
    )
    local = demo.predict_df(universe, seed=run["seed"], **OPTIONS)  # the seed the driver drew
    got = pd.read_parquet(run["forecasts"])
    got["timestamps"] = got["timestamps"].astype(local["timestamps"].dtype)
    pd.testing.assert_frame_equal(by_id(got), by_id(local), check_exact=True)
    assert run["rows"] == len(local) == 24 * PRED_LEN

    errors = pd.read_parquet(run["errors"])
    assert run["failed"] == 2
    assert dict(zip(errors["id"], errors["error"])) == local.attrs["errors"]
    assert set(local.attrs["errors"]) == {"BROKEN-0", "SHORT-0"}
    print(f"nodes up {run['up_s']:.1f} s after the first ray start; the forecast took {run['ran_s']:.1f} s")


def test_without_ray_the_calls_say_what_to_install(monkeypatch):
    import model.bulk.ray as on_ray  # importable without ray: ray is imported inside the calls

    for name in ("ray", "ray.data", "pyarrow"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'kronos-service\[ray\]'"):
        on_ray.forecast_dataset(None, pred_len=5, seed=1)


def test_bad_arguments_fail_on_the_driver_before_any_work():
    need_ray()
    import pyarrow as pa

    from model.bulk.ray import forecast_dataset, output_schema

    with pytest.raises(InputError, match="seed must be an integer"):
        forecast_dataset(None, pred_len=5, seed=None)
    with pytest.raises(InputError, match="unknown option"):
        forecast_dataset(None, pred_len=5, seed=1, samples=3)
    with pytest.raises(InputError, match="concurrency"):
        forecast_dataset(None, pred_len=5, seed=1, concurrency=0)
    rows = pa.schema([("Symbol", pa.string()), ("Date", pa.timestamp("us", tz="UTC"))])
    rows = rows.append(pa.field("Open", pa.float64()))
    with pytest.raises(InputError, match="missing column"):
        output_schema(rows, TableSettings(pred_len=5, id_column="symbol", timestamp_column="date"))
    full = pa.schema([(c, pa.float64()) for c in ("Open", "High", "Low", "Close", "Volume")])
    full = full.insert(0, pa.field("Date", pa.timestamp("us", tz="UTC"))).insert(0, pa.field("Symbol", pa.int64()))
    schema = output_schema(full, TableSettings(pred_len=5, id_column="symbol", timestamp_column="date", sample_count=3))
    assert schema.names == ["id", "timestamps", "step", "open", "high", "low", "close", "volume", "p_up", "error"]
    assert schema.field("id").type == pa.int64() and schema.field("timestamps").type == pa.timestamp("ns", tz="UTC")


def test_buckets_are_a_stable_hash_of_the_id_text():
    from model.bulk.ray import bucket_of

    ids = pd.Series(["AAPL-0", "EURUSD-3", 7, "7"], dtype=object)
    # pinned: pandas' hash has a fixed key (no PYTHONHASHSEED), so every process and node agrees
    assert list(bucket_of(ids, 8)) == [5, 6, 0, 0]  # 7 and "7" share a bucket as they share a seed
    assert list(bucket_of(pd.Series(["AAPL-0", "EURUSD-3"]), 8)) == [5, 6]
