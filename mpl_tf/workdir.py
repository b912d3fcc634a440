"""Work-directory safety: a run resumes only the run its work directory holds, never a differently configured one.

Re-running a command in its work directory resumes it (every phase checkpoints). Re-running it with other
settings used to resume too: the old checkpoints were restored under the new configuration, so `run.method =
'uda'` in an MPL run's directory reported the MPL student as UDA's, and a raised `run.steps` reported and
exported the old, finished student. So the first run of a directory records its configuration (`config.gin`, the
gin bindings as parsed), and a later run in it must have the same, apart from `MAY_CHANGE` (what only changes how
a run is watched or saved). Otherwise it stops before touching anything, naming each binding that differs.

Raising `run.steps` is refused like any other change: the learning-rate schedules span `run.steps`, so a
"longer" resumed run would not be the run the new configuration describes. The ways out are a new work directory,
`--overwrite` (delete this one's run and start afresh) or, knowingly, `--allow_config_change` (resume under the
new configuration, e.g. to add a phase after a finished one; the new configuration is recorded).
"""
import ast
import contextlib
import fcntl
import json
import os
import shlex
import shutil
import socket
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence

from mpl_tf import runs as run_lib

CONFIG_FILE = "config.gin"
COMMANDS_FILE = "commands.log"
# Bindings that may differ between the runs of one directory: they change what is shown, saved or exported,
# never what is trained.
MAY_CHANGE = ("run.verbose", "run.export", "run.summary_every", "run.checkpoint_every", "run.eval_every")
# Data paths: recorded absolute (`experiment.absolute_data_paths`); a relative one recorded before that is read
# from the current directory, as that run read it.
PATH_BINDINGS = ("build_dataset.path", "build_dataset.unlabeled_path", "build_dataset.test_path",
                 "build_dataset.data_dir")
# What training leaves in a directory: a run exists once one of these does (a start that failed before training,
# e.g. on a bad binding, leaves only the configuration files and does not bind the directory).
RUN_OUTPUTS = ("checkpoints", "summaries", "export", "predictions", "metrics.json")
# What `--overwrite` deletes, and nothing else.
RUN_FILES = RUN_OUTPUTS + ("operative_config.gin", "augmentation.json", CONFIG_FILE)


class ConfigChanged(ValueError):
  """The work directory holds a run of another configuration; raised before anything is written."""


def bindings(config_text: str) -> Dict[str, str]:
  """`{'scope/configurable.param': 'value'}` (and macros) of gin's `config_str()`; comments dropped, values that
  gin wraps over several lines joined."""
  out: Dict[str, str] = {}
  key = None
  for line in config_text.splitlines():
    if not line.strip() or line.lstrip().startswith("#"):
      continue
    if line[0].isspace() and key is not None:
      out[key] += " " + line.strip()
      continue
    key, _, value = line.partition(" = ")
    key = key.strip()
    out[key] = value.strip()
  return out


def with_macros_expanded(config: Dict[str, str]) -> Dict[str, str]:
  """`bindings` as the run reads them: a value that is a macro reference (`%EMA_DECAY`) replaced by the macro's
  value, and the macros themselves (keys without a configurable, `EMA_DECAY`) left out. So a configuration that
  moves a repeated value into a macro, or a macro no binding uses, is the same configuration."""
  macros = {k: v for k, v in config.items() if "." not in k}
  out = {}
  for key, value in config.items():
    if key in macros:
      continue
    seen = set()
    while value.startswith("%") and value[1:] in macros and value not in seen:  # a macro may name a macro
      seen.add(value)
      value = macros[value[1:]]
    out[key] = value
  return out


def differences(recorded: Dict[str, str], new: Dict[str, str], may_change: Sequence[str] = MAY_CHANGE) -> List[str]:
  """One line per binding that differs, as 'key: recorded -> new' ('(unset)' where a side lacks it), macros
  expanded (`with_macros_expanded`)."""
  recorded, new = with_macros_expanded(recorded), with_macros_expanded(new)
  lines = []
  for key in sorted(set(recorded) | set(new)):
    if key in may_change or _resolved(key, recorded.get(key)) == _resolved(key, new.get(key)):
      continue
    lines.append(f"{key}: {recorded.get(key, '(unset)')} -> {new.get(key, '(unset)')}")
  return lines


def absolute_path(value):
  """`value` as an absolute path from the current directory when it is a local path (a non-empty string that is
  not a URL such as gs://...); anything else as it is."""
  if isinstance(value, str) and value and "://" not in value:
    return os.path.abspath(value)
  return value


def _resolved(key: str, value: Optional[str]) -> Optional[str]:
  """A data path's gin value (gin text) as an absolute path; any other value as it is."""
  if key not in PATH_BINDINGS or value is None:
    return value
  try:
    path = ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return value
  return repr(absolute_path(path)) if isinstance(path, str) else value


