"""The fence between the ideas and the engine, checked by reading the imports (ast), not by running them.

The core -- the layers, the model, the training step, the optimisers and the SNP analysis steps -- imports
nothing from the engine (parallel workers, memory, capture to disk, benchmark), from io/, or from the claims
machinery (statistics, nulls, baselines, replication). And no module of minicct imports itself back through
another (no import cycle), counting imports inside functions too.
"""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "minicct"

CORE = ["minicct.layers.*", "minicct.model", "minicct.train.step", "minicct.train.optim",
        "minicct.analysis.readout", "minicct.analysis.snp", "minicct.analysis.clusters", "minicct.analysis.andc",
        "minicct.analysis.heads", "minicct.analysis._validate", "minicct.sites"]
ENGINE = ["minicct.parallel", "minicct.memory", "minicct.bench", "minicct.bench.*", "minicct.analysis.capture_disk",
          "minicct.analysis.costs", "minicct.io", "minicct.io.*"]
CLAIMS = ["minicct.analysis.stats", "minicct.analysis.nulls", "minicct.analysis.baselines",
          "minicct.analysis.replicate"]


def _modules():
    """{module name: path} of every minicct module (a package is named by its __init__)."""
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


MODS = _modules()


def _matches(name, patterns):
    return any(name == p or (p.endswith(".*") and name.startswith(p[:-1])) for p in patterns)


def imports_of(name) -> set:
    """minicct modules imported anywhere in module `name` (module level and inside functions)."""
    path = MODS[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODS:                       # `from .x import f`: the module is .x
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def test_core_imports_no_engine_io_or_claims():
    core = sorted(m for m in MODS if _matches(m, CORE))
    assert "minicct.model" in core and "minicct.train.step" in core and len(core) > 15
    bad = sorted(f"{m} -> {t}" for m in core for t in imports_of(m) if _matches(t, ENGINE + CLAIMS))
    assert not bad, "the core imports the engine, io/ or the claims machinery:\n  " + "\n  ".join(bad)


def test_no_import_cycle():
    # edges into a package from its own children are its __init__'s re-exports, not a cycle of meaning
    graph = {m: {t for t in imports_of(m) if not (MODS[t].name == "__init__.py" and m.startswith(t + "."))}
             for m in MODS}
    done, stack = set(), []

    def visit(m):
        if m in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
        if m in done:
            return
        stack.append(m)
        for t in sorted(graph[m]):
            visit(t)
        stack.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


def test_train_step_shows_its_four_lines():
    tree = ast.parse((PKG / "train" / "step.py").read_text(encoding="utf-8"))
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "train_step")
    called = {getattr(c.func, "attr", getattr(c.func, "id", "")) for c in ast.walk(fn) if isinstance(c, ast.Call)}
    assert {"forward", "softmax_cross_entropy_forward", "backward", "step"} <= called, sorted(called)
