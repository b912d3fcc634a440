"""Every bad input we tried on the command lines, and the one-line message each gives: docs/errors.md.

  python tools/bad_inputs.py --write=docs/errors.md   # run every case, write the table
  python tools/bad_inputs.py --check=docs/errors.md   # run every case, fail unless each exits non-zero with
                                                      # one line naming the problem, as the table says

Each case runs the entry point's `main` in-process (one process per command: their absl flags share names), with
gin cleared in between, in a scratch directory of bad files made by `make_files`. tests/test_errors.py runs
`--check`, so the table in docs/errors.md is what the commands print today.
"""
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TWO_MOONS = ["--gin_file=gin/two_moons.gin", "--gin_bindings=run.steps = 20", "--gin_bindings=run.verbose = 0"]
OWN = ["--gin_file=gin/own_data.gin", "--gin_bindings=run.verbose = 0"]
# (command, what is wrong, arguments ({tmp}: the scratch directory), a phrase the message must contain)
CASES = [
    ("train", "unknown dataset", TWO_MOONS + ["--gin_bindings=build_dataset.name = 'cifar11'"],
     "unknown dataset 'cifar11'"),
    ("train", "unknown method", TWO_MOONS + ["--gin_bindings=run.method = 'mlp'"], "unknown method 'mlp'"),
    ("train", "misspelled gin file", ["--gin_file=gin/digit.gin"], "gin/digit.gin"),
    ("train", "unknown configurable", TWO_MOONS + ["--gin_bindings=MetaPseudoLabelModel.ema_decay = 0.9"],
     "MetaPseudoLabelModel"),
    ("train", "misspelled parameter of a method class",
     TWO_MOONS + ["--gin_bindings=MetaPseudoLabelsModel.pseudo_label = 'soft'"], "did you mean 'pseudo_labels'"),
    ("train", "misspelled parameter of a function", TWO_MOONS + ["--gin_bindings=run.stpes = 200"],
     "did you mean 'steps'"),
    ("train", "misspelled network option", TWO_MOONS + ["--gin_bindings=network.widht = 3"], "unknown option(s)"),
    ("train", "bad value of a choice", TWO_MOONS + ["--gin_bindings=MetaPseudoLabelsModel.pseudo_labels = 'hard'"],
     "pseudo_labels must be one of"),
    ("train", "no .npz at the path", OWN + ["--gin_bindings=build_dataset.path = '{tmp}/missing.npz'"],
     "no .npz file at"),
    ("train", ".npz without the arrays", OWN + ["--gin_bindings=build_dataset.path = '{tmp}/no_test.npz'"],
     "missing array(s)"),
    ("train", "labels out of range", OWN + ["--gin_bindings=build_dataset.path = '{tmp}/negative_label.npz'"],
     "label"),
    ("train", "classes left empty by the labels (0-3 and 7)",
     OWN + ["--gin_bindings=build_dataset.path = '{tmp}/label_gap.npz'"], "would have no example"),
    ("train", "a test class unseen in training", OWN + ["--gin_bindings=build_dataset.path = '{tmp}/unseen_test.npz'"],
     "outside [0, 4)"),
    ("train", "too few labeled examples for the split",
     ["--gin_file=gin/digits.gin", "--gin_bindings=build_dataset.num_labeled = 5000"], "5000"),
    ("train", "empty image folder", OWN + ["--gin_bindings=build_dataset.name = 'folder'",
                                           "--gin_bindings=build_dataset.path = '{tmp}/empty'"], "empty"),
    ("train", "a run shortened below its warmup", ["--gin_file=gin/digits.gin", "--gin_bindings=run.steps = 200"],
     "teacher/optimizer.warmup_steps"),
    ("train", "NaN loss", TWO_MOONS + ["--gin_bindings=build_dataset.two_views = True",
                                       "--gin_bindings=build_dataset.noise_stddev = 1e38",
                                       "--gin_bindings=uda.weight = 1.0"], "non-finite"),
    ("train", "images of mixed sizes without image_size",
     OWN + ["--gin_bindings=build_dataset.name = 'folder'", "--gin_bindings=build_dataset.path = '{tmp}/mixed'"],
     "image_size"),
    ("evaluate", "neither --workdir nor --export_dir", [], "give exactly one of"),
    ("evaluate", "data of another shape than the export's", ["--export_dir={tmp}/export",
                                                             "--gin_bindings=build_dataset.name = 'two_moons'"],
     "the exported student takes"),
    ("evaluate", "a directory that holds no run", ["--workdir={tmp}/empty"], "holds no run"),
    ("evaluate", "not an export", ["--export_dir={tmp}/empty"], "SavedModel"),
    ("predict", "not an export", ["--export_dir={tmp}/empty", "{tmp}/image.png"], "SavedModel"),
    ("predict", "no inputs", ["--export_dir={tmp}/export"], "mpl-predict"),
    ("predict", "only unreadable inputs", ["--export_dir={tmp}/export", "{tmp}/image.png"],
     "none of the 1 inputs could be read"),
]
PROGRAMS = {"train": "mpl_tf.train", "evaluate": "mpl_tf.evaluate", "predict": "mpl_tf.predict"}


