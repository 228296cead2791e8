"""Surviving faults: SIGKILL mid-suite, two processes on one folder, Ctrl-C, stale locks,
torn temporaries, and checkpoints that carry code."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from side_bench import BenchError
from side_bench.results.records import read_rows_file
from side_bench.results.store import RunStore, merge_manifests

THREE_CELLS = {"scales = [16, 32]": "scales = [16, 24, 32]"}
TIMING = ("seconds", "started", "finished", "stage_seconds")


def command(suite, tmp_path, results="results"):
    return [sys.executable, "-m", "side_bench", "run", "--suite", str(suite),
            "--results", str(tmp_path / results), "--cache-dir", str(tmp_path / "cache")]


def environment():
    # Same torch threads as the test process (conftest), so rows match bit for bit.
    return {**os.environ, "OMP_NUM_THREADS": "2", "SIDE_BENCH_PLUGINS": "side-bench", "COLUMNS": "200"}


def start(suite, tmp_path, results="results"):
    # A shell's background job has SIGINT ignored, and a child inherits that; Python then
    # installs no KeyboardInterrupt handler. Restore the default so Ctrl-C reaches the run.
    return subprocess.Popen(command(suite, tmp_path, results), env=environment(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def run_dir(tmp_path, results="results"):
    found = list((tmp_path / results / "tiny").iterdir()) if (tmp_path / results / "tiny").exists() else []
    return found[0] if found else None


def wait_for_first_cell(process, tmp_path, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        folder = run_dir(tmp_path)
        if folder and list((folder / "cells").glob("*.json")):
            return folder
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError("no cell finished in time")


def values(rows):
    return sorted(json.dumps({k: v for k, v in row.items() if k not in TIMING}, sort_keys=True) for row in rows)


def assert_every_file_parses(folder: Path):
    for path in folder.rglob("*.json"):
        json.loads(path.read_text())
    for path in folder.rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            json.loads(line)


def test_sigkill_mid_suite_then_rerun_equals_an_uninterrupted_run(write_suite, tmp_path):
    from side_bench import run_suite

    suite = write_suite(replace=THREE_CELLS)
    process = start(suite, tmp_path)
    folder = wait_for_first_cell(process, tmp_path)
    process.send_signal(signal.SIGKILL)
    process.wait()
    store = RunStore(folder)
    done_at_kill = sum(r["status"] == "done" for r in store.records())
    assert 1 <= done_at_kill < 3, "the kill came after the last cell: nothing was interrupted"
    assert_every_file_parses(folder)
    # What a crash can leave: a half-written temporary, and the lock of the cell in flight.
    (folder / "cells" / ".0123abcd.json.x1y2.tmp").write_text('{"status": "done", "rows": [')
    (folder / "cells" / "0123abcd.lock").write_text(json.dumps({"pid": process.pid, "host": socket.gethostname()}))

    rerun = subprocess.run(command(suite, tmp_path), env=environment(), text=True, capture_output=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"3 cells ({done_at_kill} already done)" in " ".join(rerun.stderr.split())
    assert_every_file_parses(folder)
    assert not list((folder / "cells").glob("[!0]*.lock"))  # only the hand-made stray lock remains

    run_suite(str(suite), results_dir=tmp_path / "uninterrupted", cache_dir=tmp_path / "cache")
    whole, resumed = RunStore(run_dir(tmp_path, "uninterrupted")).rows(), store.rows()
    assert len(resumed) == len(whole) == 24
    assert values(resumed) == values(whole)
    assert values(read_rows_file(folder / "rows.jsonl")) == values(resumed)  # rows.jsonl agrees with cells/


def test_two_processes_on_one_folder_compute_each_cell_once(write_suite, tmp_path):
    suite = write_suite(replace=THREE_CELLS)
    first, second = start(suite, tmp_path), start(suite, tmp_path)
    outputs = [p.communicate(timeout=600) for p in (first, second)]
    assert first.returncode == second.returncode == 0, outputs
    computed = sum(" ".join(err.split()).count(": done (") for _, err in outputs)
    assert computed == 3, outputs  # every cell once, by one of the two
    folder = run_dir(tmp_path)
    assert_every_file_parses(folder)
    store = RunStore(folder)
    assert len(store.rows()) == 24 and len(json.loads((folder / "manifest.json").read_text())["cells"]) == 3
    assert values(read_rows_file(folder / "rows.jsonl")) == values(store.rows())
    assert not list((folder / "cells").glob("*.lock"))


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(write_suite, tmp_path):
    # cells long enough (training) that the run is still going when Ctrl-C comes
    suite = write_suite(replace={**THREE_CELLS, "steps = 12": "steps = 3000"})
    process = start(suite, tmp_path)
    folder = wait_for_first_cell(process, tmp_path)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted; finished cells are saved. Resume with the same command" in " ".join(stderr.split())
    assert not list((folder / "cells").glob("*.lock"))  # the cell in flight is free for the rerun
    assert_every_file_parses(folder)


def test_stale_and_live_locks(tmp_path):
    store, other = RunStore(tmp_path / "run"), RunStore(tmp_path / "run")
    assert store.claim("a") and not other.claim("a")  # held by a live process (this one)
    store.release("a")
    assert other.claim("a")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run" / "cells" / "b.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    assert store.claim("b")  # its process is gone: taken over
    (tmp_path / "run" / "cells" / "c.lock").write_text(json.dumps({"pid": dead.pid, "host": "elsewhere"}))
    assert not store.claim("c")  # another host's process cannot be checked: respected


def test_manifests_merge_rather_than_overwrite(tmp_path):
    cell = lambda h, attack: {"config_hash": h, "scale": 16, "attack": attack, "seed": 0}  # noqa: E731
    merged = merge_manifests({"started": "2024-01-02", "cells": [cell("x", "a")]},
                             {"started": "2024-01-03", "cells": [cell("y", "b")], "finished": None})
    assert merged["started"] == "2024-01-02" and [c["config_hash"] for c in merged["cells"]] == ["x", "y"]
    store = RunStore(tmp_path)
    store.write_manifest({"started": "b", "cells": [cell("x", "a")]})
    store.write_manifest({"started": "c", "cells": [cell("y", "b")]})
    assert len(store.read_manifest()["cells"]) == 2 and store.read_manifest()["started"] == "b"
    # the same cell (scale, attack, seed) with another config (a plugin changed): the newer one
    store.write_manifest({"started": "d", "cells": [cell("z", "a")]})
    assert sorted(c["config_hash"] for c in store.read_manifest()["cells"]) == ["y", "z"]


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_with_a_pickle_payload_is_refused_without_running_it(tmp_path):
    from side_bench_builtins.diffusers_model import DiffusersModel

    folder, marker = tmp_path / "model", tmp_path / "pwned"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 8, "in_channels": 1}))
    (folder / "scheduler_config.json").write_text(json.dumps({"num_train_timesteps": 1000}))
    torch.save({"conv.weight": torch.zeros(1), "evil": Payload(marker)}, folder / "diffusion_pytorch_model.bin")
    model = DiffusersModel(DiffusersModel.Settings(path=str(folder)))
    with pytest.raises(BenchError, match="not loadable with weights_only=True") as caught:
        model.load_unet()
    assert "\n" not in str(caught.value)
    assert not marker.exists()  # the payload never ran
