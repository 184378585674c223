"""Experiment tracking: each trial of the search, and its outcome, in an MLflow server.

Optional: mlflow (the `mlflow-skinny` client is enough) is imported only when --mlflow is
given. The logging runs in the Tune driver, one `log_batch` request per reported result
(Ray's MLflowLoggerCallback makes one request per metric, a dozen per report, all inside
Tune's control loop).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from urllib.parse import urlparse

from data import InputError, first_line

SCHEMES = ("http", "https", "databricks")
# What a trial reports that is worth a chart; the rest of Tune's result is bookkeeping.
TRIAL_METRICS = ("rmse", "train_s")


def check_uri(uri: str) -> str:
    scheme = urlparse(uri).scheme
    if scheme not in SCHEMES or (scheme != "databricks" and not urlparse(uri).netloc):
        raise InputError(
            f"--mlflow {uri!r} is not a tracking server URI; give http(s)://HOST:PORT "
            "(the driver runs on the cluster's head: a file or database URI would be "
            "written there and lost with the cluster)"
        )
    return uri.rstrip("/")


@contextmanager
def _quick_failure():
    """The client retries a dead server for minutes by default; the start-up probe should not."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: v for k, v in keys.items() if saved[k] is None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


class Tracker:
    """One MLflow experiment; a run per trial and one `summary` run per search, all tagged
    `rayscale.search=<name>` so one search's runs can be found together."""

    def __init__(self, uri: str, experiment: str, search: str):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise InputError(
                "--mlflow needs the MLflow client on the cluster's head: pip install "
                "'rayscale[mlflow]' (or mlflow-skinny) into the job's environment"
            ) from None
        self.uri, self.experiment, self.search = uri, experiment, search
        self.failed: str | None = None
        self.client = MlflowClient(tracking_uri=uri)
        with _quick_failure():
            try:
                found = self.client.get_experiment_by_name(experiment)
                self.experiment_id = (
                    found.experiment_id if found else self.client.create_experiment(experiment)
                )
            except Exception as e:  # mlflow raises MlflowException or a requests error
                text = str(e)
                why = (
                    "nothing answers there"
                    if "Max retries exceeded" in text or "refused" in text
                    else first_line(e, 160)
                )
                raise InputError(
                    f"cannot reach the MLflow server at {uri} ({why}); start it, or fix "
                    "--mlflow (the URI must be reachable from the cluster's head)"
                ) from None

    def _guarded(self, fn, *args, **kwargs) -> None:
        """A tracking server that fails mid-search must not take the search down with it:
        say so once and stop tracking; the search and its record go on."""
        if self.failed:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:
            self.failed = f"{type(e).__name__}: {first_line(e, 200)}"
            print(
                f"warning: MLflow tracking stopped ({self.failed}); the search goes on", flush=True
            )

    def _start(self, name: str, kind: str) -> str:
        tags = {"rayscale.search": self.search, "rayscale.kind": kind}
        return self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id

    def callback(self):
        """A Tune logger callback: params at a trial's start, its metrics at every report
        (step = boosting rounds), the node it ran on, its end status."""
        from mlflow.entities import Metric, Param, RunTag
        from ray.tune.logger import LoggerCallback
        from ray.tune.utils import flatten_dict

        outer = self

        class _MLflow(LoggerCallback):
            def __init__(self):
                self.runs: dict[str, str] = {}
                self.placed: set[str] = set()

            def on_trial_start(self, *args, **kwargs):
                outer._guarded(super().on_trial_start, *args, **kwargs)

            def on_trial_result(self, *args, **kwargs):
                outer._guarded(super().on_trial_result, *args, **kwargs)

            def on_trial_complete(self, *args, **kwargs):
                outer._guarded(super().on_trial_complete, *args, **kwargs)

            def on_trial_error(self, *args, **kwargs):
                outer._guarded(super().on_trial_error, *args, **kwargs)

            def log_trial_start(self, trial):
                if trial.trial_id in self.runs:  # a retry continues its run
                    return
                run_id = outer._start(str(trial), "trial")
                self.runs[trial.trial_id] = run_id
                params = flatten_dict(trial.config.get("cfg", trial.config), delimiter=".")
                outer.client.log_batch(
                    run_id,
                    params=[Param(k, str(v)) for k, v in params.items()],
                    tags=[RunTag("trial_id", trial.trial_id)],
                )

            def log_trial_result(self, iteration, trial, result):
                run_id = self.runs.get(trial.trial_id)
                if run_id is None:
                    return
                step, now = int(result.get("rounds", iteration)), int(time.time() * 1000)
                metrics = [
                    Metric(k, float(result[k]), now, step)
                    for k in TRIAL_METRICS
                    if isinstance(result.get(k), (int, float))
                ]
                tags = []
                if trial.trial_id not in self.placed:  # where it ran, once
                    self.placed.add(trial.trial_id)
                    tags = [
                        RunTag(k, str(result[k]))
                        for k in ("node_id", "node_ip", "hostname", "pid")
                        if result.get(k) is not None
                    ]
                outer.client.log_batch(run_id, metrics=metrics, tags=tags)

            def log_trial_end(self, trial, failed=False):
                run_id = self.runs.get(trial.trial_id)
                if run_id is not None:
                    outer.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

        return _MLflow()

    def summary(self, record: dict) -> str:
        """The search's outcome as one run: its settings, the best config, the baseline and
        tuned test scores, its time. Returns the run's id."""
        from mlflow.entities import Metric, Param

        run_id = self._start(f"{self.search}-summary", "summary")
        now = int(time.time() * 1000)
        settings = {
            k: record.get(k)
            for k in (
                "mode",
                "data",
                "search_alg",
                "scheduler",
                "num_samples",
                "cpus_per_trial",
                "max_rounds",
            )
        }
        params = {
            **settings,
            **{f"best.{k}": v for k, v in (record.get("best_config") or {}).items()},
        }
        scores = {
            f"{model}_{k}": (record.get(model) or {}).get(k)
            for model in ("baseline", "tuned")
            for k in ("rmse", "mae", "r2")
        }
        scores.update(
            wall_s=record.get("wall_s"),
            trials_completed=record.get("trials_completed"),
            trials_errored=record.get("trials_errored"),
        )
        self.client.log_batch(
            run_id,
            params=[Param(k, str(v)) for k, v in params.items() if v is not None],
            metrics=[
                Metric(k, float(v), now, 0)
                for k, v in scores.items()
                if isinstance(v, (int, float))
            ],
        )
        self.client.set_terminated(
            run_id, "FINISHED" if record.get("status") == "succeeded" else "FAILED"
        )
        return run_id

    def record(self, record: dict) -> dict:
        """What the job's record says about tracking: where, and whether all of it landed."""
        out = {"uri": self.uri, "experiment": self.experiment, "experiment_id": self.experiment_id}
        self._guarded(lambda: out.update(summary_run_id=self.summary(record)))
        if self.failed:
            out["error"] = self.failed
        return out
