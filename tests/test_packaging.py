"""Packaging: the core imports without the heavy extras, the distribution installs only our own top-level names,
every third-party import is a declared dependency, and nothing imports the generic folder names."""

import ast
import importlib.metadata as md
import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OWN = {"jaxmodels", "jaxmodels_interop", "jaxmodels_training", "jaxmodels_kernels", "jaxmodels_benchmarks"}
PACKAGE_DIRS = ("jaxmodels", "interop", "training", "kernels", "benchmarks")
FOLDER_NAMES = {"interop", "training", "kernels", "benchmarks"}  # installed as jaxmodels_<folder>
HEAVY = ("torch", "numba", "faiss", "transformers", "jaxmodels_interop", "jaxmodels_training", "jaxmodels_benchmarks")

CORE_WITHOUT_EXTRAS = """
import json, sys, tempfile

BLOCKED = {blocked!r}


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked by the packaging test: {{name}}", name=name)
        return None


sys.meta_path.insert(0, Blocker())

import numpy as np

import jaxmodels

model = jaxmodels.Hyformer.from_config(jaxmodels.HyformerConfig.tiny())
ids = np.arange(13, dtype=np.int32).reshape(1, 13) % 17
logits = np.asarray(model(ids).logits)
with tempfile.TemporaryDirectory() as tmp:
    model.save_pretrained(tmp)
    loaded = jaxmodels.from_pretrained(tmp)
again = np.asarray(loaded(ids).logits)
print(json.dumps({{"shape": list(logits.shape), "max_diff": float(np.max(np.abs(logits - again))),
                  "loaded": type(loaded).__name__,
                  "imported": sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)}}))
"""


def test_core_needs_none_of_the_heavy_dependencies():
    code = CORE_WITHOUT_EXTRAS.format(blocked=set(HEAVY))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    print("blocked modules in sys.modules:", seen["imported"])
    assert seen["imported"] == []
    assert seen["shape"] == [1, 13, 17] and seen["loaded"] == "Hyformer"
    assert seen["max_diff"] == 0.0


def test_the_blocker_blocks():
    code = CORE_WITHOUT_EXTRAS.format(blocked={"jax"})  # something the core does need
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode != 0 and "blocked by the packaging test: jax" in proc.stderr, proc.stderr[-3000:]


def _importable_in(directory: Path) -> set[str]:
    """Top-level names a sys.path entry provides: packages (with __init__.py) and modules."""
    names = {p.name for p in directory.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    return names | {p.name.partition(".")[0] for p in directory.iterdir() if p.suffix in (".py", ".so", ".pyd")}


def _finder_mapping(path: Path) -> set[str]:
    """The top-level names of a setuptools editable finder (its MAPPING: name -> source directory)."""
    for node in ast.parse(path.read_text()).body:
        target = node.target if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [None])[0]
        if isinstance(target, ast.Name) and target.id == "MAPPING":
            return set(ast.literal_eval(node.value))
    raise AssertionError(f"{path}: an editable finder without a MAPPING")


def installed_distribution() -> md.Distribution:
    """The installed jaxmodels: not the build's jaxmodels.egg-info in the repository root (on sys.path first when
    pytest runs from there), which lists the sources rather than what was installed."""
    path = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    found = list(md.distributions(name="jaxmodels", path=path))
    if not found:
        pytest.skip("jaxmodels is not installed (pip install -e .): no distribution to inspect")
    return found[0]


def provided_top_level_names(dist: md.Distribution) -> set[str] | None:
    """The importable top-level names a distribution installs, from its RECORD: package directories and modules
    in site-packages, an editable finder's MAPPING, and the directories a path .pth puts on sys.path.
    None when the distribution records no files."""
    if dist.files is None:
        return None
    names = set()
    for file in dist.files:
        parts = Path(file).parts
        if parts[0] == ".." or parts[0] == "__pycache__" or parts[0].endswith((".dist-info", ".data")):
            continue
        if len(parts) > 1:
            names.add(parts[0])
        elif parts[0].startswith("__editable___") and parts[0].endswith("_finder.py"):
            names |= _finder_mapping(Path(dist.locate_file(file)))
        elif parts[0].endswith(".pth"):
            for line in Path(dist.locate_file(file)).read_text().splitlines():
                if not line.strip() or line.startswith(("import ", "import\t", "#")):
                    continue  # site.py runs the import lines (an editable finder's install): no sys.path entry
                entry = Path(dist.locate_file(line.strip()))  # relative entries are relative to site-packages
                if entry.is_dir():
                    names |= _importable_in(entry)
        elif parts[0].endswith((".py", ".so", ".pyd")):
            names.add(parts[0].partition(".")[0])
    return names


def test_the_distribution_installs_only_our_names():
    dist = installed_distribution()
    names = provided_top_level_names(dist)
    if names is None:
        pytest.skip("the installed jaxmodels has no RECORD: cannot tell which top-level names it installs")
    assert names == OWN
    top_level = dist.read_text("top_level.txt")
    if top_level is not None:
        assert set(top_level.split()) == OWN


def _fake_dist(tmp_path: Path, record: dict[str, str]) -> md.Distribution:
    info = tmp_path / "fake-0.1.dist-info"
    info.mkdir(parents=True)
    for name, text in record.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake\nVersion: 0.1\n")
    (info / "RECORD").write_text("".join(f"{name},,\n" for name in [*record, "fake-0.1.dist-info/RECORD"]))
    return md.PathDistribution(info)


