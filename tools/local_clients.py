"""Runs one command as N DTensor clients on this machine, talking over loopback ports: a multi-client mesh
without a second host.

  python tools/local_clients.py --clients=2 --timeout=600 -- \
    python -m mpl_tf.train --gin_file=gin/two_moons.gin --gin_file=gin/smoke.gin \
    --gin_file=gin/layouts/data_model.gin --gin_bindings="mesh_from_config.virtual_devices = 2" --workdir=/tmp/mc

Every client gets the same command and DTENSOR_JOBS=localhost:P0,...,localhost:P(N-1) (free ports picked
here), DTENSOR_NUM_CLIENTS=N, DTENSOR_JOB_NAME=worker and its own DTENSOR_CLIENT_ID; `mpl_tf.layout.initialize`
reads them, and the mesh spans every client's devices (with `mesh_from_config.virtual_devices = K`, K logical
CPUs per client, N x K in all). The clients share the work directory: client 0 writes the run's files, all of
them the checkpoints (docs/dtensor.md, "Several clients on one machine").

Why a launcher: a client that fails leaves the others blocked in a collective until DTensor's heartbeats give
up, and a test must not leave processes behind. So each client runs in its own process group, with its output in
a log file (no pipe to fill), and when one fails, or the time bound passes, every group still running is killed.
"""
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags

FLAGS = flags.FLAGS

LOOPBACK = "localhost"


def free_ports(n: int) -> List[int]:
  """`n` distinct TCP ports that were free a moment ago (the kernel's choice for port 0). Another process may
  take one before a client binds it; the clients then fail at start-up, and a re-run picks others."""
  sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
  try:
    for s in sockets:  # all held open together, so the n ports differ
      s.bind((LOOPBACK, 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def client_environments(clients: int, base: Optional[Dict[str, str]] = None) -> List[Dict[str, str]]:
  """The environment of each of `clients` DTensor clients on this machine (a copy of `base`, os.environ by
  default, plus the DTENSOR_* variables)."""
  jobs = ",".join(f"{LOOPBACK}:{port}" for port in free_ports(clients))
  envs = []
  for i in range(clients):
    env = dict(os.environ if base is None else base)
    env.update(DTENSOR_JOBS=jobs, DTENSOR_NUM_CLIENTS=str(clients), DTENSOR_CLIENT_ID=str(i),
               DTENSOR_JOB_NAME="worker")
    envs.append(env)
  return envs


@dataclasses.dataclass
class ClientResult:
  """How one client ended: its exit status (None: killed by the launcher, see `killed` and `why`) and its
  output."""
  client: int
  returncode: Optional[int]
  killed: bool
  output: str
  why: str = ""  # for a killed client: ANOTHER_FAILED or TIME_BOUND


ANOTHER_FAILED, TIME_BOUND = "another client failed", "time bound"


def launch(command: Sequence[str], clients: int = 2, *, timeout: float = 600.0, cwd: Optional[str] = None,
           env: Optional[Dict[str, str]] = None, log_dir: Optional[str] = None) -> List[ClientResult]:
  """Runs `command` as `clients` DTensor clients and waits for all of them, at most `timeout` seconds.

  When a client exits with an error, or the time runs out, every client still running is killed (its whole
  process group), so nothing outlives the call, whatever happens. Each client's stdout and stderr go to
  `log_dir/client<i>.log` (a temporary directory by default) and come back in its `ClientResult`. Never raises
  for a failed client: the caller reads the results (`failed`).
  """
  log_dir = log_dir or tempfile.mkdtemp(prefix="local_clients_")
  os.makedirs(log_dir, exist_ok=True)
  procs: List[subprocess.Popen] = []
  logs = []
  killed = set()
  why = TIME_BOUND
  try:
    for i, client_env in enumerate(client_environments(clients, env)):
      log = open(os.path.join(log_dir, f"client{i}.log"), "w+")  # pylint: disable=consider-using-with
      logs.append(log)
      procs.append(subprocess.Popen(list(command), cwd=cwd, env=client_env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True))
    deadline = time.monotonic() + timeout
    while True:
      codes = [p.poll() for p in procs]  # every client polled each round (`any` would stop at the first)
      if all(c is not None for c in codes) or time.monotonic() > deadline:
        break
      if any(c not in (None, 0) for c in codes):
        why = ANOTHER_FAILED
        break
      time.sleep(0.2)
  finally:
    for i, p in enumerate(procs):
      if p.poll() is None:
        _kill_group(p)
        killed.add(i)
    for log in logs:
      log.close()
  results = []
  for i, p in enumerate(procs):
    with open(os.path.join(log_dir, f"client{i}.log")) as f:
      results.append(ClientResult(client=i, returncode=None if i in killed else p.returncode, killed=i in killed,
                                  output=f.read(), why=why if i in killed else ""))
  return results


def _kill_group(proc: subprocess.Popen) -> None:
  """SIGKILLs the process group that `proc` leads (it was started in a session of its own) and reaps it."""
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  proc.wait()


def failed(results: Sequence[ClientResult]) -> bool:
  """Whether any client failed or was killed."""
  return any(r.killed or r.returncode != 0 for r in results)


def report(results: Sequence[ClientResult], tail: int = 3000) -> str:
  """Each client's status and the end of its output, for an error message."""
  parts = []
  for r in results:
    status = f"killed ({r.why})" if r.killed else f"exit status {r.returncode}"
    parts.append(f"--- client {r.client}: {status}\n{r.output[-tail:]}")
  return "\n".join(parts)


def define_flags():
  flags.DEFINE_integer("clients", 2, "how many DTensor clients (processes) to start on this machine")
  flags.DEFINE_float("timeout", 600.0, "seconds before every client still running is killed")
  flags.DEFINE_string("client_logs", None, "directory for client<i>.log (default: a temporary directory)")


def main(argv):
  command = argv[1:]  # what follows --
  if not command:
    raise SystemExit("local_clients.py: give the command after --, e.g. -- python -m mpl_tf.train ...")
  results = launch(command, FLAGS.clients, timeout=FLAGS.timeout, log_dir=FLAGS.client_logs)
  for r in results:
    print(f"client {r.client}: " + (f"killed ({r.why})" if r.killed else f"exit status {r.returncode}"))
  if failed(results):
    print(report(results), file=sys.stderr)
    sys.exit(1)
  print(results[0].output[-2000:])


if __name__ == "__main__":
  define_flags()
  app.run(main)