def log_command(workdir: str, argv: Sequence[str]) -> None:
  """Appends the command as typed, with the time, the directory it ran from and the intra-op thread count when
  one was set (it changes the figures: `runs.thread_prefix`), to WORKDIR/commands.log (the recorded
  configuration holds the data paths resolved)."""
  with open(os.path.join(workdir, COMMANDS_FILE), "a") as f:
    f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  cd {shlex.quote(os.getcwd())} && "
            f"{run_lib.thread_prefix()}{shlex.join(argv)}\n")


def has_run(workdir: str) -> bool:
  """Whether `workdir` holds what training writes (`RUN_OUTPUTS`)."""
  return any(os.path.exists(os.path.join(workdir, name)) for name in RUN_OUTPUTS)


def prepare(workdir: str, config_text: str, *, overwrite: bool = False, allow_change: bool = False,
            write: bool = True) -> List[str]:
  """Makes `workdir` ready for a run of `config_text` (gin's `config_str()`); returns the differences accepted.

  A fresh directory gets `config.gin`. A directory holding a run of the same configuration (up to `MAY_CHANGE`)
  resumes. Otherwise: `overwrite` deletes the previous run's files first; `allow_change` resumes anyway and
  records the new configuration; neither raises `ConfigChanged` naming the differing bindings, with nothing
  touched. A directory with a run but no recorded configuration (written before mpl_tf recorded one) counts as
  different.

  `write=False` (the other clients of a multi-client DTensor run, which share the chief's workdir): the same
  check and the same `ConfigChanged`, but nothing is deleted or written; with `overwrite` nothing is checked
  either (the chief deletes the old run before it joins the mesh, and the others read nothing before that).
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not write and overwrite:
    return []
  if overwrite:
    for name in RUN_FILES:
      target = os.path.join(workdir, name)
      if os.path.isdir(target):
        shutil.rmtree(target)
      elif os.path.exists(target):
        os.remove(target)
  changed: List[str] = []
  if has_run(workdir):
    if os.path.exists(path):
      with open(path) as f:
        changed = differences(bindings(f.read()), bindings(config_text))
    else:
      changed = [f"(no {CONFIG_FILE}: the run in it was made before mpl_tf recorded configurations)"]
    if changed and not allow_change:
      raise ConfigChanged(
          f"{workdir} holds a run of another configuration; not resuming it. Differences (recorded -> now): "
          + "; ".join(changed) + ". Use a new --workdir, or --overwrite to delete that run and start afresh "
          "(or --allow_config_change to resume it under the new configuration on purpose).")
  if not write:
    return changed
  os.makedirs(workdir, exist_ok=True)
  if changed or not has_run(workdir) or not os.path.exists(path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.write(config_text)
    os.replace(tmp, path)
  return changed


# --- one run per work directory --------------------------------------------------------------------------
LOCK_FILE = "run.lock"


class WorkdirLocked(RuntimeError):
  """Another live run holds the work directory (its lock file names it)."""


def _describe(owner: Dict) -> str:
  return (f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}"
          + (f": {owner['command']}" if owner.get("command") else ""))


@contextlib.contextmanager
def lock(workdir: str, command: str = "") -> Iterator[None]:
  """Holds `workdir/run.lock` while the block runs; the file names the holder (pid, host, start time, command).

  Two runs in one directory used to both finish, overwriting each other's checkpoints, metrics and export. The
  lock is an exclusive `flock` on the file: the system releases it when its process ends however it ends (SIGKILL
  included), so a live holder is never mistaken for a dead one and two starts cannot both win. A second start is
  refused with `WorkdirLocked` naming the holder. A file that still names an owner but is not locked was left by
  a run that died (a clean end empties it): it is taken over with a warning. Across machines sharing a directory
  the lock holds only where the file system supports `flock` (local disks do; some network file systems do not).
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  with os.fdopen(fd, "r+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirLocked(f"{workdir} is in use by another run ({_read_owner(f)}); wait for it to end, stop it, "
                          "or use another --workdir") from None
    previous = f.read().strip()
    if previous:
      print(f"warning: {path}: taking over the lock of a run that ended without releasing it "
            f"({_read_owner(f, previous)})", file=sys.stderr, flush=True)
    f.seek(0)
    f.truncate()
    json.dump(dict(pid=os.getpid(), host=socket.gethostname(), started=time.strftime("%Y-%m-%d %H:%M:%S"),
                   command=command), f)
    f.flush()
    try:
      yield
    finally:
      f.seek(0)
      f.truncate()  # empty: the next start finds a lock released on purpose
      f.flush()
      fcntl.flock(f, fcntl.LOCK_UN)


def _read_owner(f, text: Optional[str] = None) -> str:
  if text is None:
    f.seek(0)
    text = f.read()
  try:
    return _describe(json.loads(text))
  except ValueError:
    return "holder unknown: unreadable lock file"
