"""studies/two_moons/two_moons.py resumes a sweep from its cache: a finished run is read back unless its
configuration changed."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "studies", "two_moons"))
import two_moons  # pylint: disable=wrong-import-position


def test_a_cached_run_is_read_back_only_for_the_configuration_it_was_written_for(tmp_path):
  path = str(tmp_path / "cache" / "mpl.seed3.json")
  config = dict(gin_file=["gin/two_moons.gin"], bindings=["run.seed = 3", "run.method = 'mpl'"])
  assert two_moons.read_cached(path, config) is None and two_moons.read_cached(None, config) is None
  two_moons.write_cached(path, config, {"student/accuracy": 0.75}, 12.5)
  assert two_moons.read_cached(path, config) == dict(config=config, metrics={"student/accuracy": 0.75}, seconds=12.5)
  changed = dict(config, bindings=config["bindings"] + ["run.steps = 100"])
  assert two_moons.read_cached(path, changed) is None
  assert os.listdir(tmp_path / "cache") == ["mpl.seed3.json"]  # no temporary file left behind
  two_moons.write_cached(None, config, {}, 0.0)  # no cache: nothing written, no error


def test_a_sweep_with_a_diagnosis_runs_from_the_command_line(tmp_path):
  """The whole tool on a few steps (gin/smoke.gin): a sweep read back from its cache, then `--diagnose`, which
  trains once more in chunks. The diagnosis once used a name the cache refactor had removed (NameError)."""
  import json  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  command = [sys.executable, os.path.join(root, "studies", "two_moons", "two_moons.py"), "--gin_file=gin/two_moons.gin",
             "--gin_file=gin/smoke.gin", "--seeds=1", "--methods=mpl_off", "--diagnose=mpl",
             "--diagnose_steps=0,4", "--plot_seed=0", f"--cache={tmp_path / 'cache'}", f"--out={tmp_path / 'out'}"]
  for _ in range(2):  # the second sweep reads the run back
    proc = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600, check=False,
                          env=dict(os.environ, PYTHONPATH=root))
    assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((tmp_path / "out" / "two_moons.json").read_text())
  assert [row["step"] for row in report["diagnostics"]["mpl"]] == [0, 4]
  assert all(0.0 <= row["student_accuracy"] <= 1.0 for row in report["diagnostics"]["mpl"])
  assert os.listdir(tmp_path / "cache") == ["mpl_off.seed0.json"]
