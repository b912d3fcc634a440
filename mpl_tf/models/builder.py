"""One entry point for every model: `build_model(name, num_classes, input_shape, **options)`.

Names and the builder each goes to (options are that builder's keyword arguments):
  wrn28_2, wrn28_<k>     WRN-28-k of the official MPL code     wide_resnet.build_wrn28 (width=k)
  wrn28_k                the same, width given as an option     wide_resnet.build_wrn28 (width= required)
  resnet50               keras.applications ResNet-50           resnet.build_resnet50
  efficientnet_b0..b7    keras.applications EfficientNets       efficientnet.build_efficientnet
  cnn_small              small CNN for 8x8 digits               cnn.build_cnn_small
  mlp                    TwoMoon MLP of the paper               mlp.build_mlp (imported only when asked for)
Every model is functional, takes [0, 1] images (or features for the MLP), standardises them itself and returns
logits (float32 under mixed precision). The builder is plain Python (no gin): the caller passes options, and an
option the chosen builder does not take is a ValueError naming the ones it does.
"""
import inspect
import re
from typing import Callable, Dict, Sequence, Tuple

from mpl_tf.keras import keras

_WRN = re.compile(r"wrn28_(\d+|k)")
_EFFICIENTNET = re.compile(r"efficientnet_(b[0-7])")

KNOWN_MODELS: Tuple[str, ...] = (
    ("wrn28_2", "wrn28_<k>", "wrn28_k", "resnet50")
    + tuple(f"efficientnet_b{i}" for i in range(8))
    + ("cnn_small", "mlp"))

FAMILIES: Tuple[str, ...] = ("wide_resnet", "resnet", "efficientnet", "cnn", "mlp")


def _unknown(name) -> ValueError:
  return ValueError(f"unknown model name {name!r}; known names: {', '.join(KNOWN_MODELS)} "
                    "(wrn28_<k> for any integer k >= 1; wrn28_k takes the width as the option width=)")


def model_family(name: str) -> str:
  """The family of a model name: 'wide_resnet', 'resnet', 'efficientnet', 'cnn' or 'mlp'.

  For the layout module, which chooses DTensor layouts per family. Raises ValueError on unknown names.
  """
  if not isinstance(name, str):
    raise _unknown(name)
  if _WRN.fullmatch(name):
    return "wide_resnet"
  if name == "resnet50":
    return "resnet"
  if _EFFICIENTNET.fullmatch(name):
    return "efficientnet"
  if name == "cnn_small":
    return "cnn"
  if name == "mlp":
    return "mlp"
  raise _unknown(name)


def _resolve(name: str, options: Dict) -> Tuple[Callable, Tuple, Dict]:
  """(builder function, leading positional arguments besides num_classes/input_shape, options)."""
  family = model_family(name)
  if family == "wide_resnet":
    from mpl_tf.models.wide_resnet import build_wrn28
    k = _WRN.fullmatch(name).group(1)
    if k == "k":
      if "width" not in options:
        raise ValueError("build_model('wrn28_k', ...) needs the option width=<k> (or use the name 'wrn28_<k>')")
    else:
      if int(k) < 1:
        raise ValueError(f"{name!r}: the width k must be >= 1")
      if "width" in options and options["width"] != int(k):
        raise ValueError(f"{name!r} has width {k} but the option width={options['width']!r} was also given")
      options = dict(options, width=int(k))
    return build_wrn28, (), options
  if family == "resnet":
    from mpl_tf.models.resnet import build_resnet50
    return build_resnet50, (), options
  if family == "efficientnet":
    from mpl_tf.models.efficientnet import build_efficientnet
    return build_efficientnet, (_EFFICIENTNET.fullmatch(name).group(1),), options
  if family == "cnn":
    from mpl_tf.models.cnn import build_cnn_small
    return build_cnn_small, (), options
  from mpl_tf.models.mlp import build_mlp  # the lead's module: imported only when an MLP is asked for
  return build_mlp, (), options


def _check_options(name: str, fn: Callable, num_positional: int, options: Dict) -> None:
  params = list(inspect.signature(fn).parameters.values())
  if any(p.kind == p.VAR_KEYWORD for p in params):
    return  # the builder takes **kwargs: it checks its own options
  accepted = [p.name for p in params[num_positional + 2:]
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise ValueError(f"build_model({name!r}): unknown option(s) {unknown}; "
                     f"{fn.__module__}.{fn.__name__} accepts {accepted}")


def takes_option(name: str, option: str, options: Dict = None) -> bool:
  """Whether model `name`'s builder takes `option` (e.g. 'seed': the families whose initialisers are seeded
  declare it in their signature)."""
  fn, _, _ = _resolve(name, dict(options or {}))
  params = inspect.signature(fn).parameters
  return option in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def check_options(name: str, options: Dict) -> None:
  """Raises the ValueError `build_model(name, ..., **options)` would raise for an unknown name or option,
  without building anything (so a misspelled gin binding fails before the data is built)."""
  fn, leading, options = _resolve(name, dict(options))
  _check_options(name, fn, len(leading), options)


def build_model(name: str, num_classes: int, input_shape: Sequence[int], **options) -> keras.Model:
  """Builds the functional Keras model `name` returning `num_classes` logits for inputs of `input_shape`.

  Args:
    name: one of `KNOWN_MODELS` (wrn28_<k> for any k).
    num_classes: number of logits.
    input_shape: shape of one example, no batch dimension: (H, W, C) images in [0, 1], or (features,) for mlp.
    **options: keyword arguments of the family's builder, e.g. bn_fused=False, dropout=0.1, width=4 (wrn28_k),
      mean=/std= (input statistics), seed= (wrn, cnn, mlp).

  Raises:
    ValueError: unknown name, an option the builder does not take, or a bad value.

  Example:
    student = build_model("wrn28_2", 10, (32, 32, 3), bn_fused=False)
  """
  fn, leading, options = _resolve(name, dict(options))
  _check_options(name, fn, len(leading), options)
  try:
    input_shape = tuple(input_shape)
  except TypeError:
    raise ValueError(f"input_shape must be a sequence of ints (no batch dimension), got {input_shape!r}") from None
  return fn(*leading, num_classes, input_shape, **options)
