"""The gin edge: what a gin file may bind, the gin-configured builders, and `run`, one experiment configured by gin.

gin lives here (with its helpers `gin_checks` and `show_config`): the library is plain Python. This module finds
the methods (every `Method` declared by a module of `mpl_tf.algorithms`) and registers what each declares
configurable, so a gin file sets `MetaPseudoLabelsModel.pseudo_labels = 'soft'` or
`MetaPseudoLabelsModel.mpl_weight = 0.0` (an ablation is a binding, not a copied file), and the method is chosen
by `run.method`, never by the dataset. Optimizers are configured per network with gin scopes:
`teacher/optimizer.learning_rate = 0.05`, `student/...`, `finetune/...`; UDA's settings once, for every method
that uses them: `uda.weight = 8.0`. The run loop itself (phases, scoring, files, export) is `mpl_tf.runner`.
"""
import contextlib
import importlib
import inspect
import logging
import os
import pkgutil
from typing import Dict, Optional

import gin
import tensorflow as tf

from mpl_tf import algorithms, gin_checks, layout, runner
from mpl_tf import workdir as workdir_lib
from mpl_tf.algorithms import recompute
from mpl_tf.algorithms.phases import Method
from mpl_tf.algorithms.uda import UDASettings
from mpl_tf.data import stored_predictions
from mpl_tf.data.datasets import build_dataset as _build_dataset
from mpl_tf.keras import keras
from mpl_tf.runner import RunResult
from mpl_tf.schedules import Delayed, WarmupCosine


def discover_methods(package=algorithms) -> Dict[str, Method]:
  """Every `Method` a module of `package` declares at module level, by name (modules in name order)."""
  found = {}
  for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
    module = importlib.import_module(f"{package.__name__}.{info.name}")
    for value in vars(module).values():
      if isinstance(value, Method):
        if value.name in found and found[value.name] is not value:
          raise ValueError(f"two methods are named {value.name!r} ({module.__name__} and another module)")
        found[value.name] = value
  return found


# What gin may bind, registered from the methods' declarations so that the library needs no gin. `_CONFIGURED`
# maps each library object to its configured twin, which `Builder.make` calls; `_INHERITS` a class to (its
# configured base, the arguments it takes from the base's bindings).
METHODS: Dict[str, Method] = {}
_CONFIGURED: Dict = {}
_INHERITS: Dict = {}


def register_methods(package=algorithms) -> Dict[str, Method]:
  """Finds the methods of `package` and registers their configurables with gin (each object once). Idempotent:
  returns `METHODS`, which it extends."""
  found = discover_methods(package)
  for method in found.values():
    METHODS.setdefault(method.name, method)
    for obj, name in method.configurables:
      if obj not in _CONFIGURED:
        _CONFIGURED[obj] = gin.external_configurable(obj, name) if name else gin.external_configurable(obj)
  for method in found.values():
    for cls, names in method.inherits:
      base = next(b for b in cls.__mro__[1:] if b in _CONFIGURED)
      _INHERITS[cls] = (base, tuple(names))
  return METHODS


def _inherited(cls, kwargs: Dict) -> Dict:
  """`kwargs` with the arguments `cls` inherits (`Method.inherits`) from its base's bindings, where neither
  `kwargs` nor a binding of `cls` itself sets them."""
  if cls not in _INHERITS:
    return kwargs
  base, names = _INHERITS[cls]
  out = dict(kwargs)
  for name in names:
    if name not in out and _query(f"{cls.__name__}.{name}", _UNBOUND) is _UNBOUND:
      value = _query(f"{base.__name__}.{name}", _UNBOUND, resolve=True)
      if value is not _UNBOUND:
        out[name] = value
  return out


_UNBOUND = object()
register_methods()
build_dataset = gin.external_configurable(_build_dataset, "build_dataset")
mesh_from_config = gin.external_configurable(layout.mesh_from_config, "mesh_from_config")


_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_GIN_ROOTS = ("", _PACKAGE, os.path.dirname(_PACKAGE))  # the current directory, the installed package, the clone


def find_gin_file(name: str) -> str:
  """The path of gin file `name` ('gin/digits.gin') as gin finds it; a one-line exit naming the recipes if none."""
  for root in _GIN_ROOTS:
    if os.path.isfile(os.path.join(root, name)):
      return os.path.join(root, name)
  raise SystemExit(f"mpl_tf: no gin file {name} (looked in the current directory, the installed package and "
                   f"the clone); the recipes: {', '.join(gin_checks.shipped_recipes(_PACKAGE))}")


