"""Checks of a parsed gin configuration that gin itself does not make, so a mistake fails at parse time.

gin validates parameter names of functions, but lets any name through for a class whose `__init__` takes
`**kwargs` (every Keras model) and for `experiment.network`, whose options go to the model builder. Called by
`experiment.parse_gin`; here so that experiment.py keeps to building and running experiments.
"""
import difflib
import inspect
import os
import re

import gin

from mpl_tf.keras import keras


def shipped_recipes(package: str):
  """The experiment files (`gin/*.gin`) of the installed package or the clone, for a 'no such file' message."""
  for root in (os.path.join(package, "gin"), os.path.join(os.path.dirname(package), "gin")):
    if os.path.isdir(root):
      return [f"gin/{name}" for name in sorted(os.listdir(root)) if name.endswith(".gin")]
  return []


def check_bound_parameters(network) -> None:
  """Refuses a binding of a parameter the class does not take (`MetaPseudoLabelsModel.pseudo_label`).

  gin checks the names of a function's parameters when it parses, but lets any name through for a class whose
  `__init__` takes `**kwargs`, as every Keras model does: the mistake would surface as a long traceback once the
  data is built. This compares each class binding with the parameters of the `__init__`s the class chains to
  (up to `keras.Model`, which takes `name`), and names the unknown one, the closest known one and all of them.
  `network` (experiment.network, whose `**options` go to the model builder) has its options checked by
  `builder.check_options` for the bound model name.
  """
  from mpl_tf.models import builder  # pylint: disable=import-outside-toplevel
  config = gin.config._CONFIG  # pylint: disable=protected-access
  for (scope, selector), params in config.items():
    configurable = gin.config._REGISTRY.get_match(selector)  # pylint: disable=protected-access
    if configurable is not None and configurable.wrapper is network:
      options = {**config.get(("", selector), {}), **params}  # a scope inherits the unscoped bindings
      if "name" in options and not isinstance(options["name"], gin.config.ConfigurableReference):
        builder.check_options(options.pop("name"), options)
    if configurable is None or not inspect.isclass(configurable.wrapped):
      continue
    known = accepted_parameters(configurable.wrapped)
    for param in params:
      if param not in known:
        where = f"{scope}/{configurable.name}" if scope else configurable.name
        close = difflib.get_close_matches(param, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"{where} has no parameter '{param}'{hint}; its parameters: {', '.join(sorted(known))}")


def accepted_parameters(cls) -> set:
  """Keyword parameters `cls(...)` accepts, following `**kwargs` up the `__init__` chain to `keras.Model`."""
  known = set()
  for klass in cls.__mro__:
    if klass is keras.Model:
      return known | {"name"}
    if "__init__" not in vars(klass):
      continue
    parameters = list(inspect.signature(klass.__init__).parameters.values())[1:]
    known |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if not any(p.kind == p.VAR_KEYWORD for p in parameters):
      return known
  return known


def explain(error: Exception) -> str:
  """gin's parse error in one line, with a "did you mean" where gin names an unknown configurable or parameter
  (`run.stpes = 200`: "Configurable 'run' doesn't have a parameter named 'stpes'" gains "did you mean 'steps'?")."""
  message = " ".join(str(error).split())
  registry = gin.config._REGISTRY  # pylint: disable=protected-access
  unknown_param = re.match(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", message)
  unknown_name = re.match(r"No configurable matching '([^']+)'", message)
  hint = ""
  if unknown_param:
    configurable = registry.get_match(unknown_param.group(1))
    if configurable is not None:
      wrapped = configurable.wrapped
      known = (accepted_parameters(wrapped) if inspect.isclass(wrapped) else
               set(inspect.signature(wrapped).parameters) - set(configurable.denylist or ()))
      close = difflib.get_close_matches(unknown_param.group(2), sorted(known), n=1)
      hint = f"did you mean '{close[0]}'? " if close else ""
      hint += f"its parameters: {', '.join(sorted(known))}"
  elif unknown_name:
    names = sorted({selector.split(".")[-1] for selector, _ in registry.items()})
    close = difflib.get_close_matches(unknown_name.group(1).split(".")[-1], names, n=1)
    hint = f"did you mean '{close[0]}'?" if close else ""
  return f"{message} ({hint})" if hint else message
