"""What one MPL training step costs, next to the passes it is made of and to a supervised step.

For WRN-28-2 at 32x32 with a labeled batch of B = 16 and U = 7B = 112 unlabeled images in two views (weak and
strong: 16 + 2 * 112 = 240 images an element), it times, interleaved in one process so that every figure sees
the same machine load:
  mpl/hard, mpl/hard+uda, mpl/soft, mpl/soft+uda   the real `MetaPseudoLabelsModel` train function (sampled or
                                                   soft pseudo labels; the teacher's UDA term off or on)
  mpl/<variant>+recompute                          the same with teacher_activations='recompute' (--variants)
  supervised                                       `SupervisedModel` on all 240 images of the element
  part/...                                         each forward / backward pass the MPL step needs, alone:
    teacher_uda      teacher forward + backward + update on [x_l, x_u_weak, x_u_strong] (240 images), sup. + UDA
    teacher_sup      the same on [x_l, x_u_strong] (128 images), supervised only: all the teacher needs w/o UDA
    student_eval_l   student forward on x_l with batch statistics, dropout off (the labeled loss at theta,
                     theta' and theta + D0: feedback_batch_norm = 'train', the default)
    student_train_u  student forward + backward + update on x_u_strong with hard labels
    student_meta_u   the same with soft labels, plus the backward through that backward (the second-order term
                     of the exact meta-gradient: d/d targets of grad_S L_u . v)
    student_grad_l   student forward + backward on x_l in inference mode (the soft step's grad L_l(theta_S'))
  and reports, per variant and jit setting: median seconds per step, images/s (240 a step), the sum of the parts
  that variant needs, MPL / sum (the cost of the bi-level bookkeeping: 1.00 means none), MPL / supervised, and
  the step's peak memory. The parts of each variant:
    hard:  teacher_(uda|sup) + 3 * student_eval_l + student_train_u
    soft:  teacher_(uda|sup) + 2 * student_eval_l + student_meta_u + student_grad_l
Each figure is given three ways: the median wall-clock time, the median CPU time of the whole process (all its
threads, `time.process_time`) and the best (minimum) wall-clock time. On a machine shared with other jobs the
wall clock swings with their load (up to 4x from one step to the next on our busy 2-core box), while CPU time
counts the work this process did and moves by a few percent; the fastest step is the least disturbed one.
Ratios are taken within one kind of time, never across.

Memory (`--memory allocator|rss|both`, default both): after the timing, every case is measured again alone in a
fresh process (`tools/step_memory.py` says why and what each view counts): `allocator` is TensorFlow's allocator
peak during one step above what was allocated before it (on a CPU with TF_CPU_ALLOCATOR_USE_BFC=true, which makes
it keep statistics), `rss` the process's peak RSS during warm-up + 1 steps above its RSS once the case is built
and traced. The JSON lists each case's weights apart as `weights_mib`. The timing process itself keeps
TensorFlow's default allocator.

jit: `--jit off|on|both`; on compiles every step and part with XLA (`jit_compile=True`).

Example (the figures in BENCHMARKS.md; ~25 min on a busy 2-core CPU, 8 of them XLA compiling in the first round):
  python tools/benchmark_step.py --jit both --output /tmp/benchmark_step.json
  python tools/benchmark_step.py --from_json /tmp/benchmark_step.json     # the tables again, from the saved run
Quick check of the tool itself (16x16 inputs, B=4, U=8; ~2 min with --jit off, ~5 with XLA compiling):
  python tools/benchmark_step.py --quick --jit off
"""
import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import step_memory  # pylint: disable=wrong-import-position  (tools/, next to this file)
from step_tables import KERAS_LRELU, case_name, render  # pylint: disable=wrong-import-position

