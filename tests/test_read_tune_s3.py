"""The head's reader of Tune output (rayscale/onhead/read_tune.py) on an experiment that a
real Tune run wrote straight to S3 (a local S3-compatible server, moto), with a callback
from a module the reader cannot import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import ROOT, s3_server

pytestmark = pytest.mark.cluster

READER = ROOT / "rayscale" / "onhead" / "read_tune.py"

SEARCH = textwrap.dedent(
    """
    import sys
    import ray
    from ray import tune
    import mycallbacks

    def trainable(config):
        for i in range(3):
            tune.report({"score": config["x"] * (i + 1)})

    ray.init(num_cpus=2, include_dashboard=False)
    tune.Tuner(
        trainable,
        param_space={"x": tune.grid_search([1, 2, 3])},
        tune_config=tune.TuneConfig(metric="score", mode="max"),
        run_config=tune.RunConfig(
            name="exp", storage_path=sys.argv[1], callbacks=[mycallbacks.Noted()], verbose=0
        ),
    ).fit()
    ray.shutdown()
    """
)


def test_reader_finds_and_reads_an_experiment_tune_wrote_to_s3(tmp_path):
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "mycallbacks.py").write_text(
        "from ray import tune\n\nclass Noted(tune.Callback):\n    pass\n"
    )
    with s3_server() as s3:
        s3.make_bucket("runs")
        # A fresh home: a Ray started here must not find (or leave) a token of this user's.
        env = {**os.environ, **s3.env, "HOME": str(tmp_path)}
        env.pop("RAY_ADDRESS", None)
        # The reader imports job/tune_format.py, which the launcher ships beside it.
        reader_env = {**env, "PYTHONPATH": str(ROOT / "job")}
        since = time.time()
        p = subprocess.run(
            [sys.executable, "-c", SEARCH, "s3://runs/tune"],
            env={**env, "PYTHONPATH": str(tmp_path / "mod")},
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr[-3000:]
        s3.put("runs/tune/exp/rayscale-extra.json", b'{"note": 1}')
        until = time.time()
        r = subprocess.run(
            [sys.executable, str(READER), "--since", str(since), "--until", str(until),
             "--path", "s3://runs/tune"],
            env=reader_env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        line = next(x for x in r.stdout.splitlines() if x.startswith("RAYSCALE_TUNE "))
        doc = json.loads(line[len("RAYSCALE_TUNE ") :])
        assert doc["warning"] is None  # this Ray is the minor Tune's files were read from
        (exp,) = doc["experiments"]
        assert exp["path"] == "s3://runs/tune/exp"
        assert (exp["metric"], exp["mode"]) == ("score", "max")  # from the saved TuneConfig
        assert exp["extras"] == {"rayscale-extra.json": {"note": 1}}
        finals = sorted(t["rows"][-1][3] for t in exp["trials"])
        assert finals == [3, 6, 9] and all(len(t["rows"]) == 3 for t in exp["trials"])
        # Outside the job's time window nothing is found.
        r = subprocess.run(
            [sys.executable, str(READER), "--since", "0", "--until", "1",
             "--path", "s3://runs/tune"],
            env=reader_env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert '"experiments": []' in r.stdout
