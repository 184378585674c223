"""Writes docs/cli-reference.md from the click commands' own help (`make docs`); a test
fails when the file differs from what this prints."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rayscale.cli import cli

OUT = Path(__file__).resolve().parent.parent / "docs" / "cli-reference.md"


def sections(cmd: click.Command, path: list[str]) -> list[str]:
    ctx = click.Context(cmd, info_name=" ".join(path), terminal_width=100, max_content_width=100)
    out = [f"## `{' '.join(path)}`", "", "```", cmd.get_help(ctx).rstrip(), "```", ""]
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.list_commands(ctx)):
            out += sections(cmd.get_command(ctx, name), [*path, name])
    return out


def render() -> str:
    head = [
        "# CLI reference",
        "",
        "Generated from the commands' own `--help` by `make docs` (scripts/cli_reference.py);",
        "what each is for, with examples: [cli.md](cli.md).",
        "",
    ]
    return "\n".join(head + sections(cli, ["rayscale"]))


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}", file=sys.stderr)
