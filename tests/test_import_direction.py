"""Import layering of `mpl_tf`, checked by parsing the sources with `ast` (fast: TensorFlow is not imported).

Imports must run one way, lowest layer first:
  infrastructure (`keras`, `losses`, `schedules`, `layout`) -> `data` -> `models` -> `algorithms`
  -> `trainer`, `export`, `experiment` -> entry points (`train`, `predict`, any module calling absl `app.run`).
`layout` is used by the algorithms but never imports them: it knows how to place networks on a mesh, not which
method trains them. An algorithm takes tensors, not data sets, so `algorithms` never imports `data`. A lower layer
that reaches up, even from inside a function, makes a cycle in waiting and ties the layer to code above it.

Every import in a file counts, including those inside functions. `from mpl_tf.pkg import name` imports the module
`mpl_tf.pkg.name` if that file exists, else the package (its `__init__.py`); a submodule import needs only that module.
"""
import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "mpl_tf"
NAMED_ENTRY_POINTS = ("mpl_tf.train", "mpl_tf.predict")


def module_files(package_dir):
  """{dotted module name: file} for every .py file under `package_dir`; a package's `__init__.py` is the package."""
  modules = {}
  for path in sorted(Path(package_dir).rglob("*.py")):
    parts = path.relative_to(Path(package_dir).parent).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    modules[".".join(parts)] = path
  return modules


def _imported(node, module, is_package, known):
  """Dotted names of the package's modules that one import statement imports."""
  if isinstance(node, ast.Import):
    names = [alias.name for alias in node.names]
  else:
    base = node.module or ""
    if node.level:  # relative import: resolved against the importing module's package
      package = module.split(".") if is_package else module.split(".")[:-1]
      package = package[:len(package) - (node.level - 1)]
      base = ".".join(package + ([base] if base else []))
    names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
  found = []
  for name in names:
    while name and name not in known:  # `import mpl_tf.pkg.missing` still imports `mpl_tf.pkg`
      name = name.rpartition(".")[0]
    if name and name not in found:  # `from m import a, b` is one import of `m`
      found.append(name)
  return found


def build_graph(package_dir):
  """{module: {imported package module: ["file:line", ...]}} from every import statement anywhere in each file."""
  root = Path(package_dir).parent
  known = module_files(package_dir)
  graph = {}
  for module, path in known.items():
    edges = graph.setdefault(module, {})
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        for target in _imported(node, module, path.name == "__init__.py", known):
          if target != module:
            edges.setdefault(target, []).append(f"{path.relative_to(root).as_posix()}:{node.lineno}")
  return graph


def entry_points(package_dir):
  """The named entry points plus every module that calls absl's `app.run`."""
  found = set(NAMED_ENTRY_POINTS)
  for module, path in module_files(package_dir).items():
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
      if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "run"
          and isinstance(node.func.value, ast.Name) and node.func.value.id == "app"):
        found.add(module)
  return found


def find_cycles(graph):
  """One cycle (a list of modules, start not repeated) per strongly connected component of `graph` that has one."""
  index, low, stack, on_stack, components = {}, {}, [], set(), []

  def visit(v):  # Tarjan's algorithm; the package is small enough for recursion
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = set()
      while v not in component:
        w = stack.pop()
        on_stack.discard(w)
        component.add(w)
      components.append(component)

  for v in sorted(graph):
    if v not in index:
      visit(v)
  cycles = []
  for component in components:
    start = min(component)
    if len(component) == 1 and start not in graph.get(start, ()):
      continue
    parents, frontier = {}, [start]  # breadth-first within the component: the shortest way back to `start`
    while start not in parents:
      next_frontier = []
      for v in frontier:
        for w in sorted(graph.get(v, ())):
          if w in component and w not in parents:
            parents[w] = v
            next_frontier.append(w)
      frontier = next_frontier
    cycle, node = [], parents[start]
    while node != start:
      cycle.append(node)
      node = parents[node]
    cycles.append([start] + cycle[::-1])
  return sorted(cycles)


def under(module, prefixes):
  return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(graph, sources, forbidden, exempt=()):
  """["file:line -> target", ...] for every import by a module under `sources` of a module under `forbidden`."""
  return [f"{loc} -> {target}" for module in sorted(graph) if under(module, sources) and module not in exempt
          for target, locs in sorted(graph[module].items()) if under(target, forbidden) for loc in locs]


