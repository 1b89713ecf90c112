"""The import contract of DESIGN.md ("Packages and layers"), checked from the source with ``ast``.

import-linter's graph builder (grimp) walks one folder per root package, so it cannot follow
setuptools' ``package-dir`` mapping (``mmedge.export`` lives in ``export/``). This module builds
the same graph from ``pyproject.toml``'s mapping and checks two rules on it:

- **layers**: a module imports only from its own layer or below; packages of an independent
  layer (``|``) do not import each other.
- **privacy**: a private module (a name part starting with ``_``) is imported only from inside the
  unit that holds it (``mmedge.export._split`` only from ``mmedge.export.*``).

Every import counts: top-level, inside functions, relative, and ``TYPE_CHECKING`` blocks.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Top to bottom. In a layer, ":" separates units that may import each other, "|" independent ones.
# A unit is ``mmedge.<name>``: a sub-package, or a module of the core folder ``mmedge/``.
LAYERS = (
    "__main__ : cli : quantize_cli : demo : bench : serve : integrations : inspect : train : data : models",
    "export | quantize | mobile | runtime",
    "sessions : schedule : openvino_graph : openvino_cache : openvino_backend : process_timing : timing : worker_process : graph : verify : bundle : providers : decoding : console : cpu : heap : errors",
)


@dataclass(frozen=True)
class Import:
    importer: str  # module doing the import
    imported: str  # module (or module.attribute) imported
    line: int


@dataclass(frozen=True)
class Violation:
    rule: str  # "layers" | "privacy" | "unassigned"
    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.rule}: {self.importer}:{self.line} imports {self.imported}"


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every ``mmedge`` module name and its file, through ``pyproject.toml``'s package-dir mapping."""
    mapping: Mapping[str, str] = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    found: dict[str, Path] = {}
    for package, folder in mapping.items():
        base = root / folder
        for path in base.rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            if _owner(name, mapping) == package:
                found[name] = path
    return found


def _owner(name: str, mapping: Mapping[str, str]) -> str:
    return max((p for p in mapping if name == p or name.startswith(f"{p}.")), key=len)


def imports(name: str, path: Path) -> Iterator[Import]:
    """The ``mmedge`` imports of one module, relative ones resolved."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mmedge":
                    yield Import(name, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            if base.split(".")[0] != "mmedge":
                continue
            for alias in node.names:
                yield Import(name, f"{base}.{alias.name}", node.lineno)


def unit(module: str) -> str:
    """``mmedge.export._split`` -> ``export``; ``mmedge.cli`` -> ``cli``; ``mmedge`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(name: str) -> tuple[int, bool] | None:
    """(index from the top, whether its units are independent) of unit ``name``; None if unassigned."""
    for index, layer in enumerate(LAYERS):
        independent = "|" in layer
        units = [u.strip() for u in layer.replace("|", ":").split(":")]
        if name in units:
            return index, independent
    return None


def resolve(imported: str, known: Mapping[str, Path]) -> str:
    """The module an import names: ``mmedge.bundle.Manifest`` -> ``mmedge.bundle``."""
    while imported not in known and "." in imported:
        imported = imported.rsplit(".", 1)[0]
    return imported


def violations(extra: tuple[Import, ...] = ()) -> list[Violation]:
    """Every import that breaks the layers or privacy; ``extra`` adds imports (to test the check)."""
    known = modules()
    found: list[Violation] = []
    everything = [i for name, path in sorted(known.items()) for i in imports(name, path)] + list(extra)
    for imp in everything:
        target = resolve(imp.imported, known)
        source_unit, target_unit = unit(imp.importer), unit(target)
        if "" in (source_unit, target_unit):
            continue  # the top package's __init__ re-exports errors only
        source, dest = layer_of(source_unit), layer_of(target_unit)
        if source is None or dest is None:
            found.append(Violation("unassigned", imp.importer, target, imp.line))
            continue
        if source_unit != target_unit and (dest[0] < source[0] or (dest[0] == source[0] and source[1])):
            found.append(Violation("layers", imp.importer, target, imp.line))
        private = [i for i, part in enumerate(target.split(".")) if part.startswith("_") and part != "__main__"]
        if private:
            holder = ".".join(target.split(".")[: private[0]])
            inside = imp.importer == holder or imp.importer.startswith(f"{holder}.")
            # every module is inside ``mmedge``: a private module must live in a sub-package to be private
            if holder == "mmedge" or not inside:
                found.append(Violation("privacy", imp.importer, target, imp.line))
    return found
