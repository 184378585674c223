"""The tuning job's own input handling and determinism, run without a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import DATASETS, ROOT, assert_one_line_error, needs_datasets

sys.path.insert(0, str(ROOT / "job"))
import data as jobdata  # noqa: E402
import space as jobspace  # noqa: E402
import storage as jobstorage  # noqa: E402


def run_job(*args, cwd=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "job" / "tune_xgboost.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd or ROOT,
    )


def test_synthetic_is_deterministic_and_sized():
    X1, y1 = jobdata.synthetic(500, 12, 0.5, 7)
    X2, y2 = jobdata.synthetic(500, 12, 0.5, 7)
    X3, _ = jobdata.synthetic(500, 12, 0.5, 8)
    assert X1.shape == (500, 12) and y1.shape == (500,)
    assert np.array_equal(X1.to_numpy(), X2.to_numpy()) and np.array_equal(y1, y2)
    assert not np.array_equal(X1.to_numpy(), X3.to_numpy())


def test_synthetic_spec_parsing():
    assert jobdata.parse_synthetic("synthetic:rows=100,features=3,noise=0,seed=2") == {
        "rows": 100,
        "features": 3,
        "noise": 0.0,
        "seed": 2,
    }
    with pytest.raises(jobdata.InputError, match="unknown part"):
        jobdata.parse_synthetic("synthetic:rowz=100")


@needs_datasets
def test_categorical_columns_become_categories():
    t = jobdata.load(str(DATASETS / "insurance.csv"), "charges")
    assert t.rows == 1338 and sorted(t.categorical) == ["region", "sex", "smoker"]
    assert str(t.X["smoker"].dtype) == "category"
    t2 = jobdata.load(str(DATASETS / "concrete.csv"), "strength")
    assert t2.categorical == [] and t2.features == 8


@needs_datasets
def test_parquet_reads_like_csv(tmp_path):
    import pandas as pd

    pd.read_csv(DATASETS / "concrete.csv").to_parquet(tmp_path / "c.parquet")
    t = jobdata.load(str(tmp_path / "c.parquet"), "strength")
    assert t.rows == 1030 and t.features == 8


def test_configs_are_the_same_for_the_same_seed():
    sp = jobspace.load(str(ROOT / "job" / "search_space.yaml"))
    a = jobspace.draw(sp, 8, 3, 250)
    assert a == jobspace.draw(sp, 8, 3, 250)
    assert a != jobspace.draw(sp, 8, 4, 250)
    assert all(c["num_boost_round"] <= 250 and 3 <= c["max_depth"] <= 9 for c in a)
    assert all(0.02 <= c["learning_rate"] <= 0.3 for c in a)


@needs_datasets
def test_sequential_mode_runs_and_reports(tmp_path):
    p = run_job(
        "--mode",
        "sequential",
        "--data",
        DATASETS / "concrete.csv",
        "--target",
        "strength",
        "--num-samples",
        3,
        "--max-rounds",
        30,
        "--storage-path",
        tmp_path,
        "--name",
        "s",
    )
    assert p.returncode == 0, p.stderr
    line = [x for x in p.stdout.splitlines() if x.startswith("RAYSCALE_RESULT ")]
    assert len(line) == 1
    import json

    rec = json.loads(line[0].split(" ", 1)[1])
    assert rec["trials_completed"] == 3 and rec["tuned"]["r2"] > 0.5
    assert (
        json.loads((tmp_path / "s" / "rayscale-result.json").read_text())["best_config"]
        == rec["best_config"]
    )


def _write(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    return f


BAD = [
    (lambda t: ["--data", "/nope.csv"], ["not found"]),
    (lambda t: ["--data", _write(t, "empty.csv", "")], ["empty"]),
    (lambda t: ["--data", _write(t, "hdr.csv", "a,b\n"), "--target", "b"], ["no rows"]),
    pytest.param(
        lambda t: ["--data", DATASETS / "insurance.csv"],
        ["--target is required"],
        marks=needs_datasets,
    ),
    pytest.param(
        lambda t: ["--data", DATASETS / "insurance.csv", "--target", "x"],
        ["target column 'x'"],
        marks=needs_datasets,
    ),
    pytest.param(
        lambda t: ["--data", DATASETS / "insurance.csv", "--target", "region"],
        ["not numeric"],
        marks=needs_datasets,
    ),
    (
        lambda t: ["--data", _write(t, "const.csv", "a,y\n" + "1,5\n" * 30), "--target", "y"],
        ["constant"],
    ),
    (
        lambda t: [
            "--data",
            _write(t, "nan.csv", "a,b,y\n" + "".join(f"{i},,{i}\n" for i in range(30))),
            "--target",
            "y",
        ],
        ["entirely empty"],
    ),
    (lambda t: ["--data", _write(t, "bad.csv", 'a,y\n"1,2\n3,4,5,6\n'), "--target", "y"], ["csv"]),
    (lambda t: ["--data", "synthetic:rows=abc"], ["synthetic"]),
    (lambda t: ["--num-samples", "0"], ["--num-samples"]),
    # The run name is a folder under the storage path: never a path of its own.
    (lambda t: ["--name", "../x"], ["--name", "'../x' is not"]),
    (lambda t: ["--name", ".hidden"], ["--name"]),
    (lambda t: ["--num-samples", "x"], ["--num-samples"]),
    (lambda t: ["--memory-per-trial", "0"], ["--memory-per-trial", "must be > 0"]),
    (lambda t: ["--checkpoint-min-s", "-1"], ["--checkpoint-min-s must be >= 0"]),
    (lambda t: ["--checkpoint-min-s", "nan"], ["--checkpoint-min-s must be >= 0"]),
    (lambda t: ["--search-alg", "hyperband"], ["--search-alg", "invalid choice"]),
    (lambda t: ["--scheduler", "hyperband"], ["--scheduler"]),
    (lambda t: ["--test-size", "0.9"], ["--test-size"]),
    (lambda t: ["--grace-rounds", "500", "--max-rounds", "100"], ["--grace-rounds"]),
    (lambda t: ["--search-space", _write(t, "s.yaml", "a: [unclosed")], ["not valid yaml"]),
    (
        lambda t: ["--search-space", _write(t, "s.yaml", "eta_typo: {uniform: [0, 1]}")],
        ["unknown parameter"],
    ),
    (
        lambda t: ["--search-space", _write(t, "s.yaml", "subsample: {uniform: [0.9, 0.5]}")],
        ["empty range"],
    ),
    (lambda t: ["--search-space", t / "missing.yaml"], ["not found"]),
    (
        lambda t: ["--mlflow", "file:///tmp/mlruns"],
        ["--mlflow", "not a tracking server URI", "http(s)://"],
    ),
    (lambda t: ["--mlflow", "http://"], ["--mlflow", "not a tracking server URI"]),
    # Nothing listens on port 1: refused in seconds, not after the client's minutes of retries.
    (
        lambda t: ["--mlflow", "http://127.0.0.1:1"],
        ["cannot reach the MLflow server at http://127.0.0.1:1"],
    ),
]


@pytest.mark.parametrize("make_args,needles", BAD)
def test_bad_job_input(tmp_path, make_args, needles):
    p = run_job(*make_args(tmp_path), "--mode", "sequential", "--storage-path", tmp_path)
    assert_one_line_error(p, "error:", *needles)


def test_storage_path_that_cannot_be_created_fails_before_the_work(tmp_path):
    """Sequential and joblib write their record there too: refused before the search."""
    (tmp_path / "a-file").write_text("")
    bad = tmp_path / "a-file" / "results"
    p = run_job("--mode", "sequential", "--storage-path", bad)
    assert_one_line_error(p, f"--storage-path {bad} cannot be created", "can write")
    assert "data:" not in p.stdout  # nothing loaded, nothing run


@needs_datasets
def test_data_from_object_storage(tmp_path):
    """--data s3://... through pyarrow, against a local S3-compatible server (moto), not a mock."""
    from conftest import s3_server

    with s3_server() as s3:
        s3.make_bucket("tables")
        s3.put("tables/concrete.csv", (DATASETS / "concrete.csv").read_bytes())
        env = s3.env
        t = _with_env(env, lambda: jobdata.load("s3://tables/concrete.csv", "strength"))
        assert t.rows == 1030 and t.features == 8
        with pytest.raises(
            jobdata.InputError, match="data object 's3://tables/nope.csv' not found"
        ):
            _with_env(env, lambda: jobdata.load("s3://tables/nope.csv", "strength"))
        with pytest.raises(jobdata.InputError, match="cannot read data 's3://tables/concrete.csv'"):
            _with_env(
                {**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
                lambda: jobdata.load("s3://tables/concrete.csv", "strength"),
            )


def _with_env(env: dict, fn):

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return fn()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_storage_faults_are_told_from_trial_errors():
    """A resumed search expects the checkpoints that vanished with the folder: no fault."""
    gone = "ValueError: Could not recover from checkpoint as it does not exist on storage anymore"
    assert jobstorage.fault_of(gone) == jobstorage.VANISHED
    assert jobstorage.fault_of(gone, restoring=True) is None
    setup = "RuntimeError: Unable to set up cluster storage with the following settings:"
    assert jobstorage.fault_of(setup, restoring=True) == jobstorage.VANISHED
    assert jobstorage.fault_of("OSError: [Errno 28] No space left on device") == (
        "no space left on the device"
    )
    assert jobstorage.fault_of("ValueError: max_depth must be > 0") is None


def test_tunes_state_cut_short_on_storage_is_put_back_from_the_kept_copy(tmp_path, monkeypatch):
    """The job keeps whole copies of Tune's experiment state, written to the head's disk
    only after a storage fault; a file on the storage path that no longer parses (a write
    that ran out of room) gets the kept copy back, whole files are left alone, a cut-short
    file is never kept over a whole one, and the copies go once used."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "head"))
    exp = tmp_path / "results" / "search"
    exp.mkdir(parents=True)
    whole = json.dumps({"trials": ["x" * 5000]})
    (exp / "experiment_state-a.json").write_text(whole)
    (exp / "basic-variant-state-a.json").write_text('{"same": 1}')
    copy = jobstorage.StateCopy(str(exp), "search", every_s=0)
    copy.save()
    (exp / "experiment_state-a.json").write_text(whole[:4096])  # cut short at a page
    copy.save()  # does not keep the cut copy
    assert copy.put_back() == []  # nothing on disk before a fault
    copy.persist()
    assert copy.put_back() == ["experiment_state-a.json"]
    assert (exp / "experiment_state-a.json").read_text() == whole
    assert not (tmp_path / "head" / "rayscale" / "tune-state" / "search").exists()  # used up
    # Copies in a folder another user could write (made first by them) are never restored.
    copy.persist()
    os.chmod(tmp_path / "head" / "rayscale" / "tune-state", 0o777)
    (exp / "experiment_state-a.json").write_text(whole[:10])
    assert copy.put_back() == []


def test_tunes_state_copies_are_kept_in_this_users_own_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    copy = jobstorage.StateCopy(str(tmp_path / "exp"), "search")
    copy.persist()
    assert copy.keep == str(
        tmp_path / "home" / ".local" / "state" / "rayscale" / "tune-state" / "search"
    )
    assert os.stat(copy.keep).st_uid == os.getuid() and os.stat(copy.keep).st_mode & 0o077 == 0
