"""The package's layout: no import circle within waprov, and steps/ holds steps only.

The import graph is read from the source (ast), every import counted: at the top of a
module, under `if TYPE_CHECKING:`, and inside a function (a deferred import is still a
dependency: the local phase defers the HTTP side, it does not make it independent).
"""

from __future__ import annotations

import ast
import os
from typing import Dict, List, Set, Tuple

from tests.conftest import ROOT
from waprov.provision import STEPS

PACKAGE = os.path.join(ROOT, "waprov")
# System's own import that closes a circle (helddir.py is System's descriptor half, for
# changes under a user's home): left out of the graph here, and no other import may close one.
KNOWN: Set[Tuple[str, str]] = set()


def modules(package: str = PACKAGE) -> Dict[str, str]:
    """{dotted module name: its file} of every module of the package."""
    found = {}
    for top, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            parts = os.path.relpath(os.path.join(top, name), os.path.dirname(package))[:-3].split(os.sep)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = os.path.join(top, name)
    return found


def imports(source: str, module: str, known: Set[str], is_package: bool) -> Set[str]:
    """The package's modules that `source` (the module `module`) imports, anywhere in it."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package upwards
                parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in known:  # `from a.b import c`: c may be a module or a name
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def graph(package: str = PACKAGE) -> Dict[str, Set[str]]:
    found = modules(package)
    edges = {}
    for module, path in found.items():
        with open(path, encoding="utf-8") as f:
            edges[module] = imports(f.read(), module, set(found), path.endswith("__init__.py"))
    return edges


def circles(edges: Dict[str, Set[str]]) -> List[Set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[Set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_within_waprov() -> None:
    edges = graph()
    assert all(b in edges[a] for a, b in KNOWN)  # gone: take it out of KNOWN
    assert circles({a: {b for b in bs if (a, b) not in KNOWN} for a, bs in edges.items()}) == []


def test_the_graph_sees_a_circle_however_it_is_imported(tmp_path: os.PathLike[str]) -> None:
    """The check can fail: a circle closed under TYPE_CHECKING, inside a function, or by a
    relative import is found (as model.py's with imds.py and ovf.py was)."""
    pkg = os.path.join(str(tmp_path), "waprov")
    os.makedirs(os.path.join(pkg, "sub"))
    files = {
        "__init__.py": "",
        "model.py": "TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from waprov.imds import ImdsData\n",
        "imds.py": "from waprov.model import PublicKey\n",
        "a.py": "def f():\n    from waprov import b\n",
        "b.py": "import waprov.sub.c\n",
        "sub/__init__.py": "",
        "sub/c.py": "from .. import a\n",
        "alone.py": "from waprov.model import x\nimport os\n",
    }
    for name, text in files.items():
        with open(os.path.join(pkg, name), "w", encoding="utf-8") as f:
            f.write(text)
    assert sorted(sorted(c) for c in circles(graph(pkg))) == [
        ["waprov.a", "waprov.b", "waprov.sub.c"],
        ["waprov.imds", "waprov.model"],
    ]


def test_steps_holds_provisioning_steps_only() -> None:
    """Every module of waprov/steps/ has a step of the provisioning run (a function taking
    the run's context, named in provision.STEPS)."""
    named = {step.target.partition(":")[0] for step in STEPS}
    steps = {m for m in modules() if m.startswith("waprov.steps.")}
    assert steps and steps <= named, sorted(steps - named)
