"""A work directory resumes only its own run: a changed configuration stops before anything is touched.

Unit tests of `mpl_tf.workdir` on gin text, then the two cases that used to go wrong silently, through the
command line: another method in an MPL run's directory, and a raised `run.steps`.
"""
import json
import os

import pytest

from mpl_tf import workdir as workdir_lib
from tests.conftest import train

CONFIG = """# Macros:
STEPS = 100

# Parameters for run:
run.method = 'mpl'
run.steps = %STEPS
run.verbose = 1
build_dataset.augment_ops = \\
    ['AutoContrast', 'Brightness',
     'Contrast']
"""


def test_bindings_parses_gin_text_with_wrapped_values():
  parsed = workdir_lib.bindings(CONFIG)
  assert parsed == {"STEPS": "100", "run.method": "'mpl'", "run.steps": "%STEPS", "run.verbose": "1",
                    "build_dataset.augment_ops": "\\ ['AutoContrast', 'Brightness', 'Contrast']"}


def test_differences_name_each_binding_and_ignore_what_only_changes_watching():
  old = workdir_lib.bindings(CONFIG)
  new = dict(old, **{"run.method": "'uda'", "run.verbose": "0", "STEPS": "200", "uda.weight": "8.0"})
  del new["build_dataset.augment_ops"]
  assert workdir_lib.differences(old, new) == [
      "build_dataset.augment_ops: \\ ['AutoContrast', 'Brightness', 'Contrast'] -> (unset)",
      "run.method: 'mpl' -> 'uda'", "run.steps: 100 -> 200", "uda.weight: (unset) -> 8.0"]
  assert workdir_lib.differences(old, dict(old, **{"run.verbose": "0", "run.export": "False"})) == []


def test_a_value_moved_into_a_macro_is_the_same_configuration():
  """Issue 28 put repeated values into gin macros (`UDAModel.ema_decay = %EMA_DECAY`): a run recorded before
  resumes under the new files, while a macro whose value changed is named by the bindings that use it."""
  recorded = {"UDAModel.ema_decay": "0.99", "SupervisedModel.ema_decay": "0.99", "run.steps": "100"}
  moved = {"EMA_DECAY": "0.99", "UDAModel.ema_decay": "%EMA_DECAY", "SupervisedModel.ema_decay": "%EMA_DECAY",
           "STEPS": "%HUNDRED", "HUNDRED": "100", "run.steps": "%STEPS", "UNUSED": "3"}
  assert workdir_lib.differences(recorded, moved) == []
  assert workdir_lib.differences(recorded, dict(moved, EMA_DECAY="0.9")) == [
      "SupervisedModel.ema_decay: 0.99 -> 0.9", "UDAModel.ema_decay: 0.99 -> 0.9"]


def test_prepare_records_resumes_refuses_untouched_overwrites_and_allows_on_request(tmp_path):
  work = str(tmp_path / "run")
  assert workdir_lib.prepare(work, CONFIG) == []
  recorded = (tmp_path / "run" / "config.gin").read_text()
  assert recorded == CONFIG
  os.makedirs(tmp_path / "run" / "checkpoints" / "mpl")
  (tmp_path / "run" / "metrics.json").write_text("{}")
  assert workdir_lib.prepare(work, CONFIG.replace("run.verbose = 1", "run.verbose = 0")) == []  # resumes
  changed = CONFIG.replace("STEPS = 100", "STEPS = 300")
  before = sorted(p.name for p in (tmp_path / "run").iterdir())
  with pytest.raises(workdir_lib.ConfigChanged, match=r"run.steps: 100 -> 300[\s\S]*--overwrite"):
    workdir_lib.prepare(work, changed)
  assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
  assert (tmp_path / "run" / "config.gin").read_text() == CONFIG
  assert workdir_lib.prepare(work, changed, allow_change=True) == ["run.steps: 100 -> 300"]
  assert (tmp_path / "run" / "config.gin").read_text() == changed
  (tmp_path / "run" / "notes.txt").write_text("mine")
  assert workdir_lib.prepare(work, CONFIG, overwrite=True) == []
  assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.gin", "notes.txt"]


def test_the_other_clients_of_a_multi_client_run_check_the_same_but_write_nothing(tmp_path):
  """`write=False` (DTensor clients other than the chief, sharing its workdir): the same refusal, no files."""
  work = tmp_path / "run"
  assert workdir_lib.prepare(str(work), CONFIG, write=False) == [] and not work.exists()
  workdir_lib.prepare(str(work), CONFIG)
  os.makedirs(work / "checkpoints" / "mpl")
  changed = CONFIG.replace("STEPS = 100", "STEPS = 300")
  with pytest.raises(workdir_lib.ConfigChanged, match="run.steps: 100 -> 300"):
    workdir_lib.prepare(str(work), changed, write=False)
  assert workdir_lib.prepare(str(work), changed, allow_change=True, write=False) == ["run.steps: 100 -> 300"]
  assert workdir_lib.prepare(str(work), changed, overwrite=True, write=False) == []  # the chief deletes
  assert (work / "config.gin").read_text() == CONFIG and (work / "checkpoints").exists()


def test_a_start_that_trained_nothing_does_not_bind_the_directory(tmp_path):
  workdir_lib.prepare(str(tmp_path), CONFIG)  # then, say, the run stopped on a bad binding
  fixed = CONFIG.replace("'mpl'", "'uda'")
  assert workdir_lib.prepare(str(tmp_path), fixed) == []
  assert (tmp_path / "config.gin").read_text() == fixed