def _parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="wrn28_2")
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--batch_size", type=int, default=16, help="labeled images a step (B)")
  parser.add_argument("--uda_ratio", type=int, default=7, help="unlabeled images per labeled one (U = ratio * B)")
  parser.add_argument("--warmup", type=int, default=3, help="untimed rounds (tracing, XLA compilation)")
  parser.add_argument("--steps", type=int, default=5, help="timed rounds; each case's median is reported")
  parser.add_argument("--jit", choices=["off", "on", "both"], default="both")
  parser.add_argument("--variants", default="hard,hard+uda,soft,soft+uda",
                      help="MPL variants to time: hard or soft, then +uda (the teacher's UDA term) and/or +recompute "
                      "(teacher_activations='recompute')")
  parser.add_argument("--memory", choices=["allocator", "rss", "both"], default="both",
                      help="each case's peak memory, measured alone in a fresh process: allocator (TensorFlow's "
                      "allocator on GPU:0 when there is one, else CPU:0), rss (the process's peak RSS) or both")
  parser.add_argument("--precision", choices=["float32", "mixed_bfloat16", "mixed_float16"], default="float32",
                      help="Keras dtype policy of the networks (mixed: float16/bfloat16 compute, float32 weights)")
  parser.add_argument("--quick", action="store_true",
                      help="small settings to check the tool: 16x16 images, B=4, U=8, 1 warmup, 2 timed rounds")
  parser.add_argument("--compare_keras_leaky_relu", action="store_true",
                      help="also build the MPL variants and the supervised step with Keras' own LeakyReLU (the "
                      "networks before mpl_tf.models.common.LeakyReLU) and report ours / Keras' in time and memory")
  parser.add_argument("--output", default=None, help="write every figure as JSON here")
  parser.add_argument("--from_json", default=None, help="print the tables of a saved --output JSON and exit")
  # A child process of --memory (tools/step_memory.py): build one case, measure one view, print it.
  parser.add_argument("--isolated_case", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--isolated_jit", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--isolated_view", choices=step_memory.VIEWS, default="rss", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.quick:
    args.image_size, args.batch_size, args.uda_ratio, args.warmup, args.steps = 16, 4, 2, 1, 2
  return args


class Element:
  """One cached training element: x_l [B], y_l [B], u_weak [U], u_strong [U], images in [0, 1]."""

  def __init__(self, tf, batch_size, unlabeled, image_size, num_classes, seed=0):
    rng = tf.random.Generator.from_seed(seed)
    shape = (image_size, image_size, 3)
    self.x_l = rng.uniform((batch_size,) + shape)
    self.y_l = rng.uniform((batch_size,), 0, num_classes, dtype=tf.int32)
    self.u_weak = rng.uniform((unlabeled,) + shape)
    self.u_strong = rng.uniform((unlabeled,) + shape)
    self.num_images = batch_size + 2 * unlabeled




def with_keras_leaky_relu(keras, model):
  """`model` with Keras' own LeakyReLU layers instead of mpl_tf's (same config and weights): the old networks."""
  from mpl_tf.models.common import LeakyReLU  # pylint: disable=import-outside-toplevel

  def clone(layer):
    cls = keras.layers.LeakyReLU if isinstance(layer, LeakyReLU) else layer.__class__
    return cls.from_config(layer.get_config())
  copy = keras.models.clone_model(model, clone_function=clone)
  copy.set_weights(model.get_weights())
  return copy


def build_cases(tf, keras, args, element: Element, jit: bool, only=None, keras_lrelu=False):
  """name -> (one-step callable that blocks until the step is done, variables it keeps, a callable that traces
  the step's function without running it) for one jit setting; with `only`, that case alone. `keras_lrelu`:
  the MPL variants and the supervised step only, on networks with Keras' LeakyReLU, named with KERAS_LRELU."""
  from mpl_tf import losses  # pylint: disable=import-outside-toplevel
  from mpl_tf.algorithms import feedback  # pylint: disable=import-outside-toplevel
  from mpl_tf.algorithms.mpl import MetaPseudoLabelsModel  # pylint: disable=import-outside-toplevel
  from mpl_tf.algorithms.supervised import SupervisedModel  # pylint: disable=import-outside-toplevel
  from mpl_tf.algorithms.uda import UDASettings, uda_objective  # pylint: disable=import-outside-toplevel
  from mpl_tf.models.builder import build_model  # pylint: disable=import-outside-toplevel

  shape = (args.image_size, args.image_size, 3)
  seeds = iter(range(1000))

  def net():
    model = build_model(args.model, num_classes=10, input_shape=shape, seed=next(seeds))
    return with_keras_leaky_relu(keras, model) if keras_lrelu else model

  def sgd():
    opt = keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
      opt = keras.mixed_precision.LossScaleOptimizer(opt)  # as experiment.optimizer does
    return opt

  uda = dict(uda=UDASettings(weight=8.0, temperature=0.7, threshold=0.6))
  e = element
  cases = {}

  def keras_case(model, data):
    train_function = model.make_train_function()
    iterator = iter(tf.data.Dataset.from_tensors(data).repeat())

    def step():
      logs = train_function(iterator)
      return {k: float(v) for k, v in logs.items()}

    return (step, model.trainable_variables + model.non_trainable_variables,
            lambda: train_function.get_concrete_function(iterator))

  sfx = KERAS_LRELU if keras_lrelu else ""
  wanted = lambda name: only is None or name + sfx == only  # pylint: disable=unnecessary-lambda-assignment

  mpl_data = ((e.x_l, e.y_l), (e.u_weak, e.u_strong))
  for variant in args.variants.split(","):
    if not wanted(f"mpl/{variant}"):
      continue
    mode, *extras = variant.split("+")
    options = dict(uda) if "uda" in extras else {}
    if "recompute" in extras:
      options["teacher_activations"] = "recompute"
    model = MetaPseudoLabelsModel(teacher=net(), student=net(), pseudo_labels="sample" if mode == "hard" else "soft",
                                  label_smoothing=0.15, **options)
    model.compile(teacher_optimizer=sgd(), student_optimizer=sgd(), jit_compile=jit)
    cases[f"mpl/{variant}{sfx}"] = keras_case(model, mpl_data)

  if wanted("supervised"):
    supervised = SupervisedModel(net())
    supervised.compile(optimizer=sgd(), jit_compile=jit)
    x_all = tf.concat([e.x_l, e.u_weak, e.u_strong], 0)
    y_all = tf.concat([e.y_l, tf.zeros([2 * e.u_weak.shape[0]], tf.int32)], 0)
    cases[f"supervised{sfx}"] = keras_case(supervised, (x_all, y_all))
  if keras_lrelu or (only is not None and not only.startswith("part/")):
    return cases

  # The parts, each alone, on one teacher and one student network.
  teacher, student = net(), net()
  t_opt, s_opt = sgd(), sgd()
  step0 = tf.constant(0, tf.int64)
  t_vars, s_vars = teacher.trainable_variables, student.trainable_variables
  fn = lambda f: tf.function(f, jit_compile=jit)  # pylint: disable=unnecessary-lambda-assignment

  def teacher_pass(u_weak, u_strong, options):
    with tf.GradientTape() as tape:
      out = uda_objective(teacher, e.x_l, e.y_l, u_weak, u_strong, step0, label_smoothing=0.15, **options)
      labels = tf.zeros([tf.shape(out.strong)[0]], tf.int32)
      loss = out.loss + tf.reduce_mean(losses.cross_entropy(labels, out.strong))
    t_opt.apply_gradients(zip(tape.gradient(loss, t_vars), t_vars))
    return loss

  hard_labels = tf.random.stateless_uniform([e.u_strong.shape[0]], (1, 2), 0, 10, dtype=tf.int32)
  soft_targets = tf.nn.softmax(tf.random.stateless_normal([e.u_strong.shape[0], 10], (3, 4)))
  direction = [tf.random.stateless_normal(v.shape, (5, i)) * 1e-3 for i, v in enumerate(s_vars)]

  def student_eval_l():
    return feedback.labeled_loss(student, e.x_l, e.y_l, "train")

  def student_train_u():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(losses.cross_entropy(hard_labels, student(e.u_strong, training=True)))
    s_opt.apply_gradients(zip(tape.gradient(loss, s_vars), s_vars))
    return loss

  def student_meta_u():
    targets = tf.identity(soft_targets)
    with tf.GradientTape(watch_accessed_variables=False) as outer:
      outer.watch(targets)
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(losses.soft_cross_entropy(targets, student(e.u_strong, training=True)))
      grads = tape.gradient(loss, s_vars)
      s_opt.apply_gradients(zip([tf.stop_gradient(g) for g in grads], s_vars))
      dot = tf.add_n([tf.reduce_sum(g * d) for g, d in zip(grads, direction)])
    return tf.reduce_sum(outer.gradient(dot, targets))

  def student_grad_l():
    with tf.GradientTape() as tape:
      loss = student_eval_l()
    return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, s_vars)])

  parts = {
      "teacher_uda": fn(lambda: teacher_pass(e.u_weak, e.u_strong, uda)),
      "teacher_sup": fn(lambda: teacher_pass(e.u_strong, None, {})),
      "student_eval_l": fn(student_eval_l),
      "student_train_u": fn(student_train_u),
      "student_meta_u": fn(student_meta_u),
      "student_grad_l": fn(student_grad_l),
  }
  kept = teacher.weights + student.weights
  for name, f in parts.items():
    if wanted(f"part/{name}"):
      cases[f"part/{name}"] = ((lambda f=f: float(f())), kept, f.get_concrete_function)
  return cases


