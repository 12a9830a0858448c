"""The package's layering: no module imports one that imports it back, and the light types stay light.
The tests' layout: test files import no other test file, and modules have their own test file."""

import ast
import subprocess
import sys
from pathlib import Path

from image_to_video.config import PROJECT_DIR

PACKAGE = PROJECT_DIR / "image_to_video"


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_DIR).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every package module ``path`` imports, at the top or inside a function."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
            if node.module is None:  # from . import x, y
                found.update(f"{base}.{alias.name}" for alias in node.names)
            else:
                found.add(target)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("image_to_video"):
            found.add(node.module)
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                return [*trail[trail.index(target):], target] if target in trail else [node, target]
            if target not in state:
                cycle = visit(target, [*trail, target])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_light_layers_import_neither_torch_nor_gradio():
    light = ["progress", "model_status", "job_store", "job_queue", "live", "outputs", "request", "config",
             "errors", "i18n", "processes"]
    code = ("import sys\n" + "".join(f"import image_to_video.{name}\n" for name in light) +
            "print(sorted(m for m in ('torch', 'gradio', 'diffusers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_pages_views_are_pure_functions_free_of_gradio():
    tree = ast.parse((PACKAGE / "ui" / "views.py").read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in imported if name.split(".")[0] in ("gradio", "torch")}


def test_modules_stay_small_enough_to_read():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                length = node.end_lineno - node.lineno + 1
                assert length <= 250, f"{module_name(path)}.{node.name} is {length} lines"
    engine = next(n for n in ast.parse((PACKAGE / "engine.py").read_text()).body
                  if isinstance(n, ast.ClassDef) and n.name == "Engine")
    assert engine.end_lineno - engine.lineno + 1 <= 150


# -- the tests' own layout -----------------------------------------------------------------------------

TESTS = PROJECT_DIR / "tests"

#: Modules whose tests once lived only in feature files; each has a test file of its own now.
MIRRORED = ("job_store", "job_queue", "worker", "server", "app", "cli", "process_channel")


def imported_test_files(source: str) -> list[str]:
    """The test files and conftest that ``source`` (a module in tests/) imports, anywhere in it."""
    def is_test_file(name: str) -> bool:  # "test_jobs", "conftest"
        return name.startswith("test_") or name == "conftest"

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names
                      if alias.name.startswith("tests.") and is_test_file(alias.name.split(".")[1])]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module.split(".")[0] == "tests":  # from tests.test_x import ..., from tests import
                module = module.removeprefix("tests").lstrip(".")
            elif node.level != 1:
                continue
            names = [module.split(".")[0]] if module else [alias.name for alias in node.names]
            found += [name for name in names if is_test_file(name)]
    return found


def test_no_test_file_imports_another_test_file_or_conftest():
    offenders = {path.name: imported_test_files(path.read_text(encoding="utf-8")) for path in TESTS.glob("test_*.py")}
    assert {name: imported for name, imported in offenders.items() if imported} == {}, (
        "move what they share into tests/helpers.py (plain code) or tests/conftest.py (fixtures)")


def test_the_import_check_finds_every_way_to_import_a_test_file():
    for source in ("from .test_jobs import Jobs", "from .conftest import SMALL", "import tests.test_jobs",
                   "from tests.test_jobs import Jobs", "from tests import test_jobs", "from . import conftest",
                   "def f():\n    from .test_api import call\n"):
        assert imported_test_files(source), source
    for source in ("from .helpers import Jobs", "from .app_process import AppProcess", "import tests.helpers",
                   "from image_to_video import app", "from . import helpers"):
        assert imported_test_files(source) == [], source


def test_each_of_these_modules_has_its_own_test_file_with_tests_in_it():
    def tests_in(path: Path) -> list[str]:
        return [node.name for node in ast.parse(path.read_text(encoding="utf-8")).body
                if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]

    assert all((PACKAGE / f"{module}.py").is_file() for module in MIRRORED)
    lacking = [f"tests/test_{module}.py" for module in MIRRORED
               if not (TESTS / f"test_{module}.py").is_file() or not tests_in(TESTS / f"test_{module}.py")]
    assert lacking == [], "each of these modules needs its own test file, with its tests in it"


# -- model families ------------------------------------------------------------------------------------

def pipeline_classes() -> set[str]:
    """Every pipeline class diffusers exports (``I2VGenXLPipeline``, ``WanImageToVideoPipeline``, ...)."""
    import diffusers

    return {name for name in dir(diffusers) if name.endswith("Pipeline") and name != "DiffusionPipeline"}


def named_pipelines(source: str, classes: set[str]) -> set[str]:
    """The pipeline classes ``source`` names anywhere: code, strings or comments."""
    import re

    return {word for word in re.findall(r"[A-Za-z0-9_]+", source) if word in classes}


def test_only_the_families_folder_names_a_diffusers_pipeline_class():
    classes = pipeline_classes()
    assert {"I2VGenXLPipeline", "WanImageToVideoPipeline"} <= classes
    outside = {module_name(path): named for path in PACKAGE.rglob("*.py")
               if "families" not in path.relative_to(PACKAGE).parts
               and (named := named_pipelines(path.read_text(encoding="utf-8"), classes))}
    assert outside == {}, "a model family's pipeline belongs in image_to_video/families/<family>/"


def test_the_pipeline_name_check_finds_a_name_in_code_and_in_words():
    classes = {"WanImageToVideoPipeline"}
    assert named_pipelines("from diffusers import WanImageToVideoPipeline", classes) == classes
    assert named_pipelines('"""loads a WanImageToVideoPipeline."""', classes) == classes
    assert named_pipelines("WanImageToVideoPipelineTester = 1", classes) == set()
