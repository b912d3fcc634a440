"""Inputs on a mesh: batch-sharded elements from a `tf.data` pipeline with a checkpointable position, and
pseudo-label sampling that DTensor can lay out."""
import os
from typing import Any, Optional, Sequence

import tensorflow as tf
from tensorflow.experimental import dtensor

from mpl_tf.layout.mesh import BATCH, Layout, Mesh, batch_sharded, is_chief

def sample_categorical(logits: tf.Tensor, seed: tf.Tensor, mesh: Optional[Mesh] = None) -> tf.Tensor:
  """Labels drawn from softmax(logits), one per row, by inverse CDF of one `stateless_uniform` per row.

  DTensor has no layout propagation for StatelessMultinomial (`tf.random.stateless_categorical`), so on a mesh
  pseudo labels are sampled this way: the same distribution, other draws. Deterministic in (logits, seed).
  Returns int32 [B].
  """
  logits = tf.stop_gradient(logits)
  probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
  cdf = tf.math.cumsum(probs, axis=-1)
  u = tf.random.stateless_uniform(tf.shape(logits)[:1], seed=seed, dtype=tf.float32)
  if mesh is not None:  # drawn whole: a draw sharded along `batch` repeats the same numbers on every shard
    u = dtensor.relayout(u, Layout.replicated(mesh, 1))
  u = u * cdf[:, -1]
  labels = tf.reduce_sum(tf.cast(cdf <= u[:, None], tf.int32), axis=-1)
  return tf.minimum(labels, tf.shape(logits)[-1] - 1)


def pseudo_labels(logits: tf.Tensor, mode: str, seed: tf.Tensor, mesh: Optional[Mesh]) -> tf.Tensor:
  """`mpl_tf.losses.pseudo_labels` off a mesh; on a mesh, 'sample' draws with `sample_categorical`."""
  from mpl_tf import losses  # pylint: disable=import-outside-toplevel
  if mesh is None or mode != "sample":
    return losses.pseudo_labels(logits, mode, seed)
  return sample_categorical(logits, seed, mesh)


# --- inputs ----------------------------------------------------------------------------------------------------
class MeshIterator:
  """Batch-sharded DTensor elements of a `tf.data` dataset of batched elements; its position checkpoints.

  Every local device of the mesh reads the same plain `iter(dataset)` (one iterator per device, packed into a
  DTensor resource as `DTensorDataset` does), so each device holds the whole global batch, and `next()`
  (inside the train function) relayouts every input to `batch`-sharded, which keeps each device's own slice.
  The global order and content are those of the single-device run (for a deterministic pipeline).
  With several DTensor clients each packs the iterators of its own devices only (`host_mesh().local_devices()`);
  every client runs the same pipeline, so every device still sees the same global batch.

  Why not `DTensorDataset`: it needs one batch size for every input (an MPL element has B labeled and r * B
  unlabeled images), on a 1-device mesh (TF 2.21) it yields its first batch forever, and its iterator cannot
  be checkpointed. The cost: each local device runs the input pipeline (as DTensorDataset does for sources
  that cannot be sharded by file).

  Its position is saved by `save_position` next to a checkpoint, in a checkpoint of its own: DTensor cannot
  save a plain iterator's state in the same checkpoint as DVariables ("got a regular tensor ... but was
  expecting a DTensor") nor restore one inside its restore function (DeserializeIterator has no layout
  propagation). `restore_position` also reads the position of a single-device run's checkpoint.

  Pass it where a train function takes an iterator (`model.make_train_function()(iterator)`).
  """

  def __init__(self, dataset: tf.data.Dataset, mesh: Mesh):
    super().__init__()
    from tensorflow.dtensor.python import api as dtensor_api  # pylint: disable=import-outside-toplevel
    spec = dataset.element_spec
    self._specs = tf.nest.flatten(spec)
    sizes = [s.shape[0] if s.shape.rank else None for s in self._specs]
    replicas = mesh.dim_size(BATCH)
    if any(n is None for n in sizes):
      raise ValueError(f"a mesh needs static batch sizes (batch with drop_remainder=True); got {spec}")
    if any(n % replicas for n in sizes):
      raise ValueError(f"every batch size {sizes} must split evenly over the {replicas} replicas of the mesh")
    self.mesh, self._structure = mesh, spec
    host = mesh.host_mesh()
    self._iterators = []
    for device in host.local_devices():
      with tf.device(device):
        self._iterators.append(iter(dataset))
    self._resource = dtensor.pack([it._iterator_resource for it in self._iterators],  # pylint: disable=protected-access
                                  Layout.replicated(host, 0))
    # What DTensorDataset does too: tell DTensor the layout of what IteratorGetNext returns (whole batches).
    dtensor_api._dtensor_device().set_iterator_element_layouts(  # pylint: disable=protected-access
        self._resource, [Layout.replicated(host, s.shape.rank) for s in self._specs])

  def __iter__(self):
    return self

  def __next__(self):
    from tensorflow.python.ops import gen_dataset_ops  # pylint: disable=import-outside-toplevel
    values = gen_dataset_ops.iterator_get_next(self._resource, output_types=[s.dtype for s in self._specs],
                                               output_shapes=[s.shape for s in self._specs])
    out = []
    for value in values:
      rank = value.shape.rank
      value = dtensor.copy_to_mesh(value, Layout.replicated(self.mesh, rank))  # host mesh -> device mesh
      out.append(dtensor.relayout(value, batch_sharded(self.mesh, rank)))
    return tf.nest.pack_sequence_as(self._structure, out)

  def save(self, path: str) -> None:
    """Writes the data position (every device's iterator is at the same one) to the checkpoint `path`."""
    tf.train.Checkpoint(iterator=self._iterators[0]).write(path)

  def restore(self, path: str) -> None:
    """Reads a position written by `save` or a trainer checkpoint's `iterator` into every device's iterator."""
    for it in self._iterators:
      tf.train.Checkpoint(iterator=it).read(path).expect_partial()