def define_flags():
  flags.DEFINE_string("write", None, "write the table of cases and messages to this markdown file")
  flags.DEFINE_string("check", None, "fail unless every case fails with one line and the table in this file "
                      "matches")
  flags.DEFINE_string("program", None, "internal: run the cases of one command in this process")
  flags.DEFINE_string("tmp", None, "internal: the scratch directory of bad files")


def make_files(tmp: str) -> None:
  """The bad files the cases point at."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  os.makedirs(os.path.join(tmp, "empty"), exist_ok=True)
  images = np.zeros((20, 8, 8), np.uint8)
  labels = np.arange(20) % 2
  np.savez(os.path.join(tmp, "no_test.npz"), x_train=images, y_train=labels)
  np.savez(os.path.join(tmp, "negative_label.npz"), x_train=images, y_train=labels - 1, x_test=images[:4],
           y_test=labels[:4])
  gap = np.arange(20) % 5
  np.savez(os.path.join(tmp, "label_gap.npz"), x_train=images, y_train=np.where(gap == 4, 7, gap), x_test=images[:4],
           y_test=np.arange(4))
  np.savez(os.path.join(tmp, "unseen_test.npz"), x_train=images, y_train=np.arange(20) % 4, x_test=images[:5],
           y_test=np.arange(5))
  with open(os.path.join(tmp, "image.png"), "wb") as f:
    f.write(b"not a png")
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  for name, side in (("a", 8), ("b", 12)):
    os.makedirs(os.path.join(tmp, "mixed", name))
    with open(os.path.join(tmp, "mixed", name, "1.png"), "wb") as f:
      f.write(tf.io.encode_png(np.arange(side * side, dtype=np.uint8).reshape(side, side, 1)).numpy())  # not blank
  _tiny_export(os.path.join(tmp, "export"))


def _tiny_export(path: str) -> None:
  """An untrained 8x8 gray, 3-class student, exported as a run exports one (recording the digits dataset)."""
  import types  # pylint: disable=import-outside-toplevel
  from mpl_tf import export  # pylint: disable=import-outside-toplevel
  from mpl_tf.keras import keras  # pylint: disable=import-outside-toplevel
  inputs = keras.Input((8, 8, 1))
  net = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(inputs)))
  data = types.SimpleNamespace(input_shape=(8, 8, 1), class_names=("a", "b", "c"), split_name="toy.seed0",
                               name="toy", num_classes=3)
  export.export_student(net, path, data, config="build_dataset.name = 'digits'\n")


def run_cases(program: str, tmp: str) -> None:
  """Runs one command's cases in this process; prints one JSON line per case."""
  import gin  # pylint: disable=import-outside-toplevel
  module = __import__(PROGRAMS[program], fromlist=["main"])
  for command, what, args, _ in CASES:
    if command != program:
      continue
    argv = [program, f"--workdir={tmp}/run_{len(what)}"] if program == "train" else [program]
    argv += [a.replace("{tmp}", tmp) for a in args]
    FLAGS.unparse_flags()
    gin.clear_config()
    err = io.StringIO()
    code, message = 0, ""
    with contextlib.redirect_stderr(err):
      try:
        module.main(FLAGS(argv))
      except SystemExit as e:
        code, message = (1, e.code) if isinstance(e.code, str) else (e.code, "")
    message = (message or err.getvalue()).strip().replace(tmp, "DIR")
    print(json.dumps({"command": command, "what": what, "code": code, "message": message}), flush=True)