def parse_gin(files, bindings, recorded: str = "") -> None:
  """Parses gin, turning gin's errors into one clear message that names the binding or file at fault.

  `recorded`: a configuration as a run recorded it (`config.gin`), parsed before the files and bindings."""
  # gin files and their includes are named from the project root ('gin/data/digits.gin'): after the current
  # directory, gin looks in the installed package (which ships them as mpl_tf/gin) and in the clone's root.
  for prefix in _GIN_ROOTS[1:]:
    if prefix not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
      gin.add_config_file_search_path(prefix)
  for name in files:
    find_gin_file(name)
  # gin logs an error for every search path an include is not under before it finds it: not the user's problem.
  logging.disable(logging.ERROR)
  try:
    if recorded:
      gin.parse_config(recorded)
    gin.parse_config_files_and_bindings(files, bindings)
    gin_checks.check_bound_parameters(network)
    absolute_data_paths()
  except (ValueError, KeyError, IOError, SyntaxError) as e:
    # The problem first, then where: gin's message names the file or bindings line at fault.
    raise SystemExit(f"mpl_tf: bad gin configuration: {gin_checks.explain(e)} (gin files: "
                     f"{', '.join(files) or 'none'})") from e
  finally:
    logging.disable(logging.NOTSET)


def absolute_data_paths() -> None:
  """Rebinds the data paths (`workdir.PATH_BINDINGS`) that are relative to absolute ones, from the current
  directory: the recorded configuration (config.gin, the export's) then names the data wherever it is read from,
  so `mpl-evaluate --workdir=...` works from any directory (the command as typed is kept in WORKDIR/commands.log)."""
  for key in workdir_lib.PATH_BINDINGS:
    value = _query(key, None)
    if isinstance(value, str) and not os.path.isabs(value) and workdir_lib.absolute_path(value) != value:
      with gin.unlock_config():
        gin.bind_parameter(key, workdir_lib.absolute_path(value))


@gin.configurable(denylist=["total_steps", "wait_steps"])  # set by the method: a binding would be ignored
def optimizer(total_steps: int, learning_rate: float = 0.1, momentum: float = 0.0, nesterov: bool = False,
              weight_decay: Optional[float] = None, schedule: str = "constant", warmup_steps: int = 0,
              wait_steps: int = 0, exclude_from_weight_decay=("batch_norm", "bn")) -> keras.optimizers.Optimizer:
  """SGD (optionally Nesterov) with a constant or linear-warmup + cosine rate over `total_steps`.

  `wait_steps`: the rate is 0 for the first N steps and the schedule starts after them (MPL's student wait,
  passed by the method: `mpl.student_wait_steps`).

  `weight_decay` is tf-keras' decoupled decay (w -= lr * wd * w each step), skipped for variables whose
  name contains one of `exclude_from_weight_decay` (batch norm). The official code adds an L2 term to the
  loss instead; with momentum m that is about a decoupled decay of l2 / (1 - m) (5e-4 -> 5e-3 at m = 0.9).
  Scope it per network: `teacher/optimizer.learning_rate = 0.05`.
  """
  if wait_steps < 0:
    raise ValueError(f"optimizer.wait_steps must be >= 0, got {wait_steps}")
  if schedule == "constant":
    lr = Delayed(learning_rate, wait_steps) if wait_steps else learning_rate
  elif schedule == "cosine":
    lr = WarmupCosine(learning_rate, total_steps=total_steps, warmup_steps=warmup_steps, wait_steps=wait_steps)
  else:
    raise ValueError(f"optimizer.schedule must be 'constant' or 'cosine', got {schedule!r}")
  # On a DTensor mesh (layout.activate) a DTensor optimizer: slots take their variables' layouts.
  opt = layout.make_optimizer(keras.optimizers.SGD, layout.active_mesh(), learning_rate=lr, momentum=momentum,
                              nesterov=nesterov, weight_decay=weight_decay)
  if weight_decay:
    opt.exclude_from_weight_decay(var_names=list(exclude_from_weight_decay))
  if keras.mixed_precision.global_policy().name == "mixed_float16":
    opt = keras.mixed_precision.LossScaleOptimizer(opt)  # float16 gradients underflow without loss scaling
  return opt


# The binding that sets each optimizer scope's number of steps.
_STEPS_BINDING = {"teacher": "run.steps", "student": "run.steps", "finetune": "run.finetune_steps",
                  "distill": "distill.steps", "teacher_pretrain": "run.teacher_pretrain_steps"}