@pytest.mark.parametrize("kind", ["regular", "editable", "path-pth"])
def test_provided_names_sees_every_install_kind(tmp_path, kind):
    """The reader above finds a generic name however it is installed (so the test above can fail)."""
    src = tmp_path / "src"
    (src / "interop").mkdir(parents=True)
    (src / "interop" / "__init__.py").write_text("")
    record = {
        "regular": {"jaxmodels/__init__.py": "", "interop/__init__.py": "", "helper.py": ""},
        "editable": {"__editable__.fake-0.1.pth": "import __editable___fake_0_1_finder; x.install()\n",
                     "__editable___fake_0_1_finder.py":
                         f"MAPPING: dict[str, str] = {{'jaxmodels': 'x', 'interop': {str(src / 'interop')!r}}}\n"},
        "path-pth": {"__editable__.fake-0.1.pth": f"{src}\n"},
    }[kind]
    names = provided_top_level_names(_fake_dist(tmp_path / "site", record))
    assert "interop" in names and names != OWN
    assert names == {"regular": {"jaxmodels", "interop", "helper"}, "editable": {"jaxmodels", "interop"},
                     "path-pth": {"interop"}}[kind]


def _sources(*dirs: str):
    for d in dirs:
        yield from sorted((ROOT / d).rglob("*.py"))


def _absolute_imports(tree: ast.AST):
    """(line, module) for every absolute import statement, at any depth (function-level imports included)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.lineno, node.module


def third_party_imports() -> dict[str, set[str]]:
    """Top-level import name -> the files importing it, over the installed packages' sources."""
    found: dict[str, set[str]] = {}
    for path in _sources(*PACKAGE_DIRS):
        for _, module in _absolute_imports(ast.parse(path.read_text(), str(path))):
            top = module.partition(".")[0]
            if top not in sys.stdlib_module_names and top not in OWN:
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _normalise(dist_name: str) -> str:
    return re.sub(r"[-_.]+", "-", dist_name).lower()


def test_every_third_party_import_is_a_declared_dependency():
    requirements = installed_distribution().requires or []
    declared = {_normalise(re.match(r"[A-Za-z0-9._-]+", req).group()) for req in requirements}
    providers = md.packages_distributions()
    imports = third_party_imports()
    assert {"jax", "flax", "numpy", "ml_dtypes", "huggingface_hub", "transformers", "torch"} <= set(imports)
    # An optional dependency that is not installed here has no provider to look up: its import name must then
    # be the distribution name itself, or one of the known renamings.
    renamed = {"faiss": "faiss-cpu", "PIL": "pillow", "sklearn": "scikit-learn"}
    undeclared = {name: sorted(files)[:3] for name, files in imports.items()
                  if not any(_normalise(d) in declared for d in providers.get(name, [renamed.get(name, name)]))}
    assert not undeclared, (f"imported but provided by no declared dependency of jaxmodels (base or an extra; "
                            f"providers: {({n: providers.get(n) for n in undeclared})}): {undeclared}")


def _module_strings(tree: ast.AST):
    """(line, module) for modules imported by name: importlib.import_module / __import__ of a (leading) literal.

    `python -m benchmarks` from the repository root is sanctioned (pyproject.toml), so `-m` arguments are not checked.
    """
    def leading_text(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            return node.values[0].value
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if func in ("import_module", "__import__") and (text := leading_text(node.args[0])) is not None:
                yield node.lineno, text


def short_name_imports() -> list[str]:
    bad = []
    for path in _sources(*PACKAGE_DIRS, "tests", "examples"):
        tree = ast.parse(path.read_text(), str(path))
        for line, module in [*_absolute_imports(tree), *_module_strings(tree)]:
            if module.partition(".")[0] in FOLDER_NAMES:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    return bad


def test_nothing_imports_the_folder_names():
    assert short_name_imports() == []


def test_folder_name_imports_are_seen():
    code = textwrap.dedent("""
        import training.hyformer
        def f():
            from kernels import fwht
            importlib.import_module(f"benchmarks.suites.{name}")
            __import__("interop.convert_cli")
        from jaxmodels_training import hyformer
        from . import training
    """)
    found = [module for _, module in [*_absolute_imports(ast.parse(code)), *_module_strings(ast.parse(code))]
             if module.partition(".")[0] in FOLDER_NAMES]
    assert sorted(found) == ["benchmarks.suites.", "interop.convert_cli", "kernels", "training.hyformer"]


def test_the_kernels_folder_never_shadows_hugging_faces_kernels_package():
    """transformers (>= 5.25) imports Hugging Face's `kernels`; with the repository root first on sys.path (pytest,
    `python -m ...` from the root) a regular package in our kernels/ folder would be found instead. Without an
    __init__.py the folder is only a namespace portion, which loses to any regular package later on the path."""
    assert not (ROOT / "kernels" / "__init__.py").exists()
    code = ("import importlib.util, sys; sys.path.insert(0, sys.argv[1]); spec = importlib.util.find_spec('kernels'); "
            "print(spec.origin if spec else None)")
    origin = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, check=True).stdout
    if importlib.util.find_spec("kernels") is not None and md.packages_distributions().get("kernels"):
        assert origin.strip() not in ("None", "") and not origin.strip().startswith(str(ROOT / "kernels")), origin