def collect() -> list:
  """Runs every case (one subprocess per command); returns their results in CASES order."""
  results = []
  with tempfile.TemporaryDirectory() as tmp:
    make_files(tmp)
    for program in PROGRAMS:
      proc = subprocess.run([sys.executable, os.path.abspath(__file__), f"--program={program}", f"--tmp={tmp}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
      found = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
      if len(found) != sum(c[0] == program for c in CASES):
        raise SystemExit(f"bad_inputs: the {program} cases stopped early:\n{proc.stderr[-3000:]}")
      results += found
  return results


def table(results: list) -> str:
  lines = ["# Bad inputs and their messages", "",
           "Every failure of `mpl-train` (`python -m mpl_tf.train`), `mpl-evaluate` and `mpl-predict` on a user's "
           "mistake is one line on stderr and a non-zero exit status (`MPL_TF_TRACEBACK=1` shows the traceback). "
           "The inputs we tried and what the commands print, generated by `python tools/bad_inputs.py "
           "--write=docs/errors.md` and checked by tests/test_errors.py (DIR: a scratch directory):", "",
           "| command | bad input | exit | message |", "| --- | --- | --- | --- |"]
  for r in results:
    message = r["message"].replace("|", "\\|").replace("\n", "<br>")
    lines.append(f"| {r['command']} | {r['what']} | {r['code']} | {message} |")
  lines += ["", "Not failures, by design: a corrupt or unreadable file in a training folder is skipped with a warning "
            "that counts such files and names the first few (`mpl_tf/data/folder_source.py`); `mpl-predict` names "
            "each unreadable input and predicts the others (exit 1). A changed configuration in an existing work "
            "directory stops `mpl-train` with one line naming each binding that differs and the ways out "
            "(`--overwrite`, a new `--workdir`, `--allow_config_change`; tests/test_workdir.py)."]
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if FLAGS.program:
    run_cases(FLAGS.program, FLAGS.tmp)
    return
  results = collect()
  text = table(results)
  if FLAGS.write:
    with open(FLAGS.write, "w") as f:
      f.write(text)
  problems = []
  for (command, what, _, phrase), r in zip(CASES, results):
    lines = r["message"].splitlines()
    # One line; mpl-predict also names each unreadable input on a line of its own before its verdict.
    one_line = len(lines) == 1 or (command == "predict" and all(l.startswith("mpl-predict: ") for l in lines))
    if r["code"] in (0, None) or not one_line or phrase not in lines[-1]:
      problems.append(f"{command} / {what}: exit {r['code']}, message {r['message']!r} (expected one line with "
                      f"{phrase!r})")
  if FLAGS.check:
    with open(FLAGS.check) as f:
      if f.read() != text:
        problems.append(f"{FLAGS.check} is out of date: run python tools/bad_inputs.py --write={FLAGS.check}")
  if problems:
    raise SystemExit("bad_inputs:\n" + "\n".join(problems))
  print(text if not FLAGS.write else f"wrote {FLAGS.write}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
