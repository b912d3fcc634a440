"""`mpl-train --show_config --gin_file=...`: a recipe's merged configuration, each value with the file and line that
set it, without training.

A recipe is a chain of gin files (`gin/own_data.gin` includes `gin/digits.gin`, which includes a data, a model, a
schedule and an algorithm file) plus the command's bindings; a value can be set in one file and overridden in
another. gin keeps the final values only, so this walks the same files with gin's own parser (`include`s in place,
later statements win, `--gin_bindings` last) to record where each value comes from, then prints every binding
gin holds after parsing, with its source, and, for each configurable the recipe binds, the parameters it leaves
at their defaults (`# default`).
"""
import inspect
from typing import Callable, Dict, List, Sequence, Tuple

import gin
from gin import config_parser

Source = Tuple[str, int]  # (file or "--gin_bindings", line)


def _key(statement) -> str:
  """`scope/selector.param`, or the macro's name."""
  if not statement.arg_name:
    return statement.selector
  return f"{statement.scope + '/' if statement.scope else ''}{statement.selector}.{statement.arg_name}"


def binding_sources(files: Sequence[str], bindings: Sequence[str], find: Callable[[str], str]) -> Dict[str, Source]:
  """key -> (file, line) of the statement that set it last; `find` maps a gin file name to a readable path."""
  sources: Dict[str, Source] = {}

  def walk(text: str, name: str, seen: Tuple[str, ...]):
    for statement in config_parser.ConfigParser(text, gin.config.ParserDelegate(skip_unknown=True)):
      if isinstance(statement, config_parser.IncludeStatement):
        if statement.filename not in seen:
          with open(find(statement.filename)) as f:
            walk(f.read(), statement.filename, seen + (statement.filename,))
      elif isinstance(statement, config_parser.BindingStatement):
        sources[_key(statement)] = (name, statement.location.line_num)

  for name in files:
    with open(find(name)) as f:
      walk(f.read(), name, (name,))
  walk("\n".join(bindings), "--gin_bindings", ())
  return sources


def _format(value) -> str:
  """A bound value as a gin file writes it: `%STEPS` for a macro, `@name` for a configurable reference."""
  if isinstance(value, gin.config.ConfigurableReference):
    scope, _, selector = value.scoped_selector.rpartition("/")
    if selector.endswith("macro"):
      return f"%{scope}"
    return f"@{value.scoped_selector}" + ("()" if value.evaluate else "")
  return repr(value)


def _name(selector: str) -> str:
  """The configurable's registered name (`run`) for gin's full selector (`mpl_tf.experiment.run`)."""
  configurable = gin.config._REGISTRY.get_match(selector)  # pylint: disable=protected-access
  return configurable.name if configurable is not None else selector


def _defaults(selector: str) -> List[Tuple[str, object]]:
  """(parameter, default) of a configurable's parameters that have a default."""
  configurable = gin.config._REGISTRY.get_match(selector)  # pylint: disable=protected-access
  if configurable is None:
    return []
  target = configurable.wrapped.__init__ if inspect.isclass(configurable.wrapped) else configurable.wrapped
  denied = set(configurable.denylist or ())
  return [(name, p.default) for name, p in inspect.signature(target).parameters.items()
          if p.default is not inspect.Parameter.empty and name not in denied and name != "self"]


def render(sources: Dict[str, Source]) -> str:
  """The merged configuration gin holds (parsed already), one `key = value  # source` line each, grouped by
  configurable; the parameters a bound configurable leaves at their defaults follow its bindings."""
  config = gin.config._CONFIG  # pylint: disable=protected-access
  macros, groups = [], {}
  for (scope, selector), params in sorted(config.items(), key=lambda item: (_name(item[0][1]), item[0][0])):
    if selector.endswith("macro"):
      macros.append((scope, params.get("value")))
      continue
    groups.setdefault(selector, []).append((scope, params))
  width = 56
  lines = ["# Macros"] if macros else []
  for name, value in macros:
    file, line = sources.get(name, ("?", 0))
    lines.append(f"{f'{name} = {_format(value)}':<{width}}  # {file}:{line}")
  for selector, scoped in groups.items():
    name = _name(selector)
    lines += ["", f"# {name} ({selector})"]
    bound = set()
    for scope, params in scoped:
      for param, value in sorted(params.items()):
        key = f"{scope + '/' if scope else ''}{name}.{param}"
        file, line = sources.get(key, ("?", 0))
        lines.append(f"{f'{key} = {_format(value)}':<{width}}  # {file}:{line}")
        bound.add(param)
    for param, default in _defaults(selector):
      if param not in bound:
        lines.append(f"{f'{name}.{param} = {default!r}':<{width}}  # default")
  return "\n".join(lines)
