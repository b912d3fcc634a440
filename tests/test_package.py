"""mpl_tf as an installed package, as a new user meets it: `pip install <clone>` into a fresh virtual environment
outside the clone, then `mpl-train` with a packaged gin file on a folder of mixed-size PNGs, `mpl-evaluate` on the
run and `mpl-predict` on the folder (issue 11's done criterion); `mpl-views` and `mpl-compare` (issue 27, item 8).

The environment is a real `python -m venv`; its dependencies come from the test environment's site-packages (a
.pth file), because this machine cannot reach PyPI, and the package installs with `--no-deps
--no-build-isolation`. It is built from a copy of the sources, so the clone is untouched.
"""
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import tensorflow as tf

from tests.conftest import ROOT

CLASSES = ("circle", "square")


def _fresh_venv(tmp_path):
  """A new virtual environment with mpl_tf pip-installed from a copy of the clone; returns its bin directory."""
  source = tmp_path / "source"
  source.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(ROOT, name), source / name)
  for name in ("mpl_tf", "gin"):
    shutil.copytree(os.path.join(ROOT, name), source / name, ignore=shutil.ignore_patterns("__pycache__"))
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
  site = sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
  with open(os.path.join(site, "test_dependencies.pth"), "w") as f:
    f.write(sysconfig.get_path("purelib") + "\n")
  subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                  "--no-index", str(source)], check=True, capture_output=True, text=True, timeout=300)
  return venv / "bin", site


def _png_folder(root, rng):
  """root/<class>/*.png: gray images of several sizes, a bright blob (circle) or a bright border (square)."""
  for c, name in enumerate(CLASSES):
    (root / name).mkdir(parents=True)
    for i in range(12):
      side = (8, 11, 16)[i % 3]
      image = rng.integers(0, 40, (side, side, 1)).astype(np.uint8)
      if c == 0:
        image[side // 4: 3 * side // 4, side // 4: 3 * side // 4] = 220
      else:
        image[:2], image[-2:], image[:, :2], image[:, -2:] = 220, 220, 220, 220
      (root / name / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())


def test_a_fresh_venv_installs_the_clone_and_trains_evaluates_and_predicts_on_a_png_folder(tmp_path):
  bin_dir, site = _fresh_venv(tmp_path)
  shipped = sorted(os.path.relpath(os.path.join(d, f), os.path.join(site, "mpl_tf"))
                   for d, _, files in os.walk(os.path.join(site, "mpl_tf", "gin")) for f in files if f.endswith(".gin"))
  in_clone = sorted(os.path.relpath(os.path.join(d, f), ROOT)
                    for d, _, files in os.walk(os.path.join(ROOT, "gin")) for f in files if f.endswith(".gin"))
  assert shipped == in_clone
  elsewhere = tmp_path / "elsewhere"
  _png_folder(elsewhere / "shapes", np.random.default_rng(0))
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

  def command(name, *args, cwd=elsewhere):
    return subprocess.run([str(bin_dir / name), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, check=False)

  # The console script's --help: our flags, exit 0 (absl's printed "Try --helpfull" and exited 1).
  proc = command("mpl-train", "--help")
  assert proc.returncode == 0 and proc.stdout.startswith("mpl-train: ") and "--show_config" in proc.stdout

  where = command("python", "-c", "import mpl_tf; print(mpl_tf.__file__)")
  assert where.returncode == 0 and where.stdout.strip().startswith(site), where.stderr[-2000:]
  # gin/own_data.gin and gin/smoke.gin (with their includes) resolve in the installed package.
  proc = command("mpl-train", "--gin_file=gin/own_data.gin", "--gin_file=gin/smoke.gin", "--workdir=run",
                 "--gin_bindings=build_dataset.name = 'folder'", "--gin_bindings=build_dataset.path = 'shapes'",
                 "--gin_bindings=build_dataset.image_size = 8", "--gin_bindings=build_dataset.num_test = 0.25",
                 "--gin_bindings=build_dataset.num_labeled = 0.5",
                 "--gin_bindings=distill.steps = 4")
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = json.loads((elsewhere / "run" / "metrics.json").read_text())
  assert metrics["step"] == 6 and "mpl-predict --export_dir=run/export/student" in proc.stdout
  # From another directory: the run recorded its data path absolute (it failed with "no image folder at shapes").
  proc = command("mpl-evaluate", f"--workdir={elsewhere / 'run'}", cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((elsewhere / "run" / "evaluation" / "test.json").read_text())
  assert report["class_names"] == list(CLASSES)
  assert abs(report["student"]["accuracy"] - metrics["student/accuracy"]) < 1e-6
  assert abs(report["teacher"]["accuracy"] - metrics["teacher/accuracy"]) < 1e-6
  # The tools the output and README name ship as console scripts (they were tools/*.py, not installed).
  data = ["--gin_bindings=build_dataset.name = 'folder'", "--gin_bindings=build_dataset.path = 'shapes'",
          "--gin_bindings=build_dataset.image_size = 8", "--gin_bindings=build_dataset.num_test = 0.25",
          "--gin_bindings=build_dataset.num_labeled = 0.5"]
  proc = command("mpl-views", "--gin_file=gin/own_data.gin", *data, "--out=views/grid.png", "--images=2",
                 "--strong=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (elsewhere / "views" / "grid.png").stat().st_size > 0 and "2 images of" in proc.stdout
  assert "before absl::InitializeLog" not in proc.stderr, proc.stderr  # loading talk held back as by mpl-train
  proc = command("mpl-compare", "--gin_file=gin/own_data.gin", "--gin_file=gin/smoke.gin", *data,
                 "--gin_bindings=distill.steps = 4", "--methods=supervised,mpl", "--seeds=0", "--steps=6",
                 "--workroot=arms", "--out=arms/compare.md")
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = (elsewhere / "arms" / "compare.md").read_text()
  assert report.startswith("Command: `mpl-compare --gin_file=gin/own_data.gin --gin_file=gin/smoke.gin")
  assert "MPL as a whole" in report and (elsewhere / "arms" / "mpl.seed0" / "export").is_dir()
  proc = command("mpl-predict", "--export_dir=run/export/student", "shapes")
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = list(csv.DictReader(io.StringIO(proc.stdout)))
  assert len(rows) == 24 and {r["class_name"] for r in rows} <= set(CLASSES)
  assert all(0.0 <= float(r["probability"]) <= 1.0 for r in rows)
