"""The house's rules, read from the code: Ray's public interfaces only in rayscale/ and
job/, no import circle in rayscale/ (function-level imports count), job/ imports nothing
of rayscale/, and the benchmarks and drills live outside the package."""

from __future__ import annotations

import ast
import re

from conftest import ROOT

PRIVATE = re.compile(
    r"ray\._private|ray\._raylet|ray\.core\.generated|_local_tuner|ray\.train\.constants\._"
)


def _sources(folder: str):
    return sorted((ROOT / folder).rglob("*.py"))


def test_product_code_uses_only_rays_public_interfaces():
    found = [
        f"{f.relative_to(ROOT)}:{i}"
        for folder in ("rayscale", "job")
        for f in _sources(folder)
        for i, line in enumerate(f.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert not found, found


def _imports(f) -> set[str]:
    """Every rayscale module a file imports, at any level of the file."""
    out = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "rayscale" or node.module.startswith("rayscale."):
                # `from rayscale.providers import gcs_ft` imports the module gcs_ft too
                out |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("rayscale.")}
    return out


def _graph() -> dict[str, set[str]]:
    mods = {}
    for f in _sources("rayscale"):
        rel = f.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        mods[name] = f
    return {m: {i for i in _imports(f) if i in mods and i != m} for m, f in mods.items()}


def test_no_import_circle_in_rayscale():
    graph = _graph()
    state: dict[str, int] = {}
    circles = []

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                circles.append(path[path.index(n) :] + [n] if n in path else [m, n])
            elif n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, circles


def _layers() -> list[list[str]]:
    """docs/development.md's layers block, top first: each a list of module patterns."""
    doc = (ROOT / "docs" / "development.md").read_text()
    block = re.search(r"```layers\n(.*?)```", doc, re.S)
    assert block, "docs/development.md has no ```layers block"
    return [line.split() for line in block.group(1).splitlines() if line.strip()]


def _layer_of(module: str, layers: list[list[str]]) -> int | None:
    name = module.removeprefix("rayscale.")
    if module == "rayscale":
        return len(layers) - 1  # the package's __init__: the bottom
    for i, patterns in enumerate(layers):
        for p in patterns:
            if name == p or (p.endswith(".*") and (name == p[:-2] or name.startswith(p[:-1]))):
                return i
    return None


def test_every_module_sits_in_a_layer_and_imports_nothing_above_it():
    """The layers in docs/development.md are the code's: no module left out, no import up."""
    layers, graph = _layers(), _graph()
    graph = {m: deps for m, deps in graph.items() if not m.startswith("rayscale.onhead")}
    unplaced = sorted(m for m in graph if _layer_of(m, layers) is None)
    assert not unplaced, f"add these to docs/development.md's layers: {unplaced}"
    upward = [
        f"{m} -> {d}"
        for m, deps in graph.items()
        for d in sorted(deps)
        if _layer_of(d, layers) < _layer_of(m, layers)
    ]
    assert not upward, upward


def test_job_imports_nothing_of_rayscale_and_the_package_no_drill():
    # job/ and the scripts the launcher runs on a head: a bare cluster image has no rayscale.
    for f in [*_sources("job"), *(ROOT / "rayscale" / "onhead").glob("*.py")]:
        assert not any(m.startswith("rayscale") for m in _imports(f)), f
        text = f.read_text()
        assert not re.search(r"^\s*(from|import) rayscale\b", text, re.M), f
    text = "\n".join(f.read_text() for f in _sources("rayscale"))
    assert not re.search(r"^\s*(from|import) bench\b", text, re.M)
    assert not (ROOT / "rayscale" / "bench.py").exists()


def test_providers_write_no_ray_flag_of_their_own():
    """`ray start`'s flags are written in rayscale/runtime.py alone: no string in a
    provider's code starts with one (its docs may name them)."""
    flags = ("--num-cpus", "--object-store-memory", "--dashboard-host", "--block", "--head")
    for f in (ROOT / "rayscale" / "providers").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not node.value.startswith(flags), f"{f.name} writes {node.value!r}"


def test_the_study_knows_its_workload_only_through_the_seam():
    """What the study runs comes through rayscale/study/workload.py: the point runner, the
    summary, the orchestration and the scheduler replay name no metric of the bundled job,
    and only the workload module reads the job's record."""
    generic = ["scaling.py", "study/measure.py", "study/summary.py", "study/plan.py", "replay.py"]
    for name in generic:
        text = (ROOT / "rayscale" / name).read_text()
        assert not re.search(r"rmse", text, re.I), name
        assert "rayscale-result.json" not in text and "RECORD" not in text, name


# What Tune writes and says without publishing it as an interface: job/tune_format.py alone
# knows it, and gates it on Ray's version.
TUNE_KNOWLEDGE = re.compile(
    r"tuner\.pkl|experiment_state|Failure # |Unable to set up cluster storage"
    r"|does not exist on storage|ActorUnavailableError|\"checkpoint_\""
    r"|started with(out custom)? configuration|Number of trials|completed after"
)


def test_tunes_unpublished_formats_live_in_one_version_gated_module():
    home = ROOT / "job" / "tune_format.py"
    for f in [*_sources("rayscale"), *_sources("job")]:
        if f == home:
            continue
        code = "\n".join(ln for ln in f.read_text().splitlines() if not ln.lstrip().startswith("#"))
        hit = TUNE_KNOWLEDGE.search(code)
        assert not hit, f"{f.relative_to(ROOT)}: {hit.group()} belongs in job/tune_format.py"


def test_the_format_module_names_the_pinned_ray_and_warns_in_one_line_on_another():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tune_format", ROOT / "job" / "tune_format.py")
    tf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tf)
    pinned = re.search(r"^ray==(\d+\.\d+)\.", (ROOT / "requirements.lock").read_text(), re.M)
    assert tf.TESTED == pinned.group(1)
    assert tf.check(f"{pinned.group(1)}.7") is None
    line = tf.check("2.99.0")
    assert "\n" not in line and "Ray 2.99.0" in line and f"Ray {tf.TESTED}" in line