def schedule_does_not_fit(scope: str, total_steps: int, wait_steps: int) -> str:
  """A shortened run whose warmup (and the student's wait) no longer fit its steps: which bindings to change
  ("WarmupCosine needs total_steps (200) > ..." named none)."""
  warmup = _query(f"{scope}/optimizer.warmup_steps", 0)
  wait = f" + the student's wait ({wait_steps}, mpl.student_wait_steps)" if wait_steps else ""
  return (f"{scope}/optimizer: {total_steps} steps ({_STEPS_BINDING.get(scope, 'its steps')}) leave nothing "
          f"after the warmup ({warmup}, {scope}/optimizer.warmup_steps){wait}: lower "
          f"{scope}/optimizer.warmup_steps{' or mpl.student_wait_steps' if wait_steps else ''}, or raise "
          f"{_STEPS_BINDING.get(scope, 'the steps')}; for a few steps of every phase add --gin_file=gin/smoke.gin")


def _query(key: str, default, resolve: bool = False):
  """The value gin binds to `key`, or `default` where nothing binds it; with `resolve`, a macro reference
  (`run.steps = %STEPS`) as the macro's value."""
  try:
    value = gin.query_parameter(key)
  except ValueError:
    return default
  if resolve and isinstance(value, gin.config.ConfigurableReference):
    value = value.scoped_configurable_fn()
  return value


@gin.configurable
def network(num_classes: int, input_shape, seed: int, name: str = gin.REQUIRED, **options) -> keras.Model:
  """Builds a named network (see `mpl_tf.models.builder`); other bindings go to the family's builder."""
  from mpl_tf.models import builder  # pylint: disable=import-outside-toplevel
  if builder.takes_option(name, "seed", options):  # the families whose initialisers take one
    options.setdefault("seed", seed)
  keras.utils.set_random_seed(seed)
  mesh = layout.active_mesh()  # None: single device, the network as built
  options.update(layout.network_options(builder.model_family(name), mesh))
  net = builder.build_model(name, num_classes=num_classes, input_shape=tuple(input_shape), **options)
  if mesh is None:
    # Dropout and stochastic depth draw from seeded tf.random.Generators, whose states are variables of the
    # checkpoint, instead of TensorFlow's legacy stateful random ops, whose states no checkpoint holds: a run
    # resumed from a checkpoint draws the masks the uninterrupted run drew (its own would start over).
    recompute.use_restorable_generators(net, seed)
  return layout.place_network(net, mesh)


@gin.configurable("uda")
def uda_settings(weight: float = 1.0, ramp_steps: int = 0, temperature: float = 1.0,
                 threshold: float = 0.0) -> UDASettings:
  """The run's UDA settings (`uda.weight = 8.0`, ...), given to the UDA baseline and to MPL's teacher alike
  (MPL uses them when the data has two unlabeled views; `uda.weight = 0.0` turns the term off). Every shipped
  recipe with two views binds them (gin/algorithms/mpl_uda.gin); unbound, MPL's teacher gets the defaults below,
  while `MetaPseudoLabelsModel` built in Python without `uda=` has no UDA term."""
  return UDASettings(weight=weight, ramp_steps=ramp_steps, temperature=temperature, threshold=threshold)


def load_data(seed: int):
  """The run's `DatasetBundle`, from `build_dataset` bindings (`build_dataset.name = 'digits'`, ...)."""
  return build_dataset(seed=seed)  # pylint: disable=no-value-for-parameter


class Builder:
  """What a method's phases may ask of the run (`mpl_tf.algorithms.phases.Builder`), with gin applied."""

  def __init__(self, data, *, seed: int, steps: int, finetune_steps: int, teacher_steps: int, workdir: str):
    self.data, self.seed, self.steps, self.workdir = data, seed, steps, workdir
    self.finetune_steps, self.teacher_steps = finetune_steps, teacher_steps

  def network(self, offset: int, scope: Optional[str] = None) -> keras.Model:
    with gin.config_scope(scope) if scope else contextlib.nullcontext():
      return network(self.data.num_classes, self.data.input_shape, seed=self.seed * 10 + offset)

  def optimizer(self, scope: str, total_steps: int, wait_steps: int = 0) -> keras.optimizers.Optimizer:
    with gin.config_scope(scope):
      try:
        return optimizer(total_steps=total_steps, wait_steps=wait_steps)
      except ValueError as e:
        if "WarmupCosine needs" not in str(e):
          raise
        raise ValueError(schedule_does_not_fit(scope, total_steps, wait_steps)) from None

  def make(self, obj, *args, **kwargs):
    """`obj` (a method class or phase function) with the run's gin bindings applied, called."""
    return _CONFIGURED.get(obj, obj)(*args, **_inherited(obj, kwargs))

  def uda(self) -> UDASettings:
    return uda_settings()

  def predictions(self) -> stored_predictions.PredictionStore:
    return stored_predictions.PredictionStore(self.data, self.workdir, self.seed)