def iterator(dataset: tf.data.Dataset, mesh: Optional[Mesh]):
  """`iter(dataset)` off a mesh; a `MeshIterator` on one."""
  return iter(dataset) if mesh is None else MeshIterator(dataset, mesh)


POSITION_SUFFIX = "-data_position"


def checkpointable_iterator(it) -> Optional[Any]:
  """What a trainer may put into its model checkpoint as `iterator`: `it` off a mesh, None on one (see
  `MeshIterator`: its position goes to a checkpoint of its own with `save_position`)."""
  return None if isinstance(it, MeshIterator) else it


def save_position(it, checkpoint_path: str) -> None:
  """On a mesh, writes the data position for the model checkpoint `checkpoint_path`, which is saved next.

  Written *before* the model checkpoint: a run stopped between the two then resumes from the previous
  checkpoint with its own position. The other order left, in that window, a model checkpoint without its
  position, and the resumed run silently started its data from the first batch again.

  With several DTensor clients only the chief writes: every client is at the same position, and a plain
  checkpoint written by two processes to one prefix collides (both write `<prefix>_temp/part-00000-of-00001`
  and both merge it; the second merge fails with NotFound, seen with two clients on one machine)."""
  if is_chief() and isinstance(it, MeshIterator):
    it.save(checkpoint_path + POSITION_SUFFIX)


def prune_positions(directory: str, keep: Sequence[str]) -> None:
  """Deletes the data positions of checkpoints in `directory` no longer in `keep` (a CheckpointManager's
  `checkpoints`, after its save), on a mesh or off one (a mesh run's positions, resumed on one device)."""
  if not is_chief():
    return
  kept = {os.path.basename(p) + POSITION_SUFFIX for p in keep}
  for name in os.listdir(directory):
    stem = name.split(".")[0]
    if stem.endswith(POSITION_SUFFIX) and stem not in kept:
      os.remove(os.path.join(directory, name))


def restore_position(it, checkpoint_path: str) -> None:
  """Restores the data position of a mesh run's checkpoint (`save_position`) into `it`, on a mesh or off
  one; on a mesh also that of a single-device run's checkpoint (its `iterator`). Nothing when there is none:
  the pipeline starts afresh. Off a mesh the trainer's own checkpoint restores a single-device position."""
  sidecar = checkpoint_path + POSITION_SUFFIX
  has_sidecar = tf.io.gfile.exists(sidecar + ".index")
  if not isinstance(it, MeshIterator):
    if has_sidecar:  # a checkpoint written on a mesh, resumed on one device
      tf.train.Checkpoint(iterator=it).read(sidecar).expect_partial()
    return
  if has_sidecar:
    it.restore(sidecar)
  elif any(name.startswith("iterator/") for name, _ in tf.train.list_variables(checkpoint_path)):
    it.restore(checkpoint_path)
