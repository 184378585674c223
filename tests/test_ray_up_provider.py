"""The ray-up provider without a cloud: what it renders and runs, and how it fails.

`ray up` on AWS / GCP / SSH machines cannot run here. These tests check the configs it
renders against the cluster-launcher schema of the installed ray, the exact `ray`
commands it builds, and, with a stand-in `ray` executable (a fake, named so), that a
failing `ray up` is reported in one line and followed by `ray down` so no VM is left
behind. The autoscaling path itself runs for real in test_ray_up_fake_cluster.py.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import ROOT, assert_one_line_error, run_cli
from test_cluster_yamls import CLOUD, SCHEMA

from rayscale.errors import UserError
from rayscale.providers import launcher_config, ray_up


@pytest.mark.parametrize("f", CLOUD, ids=lambda f: f.name)
@pytest.mark.parametrize("n", [1, 3])
def test_rendered_config_pins_n_workers_and_this_clusters_token(f, n, tmp_path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    src = yaml.safe_load(f.read_text())
    token = tmp_path / "auth_token"
    rendered = launcher_config.render(src, n, token)
    out = prepare_config(rendered)  # what `ray up` does before it validates
    validate_config(out)  # Ray's JSON schema, then its own checks
    jsonschema.validate(out, SCHEMA)
    if f.name == "onprem.yaml":  # Ray turns the top-level floor / ceiling into its one node type
        wt = out["available_node_types"]["local.cluster.node"]
    else:
        wt = out["available_node_types"][launcher_config.worker_type(src)]
    assert wt["min_workers"] == wt["max_workers"] == n
    assert out["max_workers"] >= n
    assert rendered["file_mounts"]["/home/ray/.ray/auth_token"] == str(token)
    # The user's file is not changed, and nothing else moves.
    assert src == yaml.safe_load(f.read_text())
    assert out["head_start_ray_commands"] == src["head_start_ray_commands"]
    assert (out.get("docker") or None) == src.get("docker")  # prepare_config adds an empty one


def test_commands_it_runs(tmp_path):
    cli = ray_up.ray_cli()
    L = ray_up.CloudLauncher
    aws, onprem = tmp_path / "aws.yaml", tmp_path / "onprem.yaml"
    aws.write_text((ROOT / "cluster" / "aws.yaml").read_text())
    onprem.write_text((ROOT / "cluster" / "onprem.yaml").read_text())
    a, o = str(aws), str(onprem)
    assert L.up_argv(a) == [cli, "up", "-y", "--no-config-cache", a]
    assert L.apply_argv(a) == [cli, "up", "-y", "--no-restart", "--no-config-cache", a]
    # On-prem hosts: Ray's autoscaler v1 (v2 has no `local` provider: no worker would start).
    v1 = ["env", "RAY_UP_enable_autoscaler_v2=0"]
    assert L.up_argv(o) == [*v1, cli, "up", "-y", "--no-config-cache", o]
    assert L.apply_argv(o) == [*v1, cli, "up", "-y", "--no-restart", "--no-config-cache", o]
    assert L.down_argv(a) == [cli, "down", "-y", a]
    assert L.forward_argv(a, 18265) == [
        cli, "dashboard", "--port", "18265", "--remote-port", "8265", "--no-config-cache", a,
    ]  # fmt: skip
    # Every one of them parses with the installed `ray` CLI's own options.
    from ray.scripts.scripts import cli as ray_click

    for argv in (L.up_argv(o), L.apply_argv(o), L.down_argv(a), L.forward_argv(a, 1)):
        argv = argv[2:] if argv[0] == "env" else argv
        cmd = ray_click.commands[argv[1]]
        ctx = cmd.make_context(argv[1], argv[2:], resilient_parsing=False)
        assert ctx.params["cluster_config_file"] in (a, o), argv


def test_onprem_cannot_pin_more_workers_than_hosts(tmp_path):
    cfg = yaml.safe_load((ROOT / "cluster" / "onprem.yaml").read_text())
    with pytest.raises(UserError, match="4 workers wanted but the config lists 3 worker_ips"):
        launcher_config.render(cfg, 4, tmp_path / "t")


def test_worker_type_must_be_one():
    cfg = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
    cfg["available_node_types"]["ray.worker.gpu"] = dict(
        cfg["available_node_types"]["ray.worker.cpu"]
    )
    with pytest.raises(UserError, match="exactly one worker node type"):
        launcher_config.worker_type(cfg)


def test_config_without_token_mount_is_refused(tmp_path):
    cfg = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
    cfg["file_mounts"] = {}
    with pytest.raises(UserError, match="does not mount the auth token"):
        launcher_config.render(cfg, 2, tmp_path / "t")


@pytest.mark.parametrize(
    "content,needles",
    [
        (None, ["needs a cluster config", "--config"]),
        ("MISSING", ["cannot read cluster config", "c.yaml"]),
        ("cluster_name: [unclosed\n", ["not valid YAML"]),
        ("cluster_name: x\n", ["no provider section"]),
    ],
    ids=["no-config", "missing", "bad-yaml", "no-provider"],
)
def test_bad_config_one_line(content, needles, tmp_path):
    args = [] if content is None else ["--config", tmp_path / "c.yaml"]
    if content not in (None, "MISSING"):
        (tmp_path / "c.yaml").write_text(content)
    state = tmp_path / "state"
    p = run_cli("cluster", "up", "--provider", "ray-up", "--workers", 1, *args, state_dir=state)
    assert_one_line_error(p, *needles)
    assert not (state / "cluster.json").exists()


FAKE_RAY = """#!/bin/sh
# A stand-in for the `ray` CLI (a fake): records its arguments; `up` fails like a cloud
# without credentials; `down` succeeds.
echo "$@" >> "{calls}"
case "$1" in
  up) echo "botocore.exceptions.NoCredentialsError: Unable to locate credentials"; exit 1;;
  down) echo "Destroying cluster. Confirm [y/N]: y [automatic, due to --yes]"; exit 0;;
  *) exit 2;;