def main(argv=None):
  args = _parse(argv)
  if args.from_json:
    with open(args.from_json) as f:
      report = json.load(f)
    print(f"{report['command']}\n{report['machine']}, TensorFlow {report['tensorflow']}")
    print(render(report))
    return report
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from mpl_tf.keras import keras  # pylint: disable=import-outside-toplevel
  keras.mixed_precision.set_global_policy(args.precision)

  unlabeled = args.batch_size * args.uda_ratio
  element = Element(tf, args.batch_size, unlabeled, args.image_size, 10)
  if args.isolated_case:
    step, _, trace = build_cases(tf, keras, args, element, bool(args.isolated_jit), only=args.isolated_case,
                                 keras_lrelu=args.isolated_case.endswith(KERAS_LRELU))[args.isolated_case]
    step_memory.report_here(step_memory.measure_here(tf, step, trace, args.warmup, args.isolated_view))
    return None
  jits = {"off": [False], "on": [True], "both": [False, True]}[args.jit]
  cases = {}
  for jit in jits:
    for keras_lrelu in [False] + ([True] if args.compare_keras_leaky_relu else []):
      for name, case in build_cases(tf, keras, args, element, jit, keras_lrelu=keras_lrelu).items():
        cases[(name, jit)] = case
  keys = list(cases)
  print(f"{args.model} {args.image_size}x{args.image_size}, B={args.batch_size}, U={unlabeled} in two views: "
        f"{element.num_images} images an element; {len(keys)} cases, {args.warmup} warmup + {args.steps} timed "
        f"rounds, interleaved; {os.cpu_count()} CPUs", flush=True)

  times = {key: [] for key in keys}
  cpu_times = {key: [] for key in keys}
  for round_ in range(args.warmup + args.steps):
    start_round = time.perf_counter()
    order = keys[round_ % len(keys):] + keys[:round_ % len(keys)]  # rotate, so no case always follows another
    for key in order:
      start, start_cpu = time.perf_counter(), time.process_time()
      cases[key][0]()
      if round_ >= args.warmup:
        times[key].append(time.perf_counter() - start)
        cpu_times[key].append(time.process_time() - start_cpu)
    print(f"round {round_ + 1}/{args.warmup + args.steps}{' (warmup)' if round_ < args.warmup else ''}: "
          f"{time.perf_counter() - start_round:.0f} s", flush=True)

  views = step_memory.VIEWS if args.memory == "both" else (args.memory,)
  script, child_args = os.path.abspath(__file__), step_memory.child_argv(sys.argv[1:] if argv is None else argv)
  memory = {}
  for key in keys:
    memory[key] = {view: step_memory.measure(script, child_args, key[0], key[1], view) for view in views}
    print(f"memory {case_name(*key)}: " + ", ".join(f"{v} {m:.0f} MiB" for v, m in memory[key].items()), flush=True)
  state = {key: sum(v.shape.num_elements() * v.dtype.size for v in cases[key][1]) / 2**20 for key in keys}
  report = {"command": "python tools/benchmark_step.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}",
            "tensorflow": tf.__version__, "model": args.model, "image_size": args.image_size,
            "batch_size": args.batch_size, "unlabeled_batch_size": unlabeled, "images_per_step": element.num_images,
            "warmup": args.warmup, "steps": args.steps, "memory": args.memory, "variants": args.variants.split(","),
            "jit": [bool(j) for j in jits], "precision": args.precision,
            "compare_keras_leaky_relu": args.compare_keras_leaky_relu,
            "devices": [d.name for d in tf.config.list_logical_devices() if d.device_type != "CPU"] or ["CPU"],
            "cases": {}}
  for (name, jit), t in times.items():
    report["cases"][case_name(name, jit)] = {
        "all_s": t, "all_cpu_s": cpu_times[(name, jit)], **{f"{v}_mib": m for v, m in memory[(name, jit)].items()},
        "peak_mib": memory[(name, jit)].get("allocator", memory[(name, jit)].get("rss")),
        "weights_mib": state[(name, jit)]}
  text = render(report)
  print(text)
  if args.output:
    with open(args.output, "w") as f:
      json.dump(report, f, indent=2)
  return report


if __name__ == "__main__":
  main()
  # Leave without the interpreter's teardown: after a run of many cases, freeing the traced graphs' protobuf
  # messages (upb arenas, each freed with a malloc_trim over the whole heap) took 10-20 minutes once the JSON was
  # written. Everything is written and flushed by now.
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(0)  # pylint: disable=protected-access
