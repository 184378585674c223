"""bench/cpu_profile.py's accounting: which role a cluster process's CPU goes to, and
the CPU inside a window from cumulative clocks sampled around it."""

import threading
import time
from pathlib import Path

import psutil
import pytest

from bench import cpu_profile


class Proc:
    """What role() reads of a process: its command line and name, as psutil gives them."""

    def __init__(self, cmd: str, name: str = "python"):
        self.cmd, self._name = cmd, name

    def cmdline(self):
        return self.cmd.split()

    def name(self):
        return self._name


@pytest.mark.parametrize(
    "cmd, name, role",
    [
        ("ray::ImplicitFunc.train", "python", "trials and tasks"),
        ("ray::JobSupervisor", "python", "job supervisor"),
        ("ray::IDLE", "python", "idle workers"),
        # Ray titles its agents as it titles workers: they are not trials.
        ("ray::DashboardAgent", "python", "dashboard and agents"),
        ("ray::RuntimeEnvAgent", "python", "dashboard and agents"),
        ("python /x/ray/dashboard/dashboard.py --host=127.0.0.1", "python", "dashboard and agents"),
        ("/x/raylet --raylet_socket_name=/tmp/r", "raylet", "raylets"),
        ("/x/gcs_server --log_dir=/tmp/r", "gcs_server", "gcs"),
        ("python tune_xgboost.py --name profile-fifo", "python", "driver"),
    ],
)
def test_role_of_each_cluster_process(cmd, name, role):
    assert cpu_profile.role(Proc(cmd, name)) == role


def test_spent_counts_only_the_window():
    samples = [
        # (time, id, label, cumulative CPU s)
        (0.0, 1, "a", 10.0),
        (1.0, 1, "a", 10.5),  # the last sample at or before the window's start
        (2.0, 1, "a", 11.0),
        (3.0, 1, "a", 12.0),  # the last inside it
        (4.0, 1, "a", 20.0),  # after it: not counted
        (2.5, 2, "b", 0.3),  # started inside the window: all of it counts
        (2.9, 2, "b", 0.4),
        (0.5, 3, "a", 1.0),  # id 3 adds to label a
        (2.0, 3, "a", 1.2),
    ]
    out = cpu_profile.spent(samples, 1.0, 3.0, lambda i, label: label)
    assert out["a"] == pytest.approx((12.0 - 10.5) + (1.2 - 1.0))
    assert out["b"] == pytest.approx(0.4)


def test_threads_of_names_the_main_thread_and_the_others():
    spun, stop = threading.Event(), threading.Event()

    def spin():
        # 50 ms of its own CPU (the kernel counts threads' time in 10 ms ticks), then wait
        # alive while its clock is read.
        while time.thread_time() < 0.05:
            sum(range(1000))
        spun.set()
        stop.wait(30)

    t = threading.Thread(target=spin, name="spinner")
    t.start()
    try:
        # Linux names a thread from Python's name only where Python sets it (3.11 does not):
        # set it as Ray's C++ threads set theirs.
        Path(f"/proc/self/task/{t.native_id}/comm").write_text("spinner")
        assert spun.wait(30)
        rows = cpu_profile.threads_of(psutil.Process())
    finally:
        stop.set()
        t.join()
    names = {name for _, name, _ in rows}
    assert "main" in names and "spinner" in names
    cpu = next(cpu for tid, name, cpu in rows if name == "spinner")
    assert cpu >= 0.04


def test_largest_first_scales_rounds_and_leaves_out_the_least():
    d = {"a": 0.004, "b": 3.14159, "c": 1.0}
    assert list(cpu_profile.largest_first(d).items()) == [("b", 3.14), ("c", 1.0), ("a", 0.0)]
    assert cpu_profile.largest_first(d, per=2.0, digits=3, least=0.01) == {"b": 1.571, "c": 0.5}
    counts = cpu_profile.largest_first({"x": 3, "y": 7}, digits=0)
    assert list(counts.items()) == [("y", 7), ("x", 3)]
    assert all(type(v) is int for v in counts.values())