esac
"""


def test_failed_ray_up_is_one_line_and_runs_ray_down_fake_ray(tmp_path):
    calls = tmp_path / "calls"
    fake = tmp_path / "ray"
    fake.write_text(FAKE_RAY.format(calls=calls))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    state = tmp_path / "state"
    # An earlier `up` of this state dir failed on a host's Ray: the log keeps its line, and
    # this failure must be read from this run's part of the log alone.
    (state / "logs").mkdir(parents=True)
    (state / "logs" / "ray-up.log").write_text(
        f"{launcher_config.HOST_CHECK}: host old-host has no ray command on the login PATH, the "
        "launcher Ray 2.60.0\n"
    )
    p = run_cli(
        "cluster",
        "up",
        "--provider",
        "ray-up",
        "--config",
        ROOT / "cluster" / "aws.yaml",
        "--workers",
        2,
        state_dir=state,
        env={"RAYSCALE_RAY": str(fake)},
    )
    line = assert_one_line_error(p, "`ray up` failed", "NoCredentialsError", "ray-up.log")
    assert str(state / "logs" / "ray-up.log") in line
    made = calls.read_text().splitlines()
    cfg = str(state / "config" / "cluster.yaml")
    # `ray up` may have made a head before it failed: `ray down` always follows.
    assert made == [f"up -y --no-config-cache {cfg}", f"down -y {cfg}"]
    assert not (state / "cluster.json").exists() and not (state / "config").exists()
    assert (state / "logs" / "ray-up.log").exists(), "the log the error names is kept"
    assert not os.path.exists(state / "auth_token")


def test_rendered_config_is_what_ray_up_gets_fake_ray(tmp_path):
    """The file handed to `ray up` holds the N workers and the token path (read back before cleanup)."""
    calls = tmp_path / "calls"
    fake = tmp_path / "ray"
    fake.write_text(
        FAKE_RAY.replace(
            'echo "$@" >> "{calls}"',
            'echo "$@" >> "{calls}"; [ "$1" = up ] && cp "$4" "{calls}.yaml"',
        ).format(calls=calls)
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    state = tmp_path / "state"
    run_cli(
        "cluster",
        "up",
        "--provider",
        "ray-up",
        "--config",
        ROOT / "cluster" / "gcp.yaml",
        "--workers",
        5,
        state_dir=state,
        env={"RAYSCALE_RAY": str(fake)},
    )
    got = yaml.safe_load(Path(f"{calls}.yaml").read_text())
    wt = got["available_node_types"][launcher_config.worker_type(got)]
    assert wt["min_workers"] == wt["max_workers"] == 5
    assert got["file_mounts"]["/home/ray/.ray/auth_token"] == str(state / "auth_token")
    # A named cluster of the same YAML gets a cluster_name of its own: the launcher finds a
    # cluster's machines by that name, so two clusters of one YAML would share them.
    run_cli(
        "cluster", "up", "--provider", "ray-up", "--config", ROOT / "cluster" / "gcp.yaml",
        "--workers", 1, "--cluster", "second", state_dir=state, env={"RAYSCALE_RAY": str(fake)},
    )  # fmt: skip
    second = yaml.safe_load(Path(f"{calls}.yaml").read_text())
    assert second["cluster_name"] == f"{got['cluster_name']}-second"
    assert second["file_mounts"]["/home/ray/.ray/auth_token"] == str(
        state / "clusters" / "second" / "auth_token"
    )


def test_onprem_hosts_and_login_come_from_flags_and_an_unreachable_host_is_one_line(tmp_path):
    """--hosts / --ssh-user / --ssh-key fill the shipped onprem.yaml; every host is logged
    in to before `ray up` (a host nothing answers on is named at once, not after ray up's
    minutes of retries); nothing is recorded. The real SSH hosts: make e2e-onprem."""
    key = tmp_path / "key"
    key.write_text("not a key\n")
    key.chmod(0o600)
    cfg = launcher_config.load_config(ROOT / "cluster" / "onprem.yaml")
    opts = ray_up.RayUpOptions(
        hosts="10.1.0.2, 10.1.0.3,10.1.0.4", ssh_user="ops", ssh_key=str(key)
    )
    launcher_config.set_hosts(cfg, opts)
    assert cfg["provider"] == {"type": "local", "head_ip": "10.1.0.2",
                               "worker_ips": ["10.1.0.3", "10.1.0.4"]}  # fmt: skip
    assert cfg["auth"] == {"ssh_user": "ops", "ssh_private_key": str(key)}
    rendered = launcher_config.render(cfg, 1, tmp_path / "token")
    assert rendered["setup_commands"][0] == launcher_config.host_check()
    state = tmp_path / "s"
    # 127.0.0.2: a loopback address where no SSH server listens.
    p = run_cli("cluster", "up", "--provider", "ray-up", "--config", ROOT / "cluster" / "onprem.yaml",
                "--workers", 1, "--hosts", "127.0.0.2,127.0.0.2", "--ssh-key", key,
                state_dir=state, env={"RAYSCALE_SSH_USER": "ops"}, timeout=120)  # fmt: skip
    assert_one_line_error(p, "cannot log in as ops", "127.0.0.2:", "--ssh-key")
    assert not (state / "cluster.json").exists()
    for hosts, said in (("10.1.0.2", "names 1 machine"),):
        with pytest.raises(UserError, match=said):
            launcher_config.set_hosts(cfg, ray_up.RayUpOptions(hosts=hosts))
    aws = launcher_config.load_config(ROOT / "cluster" / "aws.yaml")
    with pytest.raises(
        UserError, match="--hosts name on-prem hosts, but this config's provider is aws"
    ):
        launcher_config.set_hosts(aws, ray_up.RayUpOptions(hosts="a,b"))


def test_a_host_whose_ray_is_not_the_launchers_is_named(tmp_path):
    """The setup command `up` puts first on on-prem hosts, run by bash as Ray's SSH runner
    runs it: a host without Ray, or with another version, fails in one line naming it."""
    import subprocess

    check = launcher_config.host_check()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ray").write_text("#!/bin/sh\necho 'ray, version 2.52.1'\n")
    (fake / "ray").chmod(0o755)
    for path, said in ((str(fake), "has Ray 2.52.1, the launcher Ray"),
                       ("/nonexistent", "has no ray command on the login PATH")):  # fmt: skip
        p = subprocess.run(["/bin/bash", "-c", check], env={"PATH": f"{path}:/usr/bin:/bin"},
                           capture_output=True, text=True)  # fmt: skip
        assert p.returncode == 1 and f"{launcher_config.HOST_CHECK}: host" in p.stderr, p.stderr
        assert said in p.stderr, p.stderr
    ok = subprocess.run(["/bin/bash", "-c", check], capture_output=True, text=True,
                        env={"PATH": f"{Path(ray_up.ray_cli()).parent}:/usr/bin:/bin"})  # fmt: skip
    assert ok.returncode == 0, ok.stderr


def test_a_failing_setup_command_is_named_with_its_output(tmp_path):
    """`ray up`'s log, printed by Ray's own CLI logger as its updater prints it around the
    commands it runs (make e2e-onprem fails one on a real host): the command is named in
    full from the config, with its output's last lines."""
    import subprocess
    import sys

    cmds = [
        "echo preparing the host",
        "pip install --no-index rayscale-no-such-pkg 2>&1 | tail -2; exit 3",
    ]
    script = f"""
import subprocess
from ray.autoscaler._private.cli_logger import cli_logger
cmds = {cmds!r}
with cli_logger.group("Running setup commands", _numbered=("[]", 6, 7)):
    for i, cmd in enumerate(cmds):
        cli_logger.print("{{}}", cmd[:30] + "..." if len(cmd) > 30 else cmd, _numbered=("()", i, len(cmds)))
        if subprocess.run(["bash", "-c", cmd]).returncode:
            cli_logger.error("Failed.")
            cli_logger.error("See above for stderr.")
            break
cli_logger.error("Failed to setup head node.")
"""
    log = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    text = log.stdout + log.stderr
    cfg = {"setup_commands": [cmds[0]], "head_setup_commands": [cmds[1]]}
    cmd, tail = launcher_config.failed_setup(text, cfg)
    assert cmd == cmds[1]
    assert "No matching distribution found for rayscale-no-such-pkg" in tail[-1], text
    assert launcher_config.failed_setup(text.replace("Failed.", "Done."), cfg) is None


def test_a_failing_setup_command_is_read_from_a_real_ray_up_log():
    """The same from `ray up`'s own log as make e2e-onprem recorded it on a real SSH host
    (tests/data/ray-up-setup-failed.log, paths shortened): Ray's verbose lines, the SSH
    runner's, its status lines and traceback are left out of the command's output."""
    log = (ROOT / "tests" / "data" / "ray-up-setup-failed.log").read_text()
    cmds = [
        launcher_config.host_check(),
        "echo preparing",
        "pip install --no-index rayscale-no-such-pkg",
    ]
    cmd, tail = launcher_config.failed_setup(log, {"setup_commands": cmds})
    assert cmd == cmds[2]
    assert tail == [
        "ERROR: Could not find a version that satisfies the requirement rayscale-no-such-pkg "
        "(from versions: none)",
        "ERROR: No matching distribution found for rayscale-no-such-pkg",
    ]