def describe_cycles(graph, cycles):
  lines = []
  for cycle in cycles:
    lines.append("cycle: " + " -> ".join(cycle + cycle[:1]))
    lines += [f"  {loc} -> {b}" for a, b in zip(cycle, cycle[1:] + cycle[:1]) for loc in graph[a].get(b, ["?"])]
  return "\n".join(lines)


@pytest.fixture(scope="module")
def graph():
  g = build_graph(PACKAGE_DIR)
  assert "mpl_tf.algorithms.mpl" in g and "mpl_tf.layout" in g, f"package not found at {PACKAGE_DIR}"
  return g


def _check(found, rule):
  assert not found, f"{rule}; {len(found)} offending import(s):\n  " + "\n  ".join(found)


def test_no_import_cycles(graph):
  cycles = find_cycles(graph)
  assert not cycles, "import cycles among mpl_tf modules:\n" + describe_cycles(graph, cycles)


def test_algorithms_do_not_import_data(graph):
  _check(violations(graph, ["mpl_tf.algorithms"], ["mpl_tf.data"]), "mpl_tf.algorithms must not import mpl_tf.data")


def test_layout_knows_no_method(graph):
  forbidden = ["mpl_tf.algorithms", "mpl_tf.models", "mpl_tf.data", "mpl_tf.experiment", "mpl_tf.trainer"]
  _check(violations(graph, ["mpl_tf.layout"], forbidden), f"mpl_tf.layout must not import {', '.join(forbidden)}")


def test_data_and_models_stay_below_algorithms(graph):
  upper = ["mpl_tf.algorithms", "mpl_tf.experiment", "mpl_tf.trainer"] + sorted(entry_points(PACKAGE_DIR))
  found = violations(graph, ["mpl_tf.data", "mpl_tf.models"], upper)
  found += violations(graph, ["mpl_tf.data"], ["mpl_tf.models"])
  _check(found, f"mpl_tf.data and mpl_tf.models must not import {', '.join(upper)}; mpl_tf.data not mpl_tf.models")


def test_nothing_imports_an_entry_point(graph):
  entries = sorted(entry_points(PACKAGE_DIR))
  _check(violations(graph, ["mpl_tf"], entries, exempt=entries), f"only entry points may import {', '.join(entries)}")


def test_checker_reports_cycles_and_violations(tmp_path):
  fake = {"a": {"b": ["a.py:1"]}, "b": {"c": ["b.py:2"]}, "c": {"a": ["c.py:3"], "d": ["c.py:4"]}, "d": {},
          "s": {"s": ["s.py:5"]}, "mpl_tf.algorithms.x": {"mpl_tf.data.y": ["x.py:6"], "mpl_tf.layout": ["x.py:7"]}}
  assert find_cycles(fake) == [["a", "b", "c"], ["s"]]
  assert "c.py:3 -> a" in describe_cycles(fake, find_cycles(fake))
  assert find_cycles({"a": {"b": []}, "b": {}}) == []
  assert violations(fake, ["mpl_tf.algorithms"], ["mpl_tf.data"]) == ["x.py:6 -> mpl_tf.data.y"]
  assert violations(fake, ["mpl_tf.algorithms"], ["mpl_tf.models"]) == []
  # A tiny package: a function-level import, a package import, from-package-import-module, a multi-name import.
  pkg = tmp_path / "mpl_tf"
  layout_init = "from mpl_tf.layout import nets\nfrom mpl_tf.layout.nets import (f,\n  g)\n"
  for name, text in {"__init__.py": "", "layout/__init__.py": layout_init,
                     "layout/nets.py": "def f():\n  from mpl_tf.algorithms import base\n",
                     "algorithms/__init__.py": "", "algorithms/base.py": "from mpl_tf import layout\n"}.items():
    (pkg / name).parent.mkdir(parents=True, exist_ok=True)
    (pkg / name).write_text(text)
  g = build_graph(pkg)
  assert g["mpl_tf.layout"] == {"mpl_tf.layout.nets": ["mpl_tf/layout/__init__.py:1", "mpl_tf/layout/__init__.py:2"]}
  assert g["mpl_tf.layout.nets"] == {"mpl_tf.algorithms.base": ["mpl_tf/layout/nets.py:2"]}
  assert find_cycles(g) == [["mpl_tf.algorithms.base", "mpl_tf.layout", "mpl_tf.layout.nets"]]
