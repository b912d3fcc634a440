"""Running a network's training-mode forward pass a second time, with the same result and the same side effects.

Why: in an MPL step the teacher's backward pass needs the feedback h, which exists only after the student has
stepped, so by default the teacher's activations stay in memory through the student's forward and backward. That
is the whole of the step's memory above a supervised step's (BENCHMARKS.md, "Memory of a step").
`MetaPseudoLabelsModel(teacher_activations='recompute')` instead runs the teacher forward once without a tape
(for the pseudo labels), lets the student step, and then runs the same forward again under the tape for the
backward pass. The gradient is the default step's only if the second forward equals the first bit for bit, and
the network's state is the default step's only if the second forward's side effects replace the first's.

A training-mode forward changes state in two places:
  - batch normalisation assigns its moving statistics (the network's non-trainable variables);
  - dropout and stochastic-depth layers (tf-keras `BaseRandomLayer`s) draw masks from their random generator.
`snapshot` reads both before the first forward and `restore` puts them back before the second, so the second
draws the same masks and moves the statistics from where the first found them. Deterministic kernels do the
rest (same ops on the same inputs; TensorFlow's CPU kernels and the tests' `enable_op_determinism`).

tf-keras draws dropout masks from TensorFlow's legacy stateful random ops unless
`keras.backend.experimental.enable_tf_random_generator()` was called before the layers were made. Those ops keep
their state out of reach, so a second call would draw a new mask: `use_restorable_generators` gives such layers
a seeded `tf.random.Generator` (a mesh run's networks have one already: `mpl_tf.layout.place_network`).
"""
from typing import List, NamedTuple

import tensorflow as tf

from mpl_tf.keras import keras, keras_backend


class State(NamedTuple):
  """What a training-mode forward changes: moving statistics and random generators' states, in a fixed order."""
  statistics: List[tf.Tensor]
  generators: List[tf.Tensor]


def _layers(network: keras.Model):
  return list(network._flatten_layers(include_self=True, recursive=True))  # pylint: disable=protected-access


def random_layers(network: keras.Model) -> list:
  """The layers of `network` that draw random numbers when called in training mode, in a fixed order."""
  return [layer for layer in _layers(network)
          if isinstance(getattr(layer, "_random_generator", None), keras_backend.RandomGenerator)]


def use_restorable_generators(network: keras.Model, seed: int) -> int:
  """Gives every random layer of `network` that draws from TensorFlow's legacy stateful ops a tf.random.Generator
  seeded from (`seed`, the layer's position), whose state `snapshot` / `restore` can read and put back.

  Functions traced before keep the old draws; the generator is made on the next trace. Layers that already use a
  generator (or stateless seeds) are left as they are. Returns how many layers changed.
  """
  changed = 0
  for index, layer in enumerate(random_layers(network)):
    generator = layer._random_generator  # pylint: disable=protected-access
    if generator._rng_type == generator.RNG_LEGACY_STATEFUL:  # pylint: disable=protected-access
      layer._random_generator = keras_backend.RandomGenerator(  # pylint: disable=protected-access
          seed=int(seed) * 1009 + index, rng_type=generator.RNG_STATEFUL)
      changed += 1
  return changed


def _generator_states(network: keras.Model) -> List[tf.Variable]:
  """The state variables of the network's random generators (made here if the layer has not been called yet)."""
  states = []
  for layer in random_layers(network):
    generator = layer._random_generator  # pylint: disable=protected-access
    generator._maybe_init()  # pylint: disable=protected-access
    if generator._rng_type == generator.RNG_LEGACY_STATEFUL:  # pylint: disable=protected-access
      raise ValueError(
          f"layer {layer.name!r} of {network.name!r} draws from TensorFlow's legacy random ops, whose state cannot be "
          "restored, so a recomputed forward pass would draw another dropout mask; call "
          "recompute.use_restorable_generators on the network first (MetaPseudoLabelsModel does)")
    if generator._generator is not None:  # stateless seeds need nothing  # pylint: disable=protected-access
      states.append(generator._generator.state)  # pylint: disable=protected-access
  return states


def snapshot(network: keras.Model) -> State:
  """The state a training-mode forward of `network` will change, read now (before that forward)."""
  return State(statistics=[tf.identity(v) for v in network.non_trainable_variables],
               generators=[tf.identity(v) for v in _generator_states(network)])


def restore(network: keras.Model, state: State) -> None:
  """Puts back what `snapshot` read, so that the next training-mode forward repeats the one after the snapshot."""
  for variable, value in zip(network.non_trainable_variables, state.statistics):
    variable.assign(value)
  for variable, value in zip(_generator_states(network), state.generators):
    variable.assign(value)


def after(tensors, structure, name: str = "waits", xla_barrier: bool = False):
  """`structure` with each tensor passed through an identity (named `name`) that waits for `tensors`.

  Why: the second forward's inputs exist from the start of the step, so without this the executor may run it
  beside the student's step and hold both networks' activations at once, which is what recomputing avoids.
  Under XLA (`xla_barrier`) a control dependency is no edge of the compiled program, and XLA's common-subexpression
  elimination merges the second forward into the first (their convolutions are one set in the optimised HLO,
  measured). An XLA optimisation barrier over the inputs and `tensors` keeps them apart and in order.
  """
  waits = [t for t in tf.nest.flatten(tensors) if t is not None]
  with tf.control_dependencies(waits):
    out = tf.nest.map_structure(lambda v: tf.identity(v, name=name) if tf.is_tensor(v) else v, structure)
  if not xla_barrier:
    return out
  # The op is registered by TensorFlow's XLA bridge only (no kernel outside XLA), not exported in tf.raw_ops.
  from tensorflow.compiler.tf2xla.ops import gen_xla_ops  # pylint: disable=import-outside-toplevel
  flat = tf.nest.flatten(out)
  where = [i for i, v in enumerate(flat) if tf.is_tensor(v)]
  passed = gen_xla_ops.xla_optimization_barrier([flat[i] for i in where] + waits)
  for i, value in zip(where, passed):
    flat[i] = value
  return tf.nest.pack_sequence_as(out, flat)
