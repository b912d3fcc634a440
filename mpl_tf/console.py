"""What a command line prints: our lines on the console, TensorFlow's talk in a log file.

The console of `mpl-train`, `mpl-evaluate` and `mpl-predict` holds our own lines only: on stdout what the command
reports (phase headers, the Keras progress bar, the metrics and the summary; evaluate's summary; predict's rows),
on stderr our warnings (`<program>: warning: ...`, e.g. corrupt image files skipped) and a user's error
(`<program>: ...`, `mpl_tf.cli`). TensorFlow talks on three channels, which the entry points route here:

- C++ log lines (`I0000 ... port.cc] oneDNN custom operations are on`, `E0000 ... failed call to cuInit`,
  `W0000 ... dataset.h] ...`). Their level, TF_CPP_MIN_LOG_LEVEL, is read when TensorFlow's libraries load, so
  `loading_tensorflow` sets it around an entry point's imports: the flag `--tf_log_level=N`, else the environment
  variable, else 3 (fatal lines only; 2 adds errors, 1 warnings, 0 everything). While they load, the libraries also
  print lines that no level filters (absl's `WARNING: All log messages before absl::InitializeLog() ...`, oneDNN,
  CUDA stubs); those are held back: the lines at or above the level are printed once the imports end, all of them
  go to the log file. Later C++ lines cannot be sent to a file: they are shown or not by the level.
- Python logging: TensorFlow's `tensorflow` logger (`WARNING:tensorflow:...`), absl's and every library's records
  go to the log file (from INFO; absl's `--verbosity` sets that level). Ours (`mpl_tf.*` loggers) at WARNING and
  above, and anyone's at ERROR and above, reach stderr too.
- Python warnings (`warnings.warn`: a DeprecationWarning or UserWarning from tf, keras, tfds) go to the log file,
  each once per place in the code, unless `-W` / PYTHONWARNINGS choose otherwise.

An entry point calls `loading_tensorflow` around its imports, `start(program)` first thing in `main`, and
`log_to(path)` once the log file's directory may be written (records until then are held and written first). An
exception is no log record: it still ends the program on the console (`mpl_tf.cli`, or its traceback).
"""
import contextlib
import datetime
import logging
import os
import re
import shlex
import sys
import tempfile
import warnings
from typing import IO, List, Optional, Sequence, Tuple

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
LEVEL_FLAG = "tf_log_level"
DEFAULT_LEVEL = 3
# The help of each entry point's --tf_log_level flag (the flag itself is defined there).
LEVEL_HELP = ("TensorFlow's C++ log lines on stderr: 3 (default) fatal only, 2 errors too, 1 warnings too, 0 "
              "everything, start-up lines included (sets TF_CPP_MIN_LOG_LEVEL before TensorFlow loads; without the "
              "flag the variable is used). TensorFlow's Python logs and warnings go to the command's log file "
              "(mpl-train: WORKDIR/logs/train.log) at any level")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_CPP_LINE = re.compile(r"([IWEF])\d{4} ")  # glog / absl: I0000 00:00:1796523829.647808    2514 port.cc:153] ...
_ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_HELD_RECORDS_MAX = 10000

_loading_output = ""  # what TensorFlow's libraries printed on stderr while they loaded


def requested_level(argv: Sequence[str]) -> Optional[int]:
  """The value of `--tf_log_level=N` or `--tf_log_level N` in `argv` (the last one; absl has not parsed the flags
  yet when TensorFlow is imported), or None; a value absl would refuse is left to absl."""
  level = None
  for i, arg in enumerate(argv):
    if arg == "--":
      break
    value = None
    if arg.startswith(f"--{LEVEL_FLAG}="):
      value = arg.split("=", 1)[1]
    elif arg == f"--{LEVEL_FLAG}" and i + 1 < len(argv):
      value = argv[i + 1]
    if value is not None and value.strip() in ("0", "1", "2", "3"):
      level = int(value)
  return level


def cpp_level(argv: Sequence[str]) -> int:
  """The C++ log level a command runs at: the flag, else TF_CPP_MIN_LOG_LEVEL, else `DEFAULT_LEVEL`."""
  level = requested_level(argv)
  if level is not None:
    return level
  try:
    return min(max(int(os.environ[LEVEL_VARIABLE]), 0), 3)
  except (KeyError, ValueError):
    return DEFAULT_LEVEL


def shown_at(text: str, level: int) -> str:
  """The part of TensorFlow's loading output to print at C++ log level `level`: each C++ line (`I0000 ...`,
  `W...`, `E...`, `F...`, with the lines after it that start no log line) whose severity reaches `level`. absl's
  notice about messages before InitializeLog counts as an info line; lines before the first log line are printed."""
  shown: List[str] = []
  keep = True
  for line in text.splitlines(keepends=True):
    match = _CPP_LINE.match(line)
    if match:
      keep = _SEVERITY[match.group(1)] >= level
    elif line.rstrip("\n") == _ABSL_NOTICE:
      keep = level == 0
    if keep:
      shown.append(line)
  return "".join(shown)


class _Held(logging.Handler):
  """Keeps records until the log file is known (`log_to`); at most `_HELD_RECORDS_MAX`."""

  def __init__(self):
    super().__init__()
    self.records: List[logging.LogRecord] = []

  def emit(self, record):
    if len(self.records) < _HELD_RECORDS_MAX:
      self.records.append(record)


