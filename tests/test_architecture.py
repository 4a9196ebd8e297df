"""Layering rules, checked on the source: imports point one way; the core has no UI and no I/O."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "merlion_core"

# Lower ranks may never import higher ranks (docs in README "Layout").
RANKS = [
    ("merlion_core.config", 0),
    ("merlion_core.data", 0),  # the empty package __init__
    ("merlion_core.envs", 1),
    ("merlion_core.data.dataset", 1),
    ("merlion_core.data.validation", 1),  # DatasetError, caps, value rules (numpy only)
    ("merlion_core.data.multiwoz_io", 1),  # reads the MultiWOZ files for the dialogue env (not numeric)
    ("merlion_core.data.io", 2),  # io, io_common, io_npz, io_hdf5: file formats live only here
    ("merlion_core.data.collect", 3),
    ("merlion_core.models", 1),
    ("merlion_core.representation", 3),
    ("merlion_core.representation.artifacts", 4),  # weights + config.json: the representation I/O module
    ("merlion_core.diagnostics", 3),
    ("merlion_core.data.sampler", 2),
    ("merlion_core.lookup", 3),
    ("merlion_core.lookup_index", 3),  # approximate L1 lookup (numeric)
    ("merlion_core.algos", 3),
    ("merlion_core.algos.artifacts", 4),  # agent weights + config.json: the agent I/O module
    ("merlion_core.policy", 4),
    ("merlion_core.evaluation", 4),
    ("merlion_core.artifact_folder", 4),  # the shared weights/config/metrics folder I/O
    ("merlion_core.checkpoints", 4),  # resumable training checkpoints (step-N.pt): their I/O module
    ("merlion_core.projection", 4),  # UMAP (umap-learn, numba: may write cache files) and its artifact I/O
    ("merlion_core.ope", 4),  # off-policy estimators (numeric: arrays in, estimates out)
    ("merlion_core.data.summary", 3),  # a dataset's summary and recorded env config (numeric, no I/O)
    ("merlion_core.pipelines", 6),  # dataset -> artifact pipelines: encoder, agent, embeddings, ope
    ("merlion_core.benchmark", 6),  # the benchmark: runner (6), methods (5), report (5)
    ("merlion_core.benchmark.methods", 5),  # method names, groups, encoder settings (no I/O)
    ("merlion_core.benchmark.report", 5),  # benchmark results I/O: run JSON, summary, table, SVG
    ("merlion_core.peers", 6),  # optional peer libraries (d3rlpy), imported lazily
    ("merlion_core.jobs", 7),  # background jobs: store (its file formats), workers, supervisor, sweeps, Ray
    ("merlion_core.cli", 9),  # the command line: one module per command group, common helpers, main
]
NUMERIC = (
    "merlion_core.envs",
    "merlion_core.data.dataset",
    "merlion_core.data.collect",
    "merlion_core.config",
    "merlion_core.models",
    "merlion_core.representation.merlion",
    "merlion_core.representation.losses",
    "merlion_core.representation.base",
    "merlion_core.diagnostics",
    "merlion_core.lookup",
    "merlion_core.lookup_index",
    "merlion_core.algos",
    "merlion_core.policy",
    "merlion_core.evaluation",
    "merlion_core.data.sampler",
    "merlion_core.ope",
    "merlion_core.data.validation",
)


def rank_of(module: str) -> int | None:
    matches = [(len(prefix), rank) for prefix, rank in RANKS if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        yield name.removesuffix(".__init__"), ast.parse(path.read_text(), filename=str(path))


MODULES = dict(modules())


def imported(tree: ast.AST) -> set[str]:
    """Every module a file imports, at the top or inside a function (``from pkg import mod`` names
    ``pkg.mod`` when that is a module of the package)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(
                f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in MODULES
            )
    return names


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles():
    """No two modules import each other, directly or through others, not even inside a function."""
    graph = {name: {t for t in imported(tree) if t in MODULES and t != name} for name, tree in MODULES.items()}
    assert import_cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_rank_table_covers_every_module():
    missing = [name for name, _ in modules() if name != "merlion_core" and rank_of(name) is None]
    assert not missing, f"modules without a layer: {missing}"


@pytest.mark.parametrize("name, tree", list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_point_down(name, tree):
    own = rank_of(name)
    for target in imported(tree):
        assert not target.startswith("streamlit"), f"{name} imports streamlit"
        if target.startswith("merlion_core.") and own is not None:
            assert rank_of(target) <= own, f"{name} (layer {own}) imports {target} (layer {rank_of(target)})"


@pytest.mark.parametrize(
    "name, tree", [m for m in modules() if m[0].startswith(NUMERIC)], ids=lambda v: v if isinstance(v, str) else ""
)
def test_numeric_core_does_not_print_or_read_the_environment(name, tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in ("print", "open", "input"), f"{name} calls {node.func.id}()"
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
            raise AssertionError(f"{name} reads environment variables")


def test_no_pickle_anywhere():
    for name, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                assert isinstance(node.value, ast.Constant) and node.value.value is False, name
        assert "pickle" not in imported(tree), f"{name} imports pickle"


def readme_layout() -> dict[str, str]:
    """The README's Layout block: each top-level entry of merlion_core/ -> its description lines."""
    text = (PACKAGE.parent / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        if line.startswith("  ") and not line.startswith("   ") and line.strip():
            current = line.split()[0]
            entries[current] = line
        elif line.startswith("    ") and current:
            entries[current] += "\n" + line
        elif line and not line.startswith(" "):
            current = None
    return entries


def test_readme_layout_matches_the_package():
    entries = readme_layout()
    actual = {
        p.name + ("/" if p.is_dir() else "")
        for p in PACKAGE.iterdir()
        if p.name not in ("__init__.py", "__pycache__") and (p.suffix == ".py" or (p / "__init__.py").exists())
    }
    assert set(entries) == actual
    for name, text in entries.items():  # the files a folder's lines name exist in that folder
        if name.endswith("/"):
            for word in text.replace(",", " ").replace("(", " ").replace(")", " ").split():
                if word.endswith(".py"):
                    assert list((PACKAGE / name).rglob(word)), f"README names {name}{word}, which does not exist"