@gin.configurable
def run(workdir: str, method: str = "mpl", steps: int = gin.REQUIRED, seed: int = 0,
        finetune_steps: int = 0, teacher_pretrain_steps: Optional[int] = None, steps_per_execution: int = 1,
        checkpoint_every: int = 1000, summary_every: int = 100, eval_every: int = 0,
        mixed_precision: Optional[str] = None, jit_compile: Optional[bool] = None, export: bool = True,
        verbose: int = 1) -> RunResult:
  """Trains `method`'s phases in order, evaluates, writes metrics.json and exports the student.

  The metrics are accuracies on the test set as fractions, `step` (of the method's main phase), the student's
  accuracy before later phases changed it (`student/accuracy_before_finetune`, `_after_mpl`), and, when the
  dataset holds a validation split out, the same metrics on it under `validation/...`.

  `jit_compile`: compile every phase's train and evaluation steps with XLA; None picks the default measured for
  the device type (`runner.default_jit_compile`).
  """
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
  spec = METHODS[method]
  # The DTensor mesh (gin/layouts/*.gin; None = single device), made before TensorFlow runs its first op.
  mesh = mesh_from_config()
  runner.check_method(spec, list(METHODS.values()), mesh, jit_compile)
  runner.start(workdir, seed, mesh, mixed_precision)
  data = load_data(seed)
  runner.announce(workdir, data)
  builder = Builder(data, seed=seed, steps=steps, finetune_steps=finetune_steps,
                    teacher_steps=teacher_pretrain_steps or steps, workdir=workdir)
  phases = builder.make(spec.phases, builder)
  return runner.train_phases(
      phases, data, method=method, seed=seed, workdir=workdir, mesh=mesh, operative_config=gin.operative_config_str,
      steps_per_execution=steps_per_execution, checkpoint_every=checkpoint_every, summary_every=summary_every,
      eval_every=eval_every, export=export, verbose=verbose,
      jit_compile=runner.default_jit_compile() if jit_compile is None else bool(jit_compile))


def run_settings() -> Dict:
  """`run`'s method, seed and steps as the parsed gin configuration sets them (its defaults where unbound)."""
  defaults = {p.name: p.default for p in inspect.signature(run.__wrapped__).parameters.values()}
  out = {}
  for name in ("method", "seed", "steps"):
    out[name] = _query(f"run.{name}", defaults[name], resolve=True)
  return out


def prepare_workdir(workdir: str, overwrite: bool = False, allow_change: bool = False):
  """`mpl_tf.workdir.prepare` for the parsed gin configuration: refuses to resume another configuration's run
  (raises `workdir.ConfigChanged` before anything is touched); returns the differences accepted. Of several
  DTensor clients only the chief writes (`layout.is_chief`, read from DTENSOR_CLIENT_ID before TensorFlow starts)."""
  return workdir_lib.prepare(workdir, gin.config_str(), overwrite=overwrite, allow_change=allow_change,
                             write=layout.is_chief())


def main_model(method: str, data, seed: int, steps: int, workdir: Optional[str] = None) -> keras.Model:
  """The compiled model of `method`'s main phase, built as `run` builds it, untrained: for tools that drive the
  training themselves (studies/two_moons/two_moons.py, studies/feedback_snr/feedback_snr.py). gin must be parsed."""
  return _main_phase(method, data, seed, steps, workdir or "").model(None)


def _main_phase(method: str, data, seed: int, steps: int, workdir: str):
  builder = Builder(data, seed=seed, steps=steps, finetune_steps=0, teacher_steps=steps, workdir=workdir)
  return next(phase for phase in builder.make(METHODS[method].phases, builder) if phase.main)


def restore_main_model(method: str, data, seed: int, steps: int, workdir: str) -> keras.Model:
  """`main_model` with the weights its phase left in `workdir` (its latest checkpoint): the MPL model, teacher
  included, as training ended, for scoring without retraining (`mpl_tf.evaluate`). gin must be parsed."""
  phase = _main_phase(method, data, seed, steps, workdir)
  latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints", phase.name))
  if latest is None:
    raise FileNotFoundError(f"{workdir}: no checkpoint of the {method} run's '{phase.name}' phase "
                            f"(checkpoints/{phase.name}); has it trained?")
  model = phase.model(None)
  tf.train.Checkpoint(model=model).restore(latest).expect_partial()
  return model
