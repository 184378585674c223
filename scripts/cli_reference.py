"""Writes docs/cli-reference.md from the click commands' own help (`make docs`); a test
fails when the file differs from what this prints."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rayscale import providers
from rayscale.cli import cli

OUT = Path(__file__).resolve().parent.parent / "docs" / "cli-reference.md"


def sections(cmd: click.Command, path: list[str]) -> list[str]:
    ctx = click.Context(cmd, info_name=" ".join(path), terminal_width=100, max_content_width=100)
    out = [f"## `{' '.join(path)}`", "", "```", cmd.get_help(ctx).rstrip(), "```", ""]
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.list_commands(ctx)):
            out += sections(cmd.get_command(ctx, name), [*path, name])
    return out


def by_provider() -> list[str]:
    """Which flags of `cluster up` and `scaling` each provider takes, from its declaration."""
    out = [
        "## Flags by provider",
        "",
        "`cluster up` and `scaling` take each provider's own flags, as its `Options` declares",
        "them (rayscale/providers/); one given to a provider that does not take it is refused.",
        "",
        "| provider | its flags |",
        "|---|---|",
    ]
    for name in providers.NAMES:
        cls = providers.provider_class(name)
        names = [*cls.flags(), *(("cpus_per_worker", "memory_per_worker") * cls.takes_shape)]
        flags = ", ".join(f"`--{n.replace('_', '-')}`" for n in names) or "none"
        out.append(f"| {name} | {flags} |")
    return [*out, ""]


def render() -> str:
    head = [
        "# CLI reference",
        "",
        "Generated from the commands' own `--help` by `make docs` (scripts/cli_reference.py);",
        "what each is for, with examples: [cli.md](cli.md).",
        "",
    ]
    return "\n".join(head + by_provider() + sections(cli, ["rayscale"]))


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}", file=sys.stderr)
