"""The layout's rules, checked on the source (docs/architecture.md says why)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMITS = {"actors": 400, "shipper": 650}


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imports(path: Path, root: Path = ROOT) -> list[str]:
    """Modules imported by ``path`` when it runs (not those under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    out: list[str] = []
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out.append(base)
            out += [f"{base}.{a.name}" for a in node.names]
    return out


def test_no_file_is_longer_than_its_package_allows() -> None:
    long = [
        f"{p.relative_to(ROOT)}: {n} lines (at most {limit})"
        for package, limit in LIMITS.items()
        for p in modules(package)
        if (n := len(p.read_text().splitlines())) > limit
    ]
    assert not long, long


def test_the_library_imports_neither_ray_nor_the_actors() -> None:
    bad = [
        f"{p.relative_to(ROOT)} imports {m}"
        for p in modules("shipper")
        for m in imports(p)
        if m.split(".")[0] in ("ray", "actors")
    ]
    assert not bad, bad


def test_the_actors_import_no_circle() -> None:
    names = {p.stem for p in modules("actors")}
    graph = {
        p.stem: {m.split(".")[1] for m in imports(p) if m.startswith("actors.")} & names
        for p in modules("actors")
    }
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path, node, nxt]))
            if nxt not in seen:
                visit(nxt, [*path, node])
        seen[node] = 2

    for start in sorted(graph):
        if start not in seen:
            visit(start, [])


def test_actor_names_are_spelled_only_in_actors_names() -> None:
    spelled = re.compile(r"""f?["'](router|batcher|producer|dlq|source):""")
    bad = [
        f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
        for p in modules("actors")
        if p.name != "names.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if spelled.search(line)
    ]
    assert not bad, bad


def test_the_circle_check_can_fail(tmp_path: Path) -> None:
    # The checker reads relative imports as the interpreter does.
    pkg = tmp_path / "actors"
    pkg.mkdir()
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("from . import a\nfrom typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from .c import y\n")  # fmt: skip
    assert "actors.b" in imports(pkg / "a.py", tmp_path)
    assert "actors.a" in imports(pkg / "b.py", tmp_path)
    assert "actors.c" not in imports(pkg / "b.py", tmp_path)


def test_every_node_actor_speaks_the_stop_protocol() -> None:
    actors = {
        "router.py": "RouterActor",
        "batcher.py": "BatcherActor",
        "producer.py": "ProducerActor",
        "dlq.py": "DlqActor",
        "file_source.py": "FileSourceActor",
        "http_source.py": "HttpSourceActor",
    }
    for file, cls in actors.items():
        tree = ast.parse((ROOT / "actors" / file).read_text())
        [node] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
        methods = {
            f.name for f in node.body if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        missing = {"stop_intake", "drain", "park", "close"} - methods
        assert not missing, f"{cls} lacks {sorted(missing)}"


# Test files that stop, kill or freeze the broker, start clusters of their own, or stop
# every Ray on the machine: they must not run beside the others on the shared broker.
_DISRUPTS = re.compile(
    r"BrokerSwitch|broker: |cluster_utils|kafka_local_script|SIGSTOP|faultmatrix|"
    r"\"stop\", \"--force\""
)


def _lanes() -> set[str]:
    """The test files scripts/run-tests keeps apart (FAULT_TESTS and LAST_TESTS)."""
    text = (ROOT / "scripts" / "run-tests").read_text()
    found: set[str] = set()
    for name in ("FAULT_TESTS", "LAST_TESTS"):
        m = re.search(rf"^{name}=\(([^)]*)\)", text, re.M)
        assert m, f"scripts/run-tests has no {name}"
        found |= set(m.group(1).split())
    return found


def test_every_test_that_disrupts_the_broker_or_ray_runs_apart() -> None:
    apart = _lanes()
    disrupting = {
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "tests" / "integration").glob("test_*.py"))
        if _DISRUPTS.search(p.read_text())
    }
    assert disrupting, "the scan found nothing: it would pass whatever the lanes hold"
    assert disrupting <= apart, sorted(disrupting - apart)
    assert all((ROOT / t).exists() for t in apart), sorted(apart)
