"""The shape of the package, checked from its sources (issues 14 and 23).

* No import cycle at run time: the graph of the imports the modules make when they run (at module
  level or inside functions; those under ``if TYPE_CHECKING:`` aside) has no cycle.
* One source of session state: outside the sans-IO connection and the applications above the
  sessions, no module assigns a session's ``sequence``, ``end_of_session``, ``login_request``,
  ``close_reason`` or ``close_detail``.
* One delivery loop: a single function named ``_pump`` in the sources.
* Importing the sans-IO connection loads neither asyncio nor a store (``test_connection.py``).
* No Python module of the repository over 700 lines (sources, tests, benchmarks, fuzzing).
"""

from __future__ import annotations

import ast
from pathlib import Path

SOURCES = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SOURCES / "nasdaq_protocols"

#: The applications above the sessions, which may keep their own counters of these names.
APPLICATIONS = (
    "soup/subscriber",
    "soup/relay",
    "soup/cli/",
    "soup/jetstream/",
    "soup/store/",
    "soup/metrics/",
    "soup/feeds/",  # numbers the messages of a capture it imports
    "moldudp64/",  # its own streams, numbers and ends
)
SESSION_STATE = {"sequence", "end_of_session", "login_request", "close_reason", "close_detail"}
#: The sans-IO core: the connection and its decoder, which count the numbers.
SANS_IO_CORE = ("soup/connection.py", "soup/framing.py")


def modules() -> dict[str, tuple[Path, str]]:
    """Every module of the package: dotted name -> (path, the package its relative imports use)."""
    found: dict[str, tuple[Path, str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SOURCES).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
            package = ".".join(parts)
        else:
            package = ".".join(parts[:-1])
        found[".".join(parts)] = (path, package)
    return found


class RunTimeImports(ast.NodeVisitor):
    """The modules a module imports when it runs (``if TYPE_CHECKING:`` blocks skipped)."""

    def __init__(self, package: str, known: dict[str, tuple[Path, str]]) -> None:
        self.package = package
        self.known = known
        self.names: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            for statement in node.orelse:
                self.visit(statement)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.names.update(alias.name for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            name = ".".join(base + ([node.module] if node.module else []))
        else:
            name = node.module or ""
        self.names.add(name)
        for alias in node.names:
            if f"{name}.{alias.name}" in self.known:
                self.names.add(f"{name}.{alias.name}")


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, (path, package) in known.items():
        visitor = RunTimeImports(package, known)
        visitor.visit(ast.parse(path.read_text()))
        targets = set()
        for target in visitor.names:
            while target and target not in known:
                target = target.rpartition(".")[0]
            # A module importing its own package (already being imported) is no cycle.
            if target and target != name and not name.startswith(target + "."):
                targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_at_run_time() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_connection_and_the_applications_assign_session_state() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        if where in SANS_IO_CORE or where == "soup/errors.py" or where.startswith(APPLICATIONS):
            continue  # errors.py: exceptions carry the close reason they report
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr in SESSION_STATE:
                    offenders.append(f"{where}:{node.lineno} assigns .{target.attr}")
    assert offenders == []


def test_one_delivery_loop() -> None:
    pumps = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "_pump"
    ]
    assert len(pumps) <= 1, pumps


def test_no_module_over_700_lines() -> None:
    root = SOURCES.parent
    folders = [PACKAGE, *(root / name for name in ("tests", "bench", "fuzz", "conformance"))]
    long = {
        str(path.relative_to(root)): lines
        for folder in folders
        for path in sorted(folder.rglob("*.py"))
        if (lines := len(path.read_text().splitlines())) > 700
    }
    assert long == {}
