"""Rules of the package's source that no import-graph test sees, checked by parsing the files with `ast`.

- One Keras: only `mpl_tf/keras.py` imports a Keras (`tf_keras`; never Keras 3, `keras_cv` or `tensorflow.keras`),
  so no module can mix two Kerases whose layers and optimizers do not work together (WORKSPACE.md).
- gin at the edge: only the gin edge (`experiment`, with its helpers `gin_checks` and `show_config`) imports gin;
  the library below it is plain Python, configured by arguments.
- An algorithm runs on a DTensor mesh only through the layout helpers: where it splits a concatenated batch or
  makes a variable it calls `layout.split` / `layout.variable` (plain `tf.split` / `tf.Variable` produce
  tensors and variables with no layout, which DTensor refuses or mis-shards; mpl_tf/layout/networks.py).
Each rule's checker is also run on a made-up file that breaks it, so the test can fail.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mpl_tf"
KERAS_MODULES = ("keras", "tf_keras", "keras_cv", "tensorflow.keras")
GIN_EDGE = ("experiment.py", "gin_checks.py", "show_config.py")
MESH_UNSAFE_CALLS = {"tf.split": "layout.split", "tf.Variable": "layout.variable"}


def imported_modules(source: str):
  """Top-level names of every module a source imports, anywhere in the file (inside functions too)."""
  names = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names += [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.append(node.module)
  return names


def keras_imports(source: str):
  return [n for n in imported_modules(source) if n in KERAS_MODULES or n.startswith(tuple(m + "." for m in KERAS_MODULES))]


def gin_imports(source: str):
  return [n for n in imported_modules(source) if n == "gin" or n.startswith("gin.")]


def mesh_unsafe_calls(source: str):
  """`tf.split(...)` / `tf.Variable(...)` calls, as 'name:line'."""
  found = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
      name = f"{node.func.value.id}.{node.func.attr}"
      if name in MESH_UNSAFE_CALLS:
        found.append(f"{name}:{node.lineno}")
  return found


def package_files():
  return sorted(PACKAGE.rglob("*.py"))


def test_only_mpl_tf_keras_imports_a_keras():
  offenders = {str(p.relative_to(PACKAGE)): keras_imports(p.read_text()) for p in package_files()
               if p.name != "keras.py" or p.parent != PACKAGE}
  assert {k: v for k, v in offenders.items() if v} == {}
  assert keras_imports((PACKAGE / "keras.py").read_text()) == ["tf_keras", "tf_keras.src"]


def test_only_the_gin_edge_imports_gin():
  offenders = {str(p.relative_to(PACKAGE)): gin_imports(p.read_text()) for p in package_files()
               if str(p.relative_to(PACKAGE)) not in GIN_EDGE}
  assert {k: v for k, v in offenders.items() if v} == {}
  assert gin_imports((PACKAGE / "experiment.py").read_text()) == ["gin"]


def test_algorithms_use_the_layout_helpers():
  offenders = {p.name: mesh_unsafe_calls(p.read_text()) for p in sorted((PACKAGE / "algorithms").glob("*.py"))}
  assert {k: v for k, v in offenders.items() if v} == {}, f"use {MESH_UNSAFE_CALLS} on a mesh"


@pytest.mark.parametrize("checker, source, expected", [
    (keras_imports, "import keras\nfrom keras_cv import layers\ndef f():\n  from tensorflow.keras import Model\n",
     ["keras", "keras_cv", "tensorflow.keras"]),
    (gin_imports, "def f():\n  import gin\n", ["gin"]),
    (mesh_unsafe_calls, "import tensorflow as tf\na, b = tf.split(x, 2)\nv = tf.Variable(0.0)\ny = tf.concat([a], 0)\n",
     ["tf.split:2", "tf.Variable:3"]),
])
def test_each_checker_finds_what_breaks_its_rule(checker, source, expected):
  assert checker(source) == expected
