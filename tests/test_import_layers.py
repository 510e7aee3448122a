"""Imports run one way: commands -> matrix -> bench -> pipeline -> calibration -> deploy -> onnxrt -> plugins -> base.

Read from the source (every `import vitdeploy...`, inside functions too: a lazy import is still a
dependency), so it costs milliseconds. A lower package importing a higher one fails here, naming
the file and line; so does a module that belongs to no layer (place it in LAYERS). Exempt:
`vitdeploy.plugins.registry` (pure data, any layer may read it), the `vitdeploy` package itself
(its `__version__`, and the lazy `vitdeploy.Engine` facade), code under `if __name__ == "__main__":`
(a program, e.g. matrix/child.py runs the CLI in a child process), and the verification harness,
which may import anything while nothing in the product imports it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import vitdeploy

# Highest first. A module may import its own layer and any layer below it.
LAYERS: list[tuple[str, set[str]]] = [
    ("commands", {"cli", "commands", "__main__"}),
    ("matrix", {"matrix"}),
    ("bench", {"bench"}),
    ("pipeline", {"pipeline"}),
    ("calibration", {"calibration"}),
    ("deploy", {"deploy"}),
    ("onnxrt", {"onnxrt"}),
    ("plugins", {"plugins"}),
    ("base", {"models", "sources", "hub", "hf_detectors", "weights", "console", "errors", "onnxgraph", "onnx_files",
              "image_transform", "tensorrt_session", "artifact", "machine", "parity"}),
]
ANYWHERE = {"vitdeploy", "vitdeploy.plugins.registry"}
# Test and benchmark harness: may import anything; the product never imports it.
HARNESS = ("vitdeploy.testing", "vitdeploy.plugins.contract", "vitdeploy.plugins.contract_graphs",
           "vitdeploy.plugins.trt_standin", "vitdeploy.plugins.driver_launch")


def _is_harness(mod: str) -> bool:
    return any(mod == h or mod.startswith(h + ".") for h in HARNESS)


def _layer(mod: str) -> int | None:
    parts = mod.split(".")
    top = parts[1] if len(parts) > 1 else ""
    return next((i for i, (_, tops) in enumerate(LAYERS) if top in tops), None)


def _imports(tree: ast.Module):
    """(line, imported module) for every vitdeploy import outside `if __name__ == "__main__":` blocks."""
    skip: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and \
                getattr(node.test.left, "id", None) == "__name__":
            skip.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.startswith("vitdeploy"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("vitdeploy"):
            yield node.lineno, node.module
            yield from ((node.lineno, f"{node.module}.{a.name}") for a in node.names)  # `from vitdeploy import x`


def import_problems(package_dir: Path) -> list[str]:
    """Every import against the layer order under `package_dir` (the `vitdeploy` folder), one line each."""
    root = package_dir.parent
    modules = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
               for p in package_dir.rglob("*.py")}
    problems = []
    for path in sorted(package_dir.rglob("*.py")):
        mod = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        if mod in ANYWHERE or _is_harness(mod):
            continue
        here = _layer(mod)
        where = path.relative_to(root)
        if here is None:
            problems.append(f"{where}: belongs to no layer (add its top-level name to LAYERS)")
            continue
        for line, target in _imports(ast.parse(path.read_text(), str(path))):
            if target not in modules and target.rsplit(".", 1)[0] in modules:
                continue  # `from vitdeploy.x import name`: the module is checked, the name is not one
            if target in ANYWHERE:
                continue
            if _is_harness(target):
                problems.append(f"{where}:{line} imports the test harness {target}")
                continue
            there = _layer(target)
            if there is not None and there < here:
                problems.append(f"{where}:{line} ({LAYERS[here][0]}) imports {target} ({LAYERS[there][0]}), a higher layer")
    return problems


def test_no_import_runs_upward():
    assert import_problems(Path(vitdeploy.__file__).resolve().parent) == []


def test_an_upward_import_is_caught(tmp_path):
    """The check itself can fail: a planted deploy -> pipeline import, a harness import and an unplaced module."""
    pkg = tmp_path / "vitdeploy"
    for rel, text in {
        "__init__.py": "",
        "errors.py": "",
        "pipeline/__init__.py": "",
        "pipeline/steps.py": "from vitdeploy.deploy import export\n",  # downward: fine
        "deploy/__init__.py": "",
        "deploy/export.py": "def f():\n    from vitdeploy.pipeline.steps import step_export\n",  # upward, lazily
        "deploy/uses_harness.py": "import vitdeploy.testing.contract\n",
        "testing/__init__.py": "", "testing/contract.py": "import vitdeploy.pipeline.steps\n",  # harness: anything
        "newpkg/__init__.py": "",
        "matrix/child.py": "if __name__ == '__main__':\n    from vitdeploy.commands import x\n",  # a program
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    assert import_problems(pkg) == [
        "vitdeploy/deploy/export.py:2 (deploy) imports vitdeploy.pipeline.steps (pipeline), a higher layer",
        "vitdeploy/deploy/uses_harness.py:1 imports the test harness vitdeploy.testing.contract",
        "vitdeploy/newpkg/__init__.py: belongs to no layer (add its top-level name to LAYERS)",
    ]
