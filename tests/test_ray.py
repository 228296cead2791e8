"""The ray executor on a real local Ray instance (loopback): same rows as the local executor."""

import os

import pytest

from side_bench import run_suite
from tests.cli_helpers import SECOND_ATTACK, TIMING

if os.environ.get("CI") != "true":  # under CI ray is installed (dev extra) and this must run
    pytest.importorskip("ray")



def values(rows):
    return sorted(tuple((k, repr(v)) for k, v in sorted(row.items()) if k not in TIMING)
                  for row in rows.to_dict("records"))


def test_ray_executor_gives_the_local_rows(write_suite, tmp_path):
    import ray

    suite = write_suite(extra=SECOND_ATTACK, replace={"scales = [16, 32]": "scales = [16]"})
    local = run_suite(str(suite), results_dir=tmp_path / "local", cache_dir=tmp_path / "cache")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"SIDE_BENCH_PLUGINS": "side-bench"}})
    try:
        workers = ray.available_resources().get("CPU")
        remote = run_suite(str(suite), results_dir=tmp_path / "ray", cache_dir=tmp_path / "cache-ray",
                           executor="ray")
    finally:
        ray.shutdown()
    assert workers == 2
    assert len(local) == len(remote) == 16  # 2 attacks x 8 rows, two cells on two workers
    assert values(local) == values(remote)
