"""Files a server or a client runs without vitdeploy installed, made from vitdeploy's own code.

`client.py` and the Triton ensemble's Python preprocessing `model.py` must run where only numpy
and Pillow are installed, yet preprocess exactly as `vitdeploy infer` does. Their templates in this
folder import `vitdeploy.image_transform` on a line marked `# vitdeploy:inline image_transform`
(so the templates themselves run, and are tested, inside vitdeploy); `render` replaces that line with
the module's source: one implementation, copied verbatim, never a second one kept in step by hand.
"""
from __future__ import annotations

import ast
from pathlib import Path

MARK = "# vitdeploy:inline image_transform"


def module_body(source: str) -> str:
    """A module's source without its docstring and `from __future__` imports (which must come first)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    drop = set()
    first = tree.body[0] if tree.body else None
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
            and isinstance(first.value.value, str):
        drop.update(range(first.lineno - 1, first.end_lineno))
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            drop.update(range(node.lineno - 1, node.end_lineno))
    return "\n".join(line for i, line in enumerate(lines) if i not in drop).strip("\n")


def render(template: Path) -> str:
    """The template with its marked import replaced by image_transform's code."""
    from vitdeploy import __version__
    from vitdeploy import image_transform

    text = template.read_text()
    out, found = [], False
    for line in text.splitlines():
        if line.rstrip().endswith(MARK):
            found = True
            out += [f"# ---- inlined from vitimage_transform.py (vitdeploy {__version__}): the preprocessing",
                    "# ---- `vitdeploy infer`, its accuracy step and calibration run; do not edit here",
                    module_body(image_transform.inline_source()),
                    "# ---- end of the inlined preprocessing"]
        else:
            out.append(line)
    if not found:
        raise RuntimeError(f"{template.name} has no '{MARK}' line")
    return "\n".join(out) + "\n"
