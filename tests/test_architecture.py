"""The architecture docs/architecture.md describes: the import direction between the
library's layers, private Keras API in one module, and a public API in which every
name the docs cite can be reached.

These read source files and import nothing heavy beyond `keras_prune` itself.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import types
from pathlib import Path

import pytest

import keras_prune

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "keras_prune"

# docs/architecture.md's table, bottom to top: a module may import from its own layer
# and the layers below it, never from a layer above. `keras_prune` (the package's
# __init__) sits above all of them, and the CLI (keras_prune_cli) above that.
LAYERS = [
    ("base", {"errors", "resources", "_keras_compat", "devices", "sparse_encoding", "flops", "autodiff"}),
    ("mechanism", {"handlers", "wrapper"}),
    ("models and data", {"graph", "unfolding", "storage", "data", "models", "training"}),
    ("criteria, methods, selection, schedules", {"criteria", "methods", "selection", "structured", "schedules"}),
    ("API", {"api", "report", "shrink", "folding", "export", "plan", "plotting", "settings", "guard"}),
    ("orchestration", {"callbacks", "checkpoint", "runlog", "sensitivity", "experiment", "state", "results"}),
    ("package", {""}),
]


def _module_files() -> dict[str, Path]:
    """Module path inside keras_prune ("" for the package, "criteria.taylor", ...) -> file."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _layer_of(module: str) -> int:
    top = module.split(".")[0]
    for index, (_, members) in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(
        f"keras_prune.{module} has no layer: add it to the table in docs/architecture.md "
        "and to LAYERS in tests/test_architecture.py"
    )


def _imports(path: Path) -> set[str]:
    """Every module name `path` imports, absolute ("keras_prune.api", "keras.src.x", ...)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_every_module_imports_only_from_its_layer_and_below():
    modules = _module_files()
    wrong = set()
    for module, path in modules.items():
        own = _layer_of(module)
        for name in _imports(path):
            if not name.startswith("keras_prune."):
                continue
            target = name.removeprefix("keras_prune.")
            if target not in modules and target.rpartition(".")[0] in modules:
                target = target.rpartition(".")[0]  # `from keras_prune.x import name`
            if target in modules and _layer_of(target) > own:
                layer = LAYERS[_layer_of(target)][0]
                wrong.add(f"keras_prune.{module} ({LAYERS[own][0]}) imports keras_prune.{target} ({layer})")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_library_never_imports_the_cli():
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _module_files().values()
        for name in _imports(path)
        if name.split(".")[0] in ("keras_prune_cli", "click")
    ]
    assert not offenders, "\n".join(offenders)


def test_private_keras_api_is_used_in_keras_compat_only():
    offenders = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "cli").rglob("*.py")]:
        if path == PACKAGE / "_keras_compat.py":
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"\bkeras\.src\b|\bkeras\._tf_keras\b", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"private Keras API outside keras_prune/_keras_compat.py: {offenders}"


def test_private_attributes_of_other_objects_are_read_in_keras_compat_only():
    # `layer._kernel`, `getattr(model, "_functional")` and the like reach into Keras (or
    # keras-hub) internals as surely as a `keras.src` import does; only a module's own
    # `self._...` is its business.
    offenders = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "cli").rglob("*.py")]:
        if path == PACKAGE / "_keras_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = None
            if isinstance(node, ast.Attribute) and ast.unparse(node.value) not in ("self", "cls"):
                name = node.attr
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
                  and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
                name = node.args[1].value
            if name and name.startswith("_") and not name.startswith("__"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert not offenders, "private attributes outside keras_prune/_keras_compat.py:\n" + "\n".join(offenders)


def test_the_package_all_lists_what_it_exports_and_nothing_missing():
    assert len(set(keras_prune.__all__)) == len(keras_prune.__all__)
    missing = [name for name in keras_prune.__all__ if not hasattr(keras_prune, name)]
    assert not missing
    # Every public function and class of the package is documented.
    undocumented = [
        name
        for name in keras_prune.__all__
        if not isinstance(getattr(keras_prune, name), types.ModuleType)
        and not inspect.getdoc(getattr(keras_prune, name))
    ]
    assert not undocumented


def _modules_with_all() -> list[types.ModuleType]:
    found = []
    for module in _module_files():
        if module.split(".")[-1].startswith("_"):
            continue
        imported = importlib.import_module(f"keras_prune.{module}" if module else "keras_prune")
        if hasattr(imported, "__all__"):
            found.append(imported)
    return found


@pytest.mark.parametrize("module", _modules_with_all(), ids=lambda m: m.__name__)
def test_each_modules_all_names_defined_documented_public_names(module):
    for name in module.__all__:
        assert not name.startswith("_"), f"{module.__name__}.__all__ lists the private {name}"
        assert hasattr(module, name), f"{module.__name__}.__all__ lists {name}, which it lacks"
        value = getattr(module, name)
        if inspect.isfunction(value) or inspect.isclass(value):
            assert inspect.getdoc(value), f"{module.__name__}.{name} has no docstring"


def test_the_shrink_modules_public_names_are_all_reachable_from_the_package():
    # `keras_prune.shrink` is the function, which hides the module of the same name
    # as an attribute; so nothing public may need the module's path.
    shrink_module = importlib.import_module("keras_prune.shrink")
    assert callable(keras_prune.shrink) and keras_prune.shrink is shrink_module.shrink
    for name in shrink_module.__all__:
        assert getattr(keras_prune, name) is getattr(shrink_module, name)
        assert name in keras_prune.__all__


def _reachable(dotted: str) -> bool:
    """Whether `dotted` ("keras_prune.a.b") is reached by attribute access from the
    package, importing submodules of packages on the way (as ``import keras_prune.a`` does)."""
    parts = dotted.split(".")
    value: object = keras_prune
    for index, part in enumerate(parts[1:], start=1):
        if hasattr(value, part):
            value = getattr(value, part)
        elif isinstance(value, types.ModuleType) and hasattr(value, "__path__"):
            try:
                value = importlib.import_module(".".join(parts[: index + 1]))
            except ImportError:
                return False
        else:
            return False
    return True


def test_every_keras_prune_name_the_docs_cite_is_reachable():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    cited = {
        (match.group(0).rstrip("."), path.name)
        for path in docs
        for match in re.finditer(r"\bkeras_prune(?:\.[A-Za-z_][A-Za-z0-9_]*)+", path.read_text(encoding="utf-8"))
    }
    assert len(cited) > 20  # the scan finds the citations
    unreachable = sorted(f"{name} ({doc})" for name, doc in cited if not _reachable(name))
    assert not unreachable
