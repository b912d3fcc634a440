"""tools/two_moons.py resumes a sweep from its cache: a finished run is read back unless its configuration changed."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
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
