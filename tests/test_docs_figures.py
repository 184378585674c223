"""Figures quoted in the README and docs/ are the ones the runs wrote: a table that drifts
from its JSON fails here (re-render it from the file, or re-run what wrote the file)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.compare import cell

ROOT = Path(__file__).resolve().parent.parent


def load(rel: str) -> dict:
    return json.loads((ROOT / rel).read_text())


def figure_rows(text: str, columns: int) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\| `(\w+)` \|(.*)\|\s*$", line)
        if m:
            cells = [c.strip() for c in m.group(2).split("|")]
            rows[m.group(1)] = cells[:columns]
    return rows


@pytest.mark.parametrize(
    "doc,runs",
    [
        ("README.md", ["results/bench/local/bench.json", "results/bench/docker/bench.json"]),
        (
            "docs/benchmarks.md",
            [
                "results/bench/before/bench.json",
                "results/bench/local/bench.json",
                "results/bench/docker/bench.json",
            ],
        ),
    ],
)
def test_bench_tables_match_their_files(doc, runs):
    files = [load(r) for r in runs]
    rows = figure_rows((ROOT / doc).read_text(), len(runs))
    assert rows, f"no figure table in {doc}"
    for key, cells in rows.items():
        assert cells == [cell(f, key) for f in files], f"{doc}: `{key}` differs from {runs}"


def test_readme_plan_table_matches_plan_json():
    plan = load("results/bench/plan/plan.json")
    text = (ROOT / "README.md").read_text()
    shown = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) >= 7 and cells[0].isdigit():
            shown[int(cells[0])] = cells
    assert shown, "no plan table in the README"
    for row in plan["rows"]:
        c = shown[row["workers"]]
        assert float(c[1]) == row["wall_s"], c
        assert float(c[3]) == row["total_s"], c
        assert float(c[6]) == row["cost_usd"], c
        assert ("cheapest in deadline" in line_of(c)) == row["cheapest_in_deadline"], c
        assert ("knee" in line_of(c)) == row["knee"], c


def line_of(cells: list[str]) -> str:
    return " ".join(cells)


def test_cli_reference_is_generated_from_the_commands():
    """docs/cli-reference.md is the commands' own --help; `make docs` rewrites it."""
    from scripts import cli_reference

    assert cli_reference.OUT.read_text() == cli_reference.render(), "run `make docs`"


def test_the_eta_table_matches_eta_json():
    """docs/scaling.md quotes `make eta` as bench.eta_accuracy renders results/bench/eta.json."""
    from bench import eta_accuracy

    table = eta_accuracy.table(load("results/bench/eta.json"))
    assert table in (ROOT / "docs" / "scaling.md").read_text()


def test_make_scale_figures_match_scale_json():
    """README and docs/scaling.md quote `make scale` as bench.scale renders results/scale/
    scale.json; `python -m bench.scale --phases render` re-derives the model's part."""
    from bench import scale

    run = load("results/scale/scale.json")
    assert scale.summary(run) in " ".join((ROOT / "README.md").read_text().split())
    doc = (ROOT / "docs" / "scaling.md").read_text()
    assert scale.table(run) in doc and scale.docker_table(run) in doc
    flat = " ".join(doc.split())
    assert scale.repeat_text(run) in flat and scale.attribution_text(run) in flat


@pytest.mark.parametrize(
    ("script", "doc", "run"),
    [("scripts/k8s/e2e.py", "docs/kubernetes.md", "results/k8s-real/e2e.json"),
     ("scripts/onprem/e2e.py", "docs/cloud.md", "results/onprem/e2e.json")],
)  # fmt: skip
def test_the_docs_show_the_last_end_to_end_run(script, doc, run):
    """docs/kubernetes.md's record of `make e2e-k8s` and docs/cloud.md's of `make
    e2e-onprem` are what their runs wrote to e2e.json."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("e2e", ROOT / script)
    e2e = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(e2e)
    shown = e2e.rendered_block((ROOT / doc).read_text())
    assert shown == e2e.render(load(run)), f"re-render it: python {script} --render-docs"
