"""mpl_tf as an installed package: `pip install` ships the gin files and the `mpl-train` / `mpl-predict` commands,
and a run works from a directory that is not the clone (issue 11; the rest of that issue is still open).

The install is `--no-deps --no-build-isolation` into a scratch prefix (this environment already has the
dependencies and need not reach PyPI); the package is built from a copy of the sources, so the clone is untouched.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig

from tests.conftest import ROOT


def _install(tmp_path):
  source = tmp_path / "source"
  source.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(ROOT, name), source / name)
  for name in ("mpl_tf", "gin"):
    shutil.copytree(os.path.join(ROOT, name), source / name, ignore=shutil.ignore_patterns("__pycache__"))
  prefix = tmp_path / "prefix"
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                  f"--prefix={prefix}", str(source)], check=True, capture_output=True, text=True, timeout=300)
  site = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
  return prefix, site


def test_pip_install_ships_gin_files_and_commands_that_run_outside_the_clone(tmp_path):
  prefix, site = _install(tmp_path)
  shipped = sorted(os.path.relpath(os.path.join(d, f), os.path.join(site, "mpl_tf"))
                   for d, _, files in os.walk(os.path.join(site, "mpl_tf", "gin")) for f in files if f.endswith(".gin"))
  in_clone = sorted(os.path.relpath(os.path.join(d, f), ROOT)
                    for d, _, files in os.walk(os.path.join(ROOT, "gin")) for f in files if f.endswith(".gin"))
  assert shipped == in_clone
  assert (prefix / "bin" / "mpl-train").exists() and (prefix / "bin" / "mpl-predict").exists()
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env = dict(os.environ, PYTHONPATH=site)
  # A packaged experiment file whose includes chain through gin/data, gin/models, ... resolves from here.
  check = subprocess.run([sys.executable, "-c", "import mpl_tf, gin; from mpl_tf import experiment; "
                          "experiment.parse_gin(['gin/digits.gin'], []); print(mpl_tf.__file__); "
                          "print(gin.query_parameter('build_dataset.name'))"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert check.returncode == 0, check.stderr[-2000:]
  assert check.stdout.split()[0].startswith(site) and check.stdout.split()[1] == "digits"
  proc = subprocess.run([str(prefix / "bin" / "mpl-train"), "--gin_file=gin/two_moons.gin", "--workdir=run",
                         "--gin_bindings=run.steps = 200", "--gin_bindings=run.steps_per_execution = 100",
                         "--gin_bindings=run.verbose = 0"],
                        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads((elsewhere / "run" / "metrics.json").read_text())["step"] == 200
  assert (elsewhere / "run" / "export" / "student" / "saved_model.pb").exists()
