"""What rayscale knows of Tune that Tune does not publish as an interface: the files of an
experiment's folder, what tuner.pkl holds, the error file's layout, and the words a storage
fault or a lost node shows up as. All of it was read from Ray TESTED's Tune; `check` says in
one line when the running Ray is another minor, where any of it may no longer hold.

One module for the job (job/) and the head's readers (rayscale/onhead/, whose upload
carries a copy beside them); it imports the standard library only, and Ray where asked.
"""

from __future__ import annotations

import io
import pickle
import re
import sys
import types

TESTED = "2.60"  # the Ray minor this knowledge was read from (tests/test_layout.py: the pin's)

# An experiment's folder (<storage_path>/<name>).
TUNER_FILE = "tuner.pkl"  # written once at the start; `Tuner.restore` cannot do without it
STATE_GLOB = "experiment_state-*.json"  # the driver's state, rewritten in place as it runs
STATE_SUFFIX = ".json"  # the state files at the top of the folder (StateCopy keeps them)
CHECKPOINT_PREFIX = "checkpoint_"  # a trial's checkpoint folders, under its own folder
ERROR_SEPARATOR = "Failure # "  # each failure of a trial appended to its error file

# Tune's own words for a storage path that failed under it.
STORAGE_SETUP_FAILED = "Unable to set up cluster storage"
CHECKPOINT_GONE = "does not exist on storage"
# Ray's errors of a lost process or node as Tune hands them back as text (a TuneError),
# beyond the ray.exceptions classes job/cluster.py names: subclasses of those, whose own
# names the text carries.
LOST_NODE_ERRORS = ("ActorDiedError", "ActorUnavailableError")

# Tune's console lines at its default verbosity (ray.tune.experimental.output): how many
# trials the search runs (its opening table), and each trial's start and end.
NUM_TRIALS = re.compile(r"\bNumber of trials\s+(\d+)\b")
TRIAL_STARTED = re.compile(r"^Trial (\S+) started with(?:out custom)? configuration")
TRIAL_ENDED = re.compile(r"^Trial (\S+) (?:completed|errored) after \d+ iterations")

_said = False


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def check(version: str | None = None) -> str | None:
    """One line when the running Ray is not the minor this knowledge was read from; else None."""
    if version is None:
        import ray

        version = ray.__version__
    if minor(version) == TESTED:
        return None
    return (
        f"rayscale: Tune's files and messages were read from Ray {TESTED}, this is Ray "
        f"{version}: a search's progress, storage faults and its Tune output may be read "
        "wrong; run the launcher's Ray (pip install --require-hashes -r job/requirements.txt)"
    )


def warn_once() -> None:
    """`check`'s line, once per process, on stderr (where the job's log shows it)."""
    global _said
    line = None if _said else check()
    _said = True
    if line:
        print(line, file=sys.stderr, flush=True)


class _Stub:
    """Stands in for a class this process cannot import (a script's callback, say)."""

    def __init__(self, *a, **k):
        pass

    def __setstate__(self, state):
        pass


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return _Stub


def tune_config(data: bytes) -> tuple[str | None, str | None]:
    """The metric and mode of the run's TuneConfig, from TUNER_FILE's bytes; (None, None)
    where it cannot be read."""
    try:
        state = _Unpickler(io.BytesIO(data)).load()
        cfg = next(v for v in state.values() if type(v).__name__ == "TuneConfig")
        return cfg.metric, cfg.mode
    except Exception:
        return None, None


def _stub_module(name: str) -> None:
    """A module this process lacks, for unpickling only: its names are stubs."""
    mod = types.ModuleType(name)
    mod.__path__ = []  # so that its submodules import too
    mod.__getattr__ = lambda attr: _Stub
    sys.modules[name] = mod


def analysis(exp_dir: str):
    """Tune's public ExperimentAnalysis of the folder, read where the job's own modules are
    missing: Tune's state pickles objects of the script's (a callback, a stopper), which the
    results do not need."""
    from ray.tune import ExperimentAnalysis

    for _ in range(20):
        try:
            return ExperimentAnalysis(exp_dir)
        except ModuleNotFoundError as e:
            if not e.name or e.name in sys.modules:
                raise
            _stub_module(e.name)
    return ExperimentAnalysis(exp_dir)


def last_failure(error_text: str) -> str:
    """A trial's error file holds each of its failures, a restored trial's earlier ones
    too: the last."""
    return error_text.rsplit(ERROR_SEPARATOR, 1)[-1]
