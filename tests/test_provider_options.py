"""A new provider's flags come from its own declaration: a stand-in provider, written in
its own file and added with one registry line, gets its flag on `cluster up` and
`scaling`, in their help and in the generated CLI reference, with nothing else edited."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import ROOT

TEMPLATE = """
from dataclasses import dataclass

from rayscale.errors import UserError
from rayscale.providers.base import Options, flag
from rayscale.providers.local import LocalProvider


@dataclass(frozen=True)
class TemplateOptions(Options):
    partition: str | None = flag("the Slurm partition its nodes run in", metavar="NAME")


class TemplateProvider(LocalProvider):
    name = "template"
    Options = TemplateOptions

    def _plan(self, workers):
        raise UserError(
            f"the template provider was given --partition {self.options.partition}",
            "none: it stands in for a new provider",
        )
"""

# The registry line a new provider adds (NAMES follows REGISTRY at import in the package).
RUN = """
import sys
sys.path.insert(0, {where!r})
from rayscale import providers
providers.REGISTRY["template"] = "template_provider:TemplateProvider"
providers.NAMES = tuple(providers.REGISTRY)
{then}
"""
CLI = "from rayscale.cli import main\nmain()"
REFERENCE = "sys.path.insert(0, 'scripts')\nimport cli_reference\nprint(cli_reference.render())"


def _run(tmp_path, then: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "template_provider.py").write_text(textwrap.dedent(TEMPLATE))
    code = RUN.format(where=str(tmp_path), then=then)
    return subprocess.run(
        [sys.executable, "-c", code, *args],  # main() reads sys.argv[1:], as the script does
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"RAYSCALE_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )


def test_a_new_providers_flag_is_offered_and_reaches_it(tmp_path):
    for command in ("cluster up", "scaling"):
        out = _run(tmp_path, CLI, *command.split(), "--help")
        assert out.returncode == 0, out.stderr
        assert "--partition NAME" in out.stdout and "template: the Slurm partition" in out.stdout

    given = _run(tmp_path, CLI, "cluster", "up", "--provider", "template", "--partition", "gpu")
    assert given.returncode == 2  # a UserError
    assert "the template provider was given --partition gpu" in given.stderr
    assert "Traceback" not in given.stderr

    # Refused, naming who takes it, where the provider does not declare it.
    other = _run(tmp_path, CLI, "cluster", "up", "--provider", "local", "--partition", "gpu")
    assert other.returncode != 0
    assert "--partition does not apply to the local provider" in other.stderr
    assert "it is for template" in other.stderr

    reference = _run(tmp_path, REFERENCE)
    assert reference.returncode == 0, reference.stderr
    assert "| template | `--partition`, `--cpus-per-worker`, `--memory-per-worker` |" in (
        reference.stdout
    )


def test_each_shipped_providers_flags_are_what_it_declares():
    """The help of `cluster up` names, for each flag, exactly the providers that declare it."""
    from rayscale import providers

    merged = dict(providers.flags())
    for name in providers.NAMES:
        for option in providers.provider_class(name).flags():
            assert name in merged[option].help.split(":")[0] or f"; {name}" in merged[option].help
    assert merged["image"].help.startswith("docker, kuberay, kind: ")
    assert merged["config"].help.startswith("ray-up: ")