class _Console(logging.Handler):
  """Our warnings and anyone's errors on stderr (the stream `sys.stderr` is when the record comes)."""

  def __init__(self, program: str):
    super().__init__()
    self.program = program

  def filter(self, record):
    ours = record.name == "mpl_tf" or record.name.startswith("mpl_tf.")
    return record.levelno >= (logging.WARNING if ours else logging.ERROR)

  def emit(self, record):
    try:
      ours = record.name == "mpl_tf" or record.name.startswith("mpl_tf.")
      kind = record.levelname.lower() if ours else f"{record.name} {record.levelname.lower()}"
      sys.stderr.write(f"{self.program}: {kind}: {record.getMessage()}\n")
      sys.stderr.flush()
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)


class _LogFile(logging.FileHandler):
  """The command's log file (one per `log_to`)."""


def _ours(kind) -> List[logging.Handler]:
  return [h for h in logging.getLogger().handlers if isinstance(h, kind)]


def _hold_records() -> None:
  """Python logging and warnings go to the root logger, held until `log_to` names the file."""
  root = logging.getLogger()
  if not _ours(_Held) and not _ours(_LogFile):
    root.addHandler(_Held())
  logging.captureWarnings(True)
  if not sys.warnoptions:
    warnings.simplefilter("default")  # each warning once per place: the log file keeps library deprecations too


def _stderr_to_temporary_file() -> Tuple[int, Optional[IO[bytes]]]:
  """Points fd 2 at a temporary file; returns the saved fd 2 and the file (-1, None where fd 2 cannot move)."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError, AttributeError):
    return -1, None
  held = tempfile.TemporaryFile()  # pylint: disable=consider-using-with
  os.dup2(held.fileno(), 2)
  return saved, held


@contextlib.contextmanager
def loading_tensorflow(argv: Optional[Sequence[str]] = None):
  """Around an entry point's imports: sets TensorFlow's C++ log level (`cpp_level` of `argv`, default
  `sys.argv`) before its libraries load and holds back what they print on stderr meanwhile (shown by level once
  the imports end; all of it kept for the log file). If an import fails, everything held is printed. Does nothing
  when TensorFlow is loaded already (a test or a tool imported the entry point)."""
  global _loading_output  # pylint: disable=global-statement
  if "tensorflow" in sys.modules:
    yield
    return
  argv = sys.argv if argv is None else argv
  level = cpp_level(argv)
  os.environ[LEVEL_VARIABLE] = str(level)
  _hold_records()
  saved, held = _stderr_to_temporary_file()
  if held is None:
    yield
    return
  failed = False
  try:
    yield
  except BaseException:
    failed = True
    raise
  finally:
    try:
      sys.stderr.flush()
    except (OSError, ValueError):
      pass
    os.dup2(saved, 2)
    os.close(saved)
    held.seek(0)
    text = held.read().decode("utf-8", errors="replace")
    held.close()
    _loading_output += text
    shown = text if failed else shown_at(text, level)
    if shown:
      sys.stderr.write(shown)
      sys.stderr.flush()


def start(program: str) -> None:
  """First thing in an entry point's `main` (absl has parsed the flags and put its own handler on the root
  logger): our console handler instead of absl's, TensorFlow's logger without its stderr handler, records held
  for the log file. Called again (several `main`s in one process), it replaces its own handler."""
  root = logging.getLogger()
  for handler in root.handlers[:]:
    if isinstance(handler, _Console) or type(handler).__name__ == "ABSLHandler":
      root.removeHandler(handler)
  tf_logger = logging.getLogger("tensorflow")
  for handler in tf_logger.handlers[:]:  # its own `WARNING:tensorflow:...` handler on stderr, if it made one
    tf_logger.removeHandler(handler)
  tf_logger.propagate = True
  root.addHandler(_Console(program))
  _hold_records()


def log_to(path: Optional[str], program: str = "") -> None:
  """From now on the log file is `path` (appended to, a header line per command); the records held so far and
  TensorFlow's loading output are written to it first. None: the held records are dropped, later ones too."""
  root = logging.getLogger()
  held = [r for h in _ours(_Held) for r in h.records]
  for handler in _ours(_Held) + _ours(_LogFile):
    root.removeHandler(handler)
    handler.close()
  if path is None:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  handler = _LogFile(path, mode="a", encoding="utf-8")
  handler.setFormatter(logging.Formatter(LOG_FORMAT))
  now = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
  handler.stream.write(f"==== {program or os.path.basename(sys.argv[0])} {now} (pid {os.getpid()}): "
                       f"{' '.join(sys.argv)}\n")
  if _loading_output:
    handler.stream.write(f"TensorFlow's libraries while loading (C++ log level {os.environ.get(LEVEL_VARIABLE)}):\n"
                         + _loading_output + ("" if _loading_output.endswith("\n") else "\n"))
  handler.flush()
  for record in held:
    handler.handle(record)
  root.addHandler(handler)


def shell_join(args: Sequence[str]) -> str:
  """A command line to copy and paste: `shlex.join`'s quoting, except that an argument holding single quotes
  (a gin string binding) is written `--flag="... 'x' ..."` rather than shlex's `'--flag=... '"'"'x'"'"''`.
  Both mean the same to a POSIX shell; only arguments free of `"`, `\\`, `$`, `` ` `` and `!` get the double quotes."""
  words = []
  for arg in args:
    quoted = shlex.quote(arg)
    if quoted != arg and "'" in arg and not set(arg) & set('"\\$`!'):
      flag, sep, value = arg.partition("=")
      quoted = f'{flag}="{value}"' if sep and flag.startswith("-") and shlex.quote(flag) == flag else f'"{arg}"'
    words.append(quoted)
  return " ".join(words)
