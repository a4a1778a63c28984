"""The package's layers: imports go one way, from the interfaces down to geometry, without cycles.

    interfaces (cli, demo, slide, server, the public API)       6
    pipeline: sources, Dask conversion, export                  5     training (only the CLI's
    store: layout, writer, reader, verify                       4     train commands load it)
    zarr_codecs: cps_latent for numcodecs and zarr 3            3
    coding: entropy coder, chunk bitstream                      2
    transforms: layers, model, geometry, tiling, weights        1
    errors                                                      0

A module may import from its own layer or any layer below; nothing but training imports training.
Lazy imports inside functions count as much as top-level ones: they run on the same paths.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cps_tiles"
LAYERS = {"errors": 0, "transforms": 1, "coding": 2, "zarr_codecs": 3, "store": 4, "pipeline": 5, "training": 5,
          "cli": 6, "demo": 6, "slide": 6, "server": 6, "": 6}


def _module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """cps_tiles modules (dotted, relative to the package) that the file at ``path`` imports."""
    here = _module_name(path, root).split(".") if _module_name(path, root) else []
    package = here if path.name == "__init__.py" else here[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "cps_tiles":
                base = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # ``from . import x`` may name a module or an attribute
                full = ".".join([*base, alias.name])
                out.add(full if _exists(full, root) else ".".join(base))
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("cps_tiles.")}
    return out


def _exists(module: str, root: Path = PACKAGE) -> bool:
    p = root.joinpath(*module.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _layer(module: str) -> int:
    top = module.split(".")[0]
    assert top in LAYERS, f"module cps_tiles.{module} belongs to no layer; add it to LAYERS here and in the docs"
    return LAYERS[top]


GRAPH = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module):
    for target in GRAPH[module]:
        assert _layer(target) <= _layer(module), f"cps_tiles.{module} (layer {_layer(module)}) imports " \
                                                 f"cps_tiles.{target} (layer {_layer(target)})"
        if target.split(".")[0] == "training":
            assert module.split(".")[0] == "training", f"cps_tiles.{module} imports the training code ({target})"


def test_no_import_cycles():
    state: dict[str, str] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for t in GRAPH.get(m, ()):
            if state.get(t) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*path, m, t]))
            if t not in state:
                visit(t, [*path, m])
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [])


def test_checker_reads_every_import_form(tmp_path):
    """The checker is not vacuous: relative, absolute and lazy imports of a module are all edges."""
    for sub in ("transforms", "store"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "__init__.py").write_text("")
    (tmp_path / "store" / "reader.py").write_text("")
    (tmp_path / "errors.py").write_text("")
    bad = tmp_path / "transforms" / "model.py"
    bad.write_text("from ..store.reader import CPSImage\nimport cps_tiles.errors\n"
                   "def f():\n    from cps_tiles.store import reader\n")
    assert _imports(bad, tmp_path) == {"store.reader", "errors"}
    assert _layer("store.reader") > _layer("transforms.model")
    assert {"errors", "transforms.geometry"} <= GRAPH["coding.bitstream"]  # real edges of the package


def _fresh_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_help_and_usage_errors_do_not_import_torch():
    code = ("import sys, contextlib, io\n"
            "from cps_tiles.cli import main\n"
            "for argv in (['--help'], ['convert', '--help'], ['convert'], ['decode', 'a.zarr', 'out.png', '--region', 'x']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            "        try:\n"
            "            main(argv)\n"
            "        except SystemExit:\n"
            "            pass\n"
            "print(sorted(m for m in ('torch', 'zarr', 'dask', 'pyvips') if m in sys.modules))")
    assert _fresh_python(code) == "[]"


def test_decoding_does_not_load_the_training_code(tmp_path):
    """The encode and decode path imports no training module (nor matplotlib, which only it uses)."""
    code = ("import sys, numpy as np, cps_tiles\n"
            f"img = cps_tiles.convert(np.full((70, 90, 3), 128, np.uint8), {str(tmp_path / 's.zarr')!r}, codec='tiny-test', "
            "chunk=64, tile=64, progress=False)\n"
            "img[10:20, 30:40]\n"
            "print(sorted(m for m in sys.modules if m.startswith('cps_tiles.training') or m == 'matplotlib'))")
    assert _fresh_python(code) == "[]"
