"""The import rules of docs/architecture.md, read from the source: lower layers never import upper ones."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# package (or module) -> the src packages / modules it may import
ALLOWED = {
    "src.utils": {"src.utils"},
    "src.config": {"src.utils"},
    "src.layers": {"src.layers"},
    "src.maskrcnn": {"src.layers", "src.maskrcnn"},
    "src.pointrend": {"src.layers", "src.maskrcnn", "src.pointrend"},
    "src.evaluation": {"src.evaluation", "src.utils"},
    "src.dataset": {"src.dataset", "src.config", "src.utils"},
    "src.training": {"src.training", "src.utils", "src.maskrcnn_pointrend_r50"},
}


def src_imports(path):
    """The ``src.*`` modules a file imports, at any depth of the file."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n == "src" or n.startswith("src.")}


def python_files(*folders):
    for folder in folders:
        for base, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if name.endswith(".py"):
                    yield os.path.join(base, name)


def module_of(path):
    return os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")


def allowed_prefixes(module):
    for owner, allowed in ALLOWED.items():
        if module == owner or module.startswith(owner + "."):
            return allowed
    return None


def test_lower_layers_do_not_import_upper_ones():
    broken = []
    for path in python_files("src"):
        module = module_of(path)
        allowed = allowed_prefixes(module)
        if allowed is None:
            continue
        for name in src_imports(path):
            if not any(name == a or name.startswith(a + ".") for a in allowed):
                broken.append(f"{module} imports {name}")
    assert not broken, broken


def test_demo_code_is_used_only_by_the_demo_tests_and_bench():
    users = [module_of(p) for p in python_files("src") if not module_of(p).startswith("src.demo")
             and any(n.startswith("src.demo") for n in src_imports(p))]
    users += [os.path.basename(p) for p in os.listdir(ROOT) if p.endswith(".py")
              and any(n.startswith("src.demo") for n in src_imports(os.path.join(ROOT, p)))]
    assert not users, users


def test_bench_is_self_contained():
    for path in python_files("bench"):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("tests", "synthetic", "conftest")), (path, node.module)
        with open(path, encoding="utf-8") as f:
            assert '"tests"' not in f.read(), path  # no sys.path entry into the test folder


def test_the_rule_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from src.pointrend.point_head import StandardPointHead\n")
    assert "src.pointrend.point_head" in src_imports(str(bad))
    assert not any(n.startswith("src.pointrend") for n in ALLOWED["src.maskrcnn"])