def test_a_run_without_a_recorded_configuration_is_not_resumed_blindly(tmp_path):
  os.makedirs(tmp_path / "checkpoints" / "mpl")
  with pytest.raises(workdir_lib.ConfigChanged, match="no config.gin"):
    workdir_lib.prepare(str(tmp_path), CONFIG)


SHORT = ("run.steps = 300", "run.steps_per_execution = 100", "run.summary_every = 100", "run.export = False")


def test_the_command_line_refuses_another_method_or_more_steps_in_a_finished_run(tmp_path):
  first = train(tmp_path, ["gin/two_moons.gin"], *SHORT)
  assert first.returncode == 0, first.stderr[-2000:]
  metrics = (tmp_path / "metrics.json").read_text()
  for change, named in (("run.method = 'uda'", "run.method: 'mpl' -> 'uda'"),
                        ("run.steps = 600", "run.steps: 300 -> 600")):
    proc = train(tmp_path, ["gin/two_moons.gin"], *SHORT, change)
    assert proc.returncode != 0
    assert named in proc.stderr and "--overwrite" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "metrics.json").read_text() == metrics
  same = train(tmp_path, ["gin/two_moons.gin"], *SHORT, "run.verbose = 0")  # resumes: nothing left to train
  assert same.returncode == 0, same.stderr[-2000:]
  printed = same.stdout[same.stdout.index("{\n"):same.stdout.index("\n}") + 2]  # the class line, the metrics, ...
  assert json.loads(printed) == json.loads(metrics)
  assert "finished at step 300" in same.stdout
  fresh = train(tmp_path, ["gin/two_moons.gin"], *SHORT, "run.steps = 600", flags=("--overwrite",))
  assert fresh.returncode == 0, fresh.stderr[-2000:]
  assert json.loads((tmp_path / "metrics.json").read_text())["step"] == 600


# --- one run per work directory (issue 27, item 3) -----------------------------------------------------------------
def test_a_held_lock_refuses_a_second_run_naming_its_holder_and_is_empty_once_released(tmp_path, capsys):
  with workdir_lib.lock(str(tmp_path), command="mpl-train --workdir=x"):
    owner = json.loads((tmp_path / workdir_lib.LOCK_FILE).read_text())
    assert owner["pid"] == os.getpid() and owner["command"] == "mpl-train --workdir=x"
    with pytest.raises(workdir_lib.WorkdirLocked, match=rf"in use by another run \(pid {os.getpid()} on "):
      with workdir_lib.lock(str(tmp_path)):
        pass
  assert (tmp_path / workdir_lib.LOCK_FILE).read_text() == ""
  with workdir_lib.lock(str(tmp_path)):  # released on purpose: taken again without a warning
    pass
  assert "warning" not in capsys.readouterr().err


def test_a_lock_left_by_a_dead_run_is_taken_over_with_a_warning(tmp_path, capsys):
  """A run killed with SIGKILL leaves its lock file naming it; the system released the flock when it died."""
  (tmp_path / workdir_lib.LOCK_FILE).write_text(json.dumps(dict(pid=999999, host="h", started="then", command="c")))
  with workdir_lib.lock(str(tmp_path)):
    assert json.loads((tmp_path / workdir_lib.LOCK_FILE).read_text())["pid"] == os.getpid()
  err = capsys.readouterr().err
  assert "taking over the lock of a run that ended without releasing it (pid 999999 on h" in err


def test_the_command_line_refuses_to_start_in_a_directory_another_run_holds(tmp_path):
  """Two runs in one directory used to both exit 0, overwriting each other's checkpoints, metrics and export."""
  with workdir_lib.lock(str(tmp_path), command="the first run"):
    proc = train(tmp_path, ["gin/two_moons.gin"], *SHORT)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith(f"mpl_tf.train: {tmp_path} is in use by another run "
                                                         f"(pid {os.getpid()} on ")
  assert "the first run" in proc.stderr and not (tmp_path / "checkpoints").exists()


# --- data paths (issue 27, item 4) -----------------------------------------------------------------------------------
def test_a_relative_data_path_recorded_before_is_the_same_as_its_absolute_form_from_here(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  recorded = {"build_dataset.path": "'data/x.npz'", "run.steps": "100"}
  assert not workdir_lib.differences(recorded, {"build_dataset.path": repr(str(tmp_path / "data" / "x.npz")),
                                                "run.steps": "100"})
  assert workdir_lib.differences(recorded, {"build_dataset.path": "'/elsewhere/x.npz'", "run.steps": "100"}) == [
      "build_dataset.path: 'data/x.npz' -> '/elsewhere/x.npz'"]


def test_parsed_data_paths_are_absolute_and_tfds_urls_are_left_alone(tmp_path, monkeypatch):
  import gin  # pylint: disable=import-outside-toplevel
  from mpl_tf import experiment  # pylint: disable=import-outside-toplevel
  monkeypatch.chdir(tmp_path)
  gin.clear_config()
  try:
    experiment.parse_gin([], ["build_dataset.name = 'folder'", "build_dataset.path = 'photos/train'",
                              "build_dataset.test_path = '/abs/test'", "build_dataset.data_dir = 'gs://bucket/tfds'"])
    assert gin.query_parameter("build_dataset.path") == str(tmp_path / "photos" / "train")
    assert gin.query_parameter("build_dataset.test_path") == "/abs/test"
    assert gin.query_parameter("build_dataset.data_dir") == "gs://bucket/tfds"
  finally:
    gin.clear_config()
