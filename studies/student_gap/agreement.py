"""How closely does a finished MPL run's student follow its teacher? Agreement of their predicted classes on the
labeled, unlabeled and test parts of an .npz, with each network's accuracy where there are labels.

  python studies/student_gap/agreement.py --workdir=runs/standin_study/shapes32/mpl.seed0 \\
      --npz=runs/standins/shapes32.npz

Reads the networks from the run's last `distill` checkpoint (the student as the distill phase left it, before
finetuning; --phase=mpl for the MPL student, which is its EMA copy when EMA is on) and the network definition from
the run's operative_config.gin. Low agreement on the unlabeled images the student trained on means it has not
fitted its teacher yet (more steps, other targets); high agreement there but low on test would mean it fitted
the teacher's labels without its generalisation.
"""
import os
import sys

from absl import app
from absl import flags

# The repository root (two levels up), so that `mpl_tf` imports without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("workdir", None, "a finished MPL run's work directory", required=True)
  flags.DEFINE_string("npz", None, "the run's data (.npz with x_train, y_train, x_unlabeled, x_test, y_test)",
                      required=True)
  flags.DEFINE_enum("phase", "distill", ["distill", "mpl"], "whose checkpoint to read the networks from")


def agreement(teacher_classes, student_classes, labels=None) -> dict:
  """Fractions: how often the two predicted classes agree, and each network's accuracy when labels are given."""
  out = {"agreement": float(np.mean(teacher_classes == student_classes))}
  if labels is not None:
    out.update(teacher=float(np.mean(teacher_classes == labels)), student=float(np.mean(student_classes == labels)))
  return out


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from mpl_tf import experiment  # pylint: disable=import-outside-toplevel
  experiment.parse_gin([os.path.join(FLAGS.workdir, "operative_config.gin")], [])
  data = np.load(FLAGS.npz)
  shape = data["x_train"].shape[1:] + ((1,) if data["x_train"].ndim == 3 else ())
  num_classes = int(max(data["y_train"].max(), data["y_test"].max())) + 1
  teacher, student = (experiment.network(num_classes, shape, seed=s) for s in (0, 1))
  path = tf.train.latest_checkpoint(os.path.join(FLAGS.workdir, "checkpoints", FLAGS.phase))
  if path is None:
    raise SystemExit(f"no {FLAGS.phase} checkpoint under {FLAGS.workdir}/checkpoints")
  # The evaluated MPL student is its EMA copy when the run kept one (the distill phase trains that copy).
  ema = FLAGS.phase == "mpl" and any(n.startswith("model/ema_student/") for n, _ in tf.train.list_variables(path))
  nets = dict(teacher=teacher, **{"ema_student" if ema else "student": student})
  tf.train.Checkpoint(model=tf.train.Checkpoint(**nets)).restore(path).expect_partial().assert_existing_objects_matched()
  print(f"{FLAGS.workdir} ({path}):")
  for part, x, y in (("labeled", data["x_train"], data["y_train"]), ("unlabeled", data.get("x_unlabeled"), None),
                     ("test", data["x_test"], data["y_test"])):
    if x is None:
      continue
    x = x.astype(np.float32).reshape((-1,) + shape) / 255.0  # what the pipeline and the export feed the networks
    classes = [net.predict(x, batch_size=256, verbose=0).argmax(-1) for net in (teacher, student)]
    result = agreement(*classes, y)
    print(f"  {part:9s} " + "  ".join(f"{k} {100 * v:.1f}" for k, v in result.items()))


if __name__ == "__main__":
  define_flags()
  app.run(main)
