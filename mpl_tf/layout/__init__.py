"""DTensor meshes and layouts: the same MPL training on one CPU, a data-parallel mesh or a data x model mesh.

The only package that imports DTensor (mesh.py: meshes; plan.py: what is sharded; networks.py: networks and
values on a mesh; inputs.py: batch-sharded inputs and pseudo-label sampling). With no mesh (the default; a 1x1 mesh also gives None) every function
here is the identity or the plain Keras call, so the single-device path is today's code.

A mesh has two named dimensions: `batch` (data parallelism: every input is split along it; DTensor sums the
gradients across it) and `model` (the variables the sharding plan marks are stored in `model` slices, with
their optimizer slots and EMA copies). A run picks its mesh with `mesh_from_config` (gin/layouts/*.gin).

What is sharded along `model` (`sharding_plan`, rules by layer type, the same for every family):
  hidden Dense kernels [in, out] and biases: sharded on `out`, computed sharded (tensor parallel), when `out`
    divides evenly (the MLP family);
  the output Dense (logits) and every Conv2D kernel [kh, kw, in, out] (groups == 1): stored sharded on `out`
    and all-gathered just before use (`GatheredDense`, `GatheredConv2D`): compute stays data-parallel, but
    stored weights, optimizer slots and the EMA copy take 1/model of the memory (ZeRO-3 / FSDP style);
  everything else (batch norm, conv biases, grouped and depthwise kernels, sizes that do not divide): replicated.

How a network gets onto a mesh (`place_network`): the family's builder builds it on one device (so its initial
weights are the single-device run's, bit for bit), it is cloned inside `LayoutMap.scope()` with unfused batch
norm and the gathered layers, and its values are copied into the `DVariable`s.

Limits of tf-keras + DTensor (TF 2.21) met here, each with what this module does (docs/dtensor.md):
  - the all-reduce combining pass reorders reductions past variable writes and reads: an MPL step read stale
    student weights and lost updates -> DTENSOR_ENABLE_COMBINE_ALL_REDUCES_OPTIMIZATION=0 (set at import);
  - sharded convolution filters are refused -> stored sharded, gathered before use;
  - fused batch norm has no layout propagation -> BatchNormalization(fused=False) in every placed network;
  - grouped convolutions (EfficientNet's depthwise convs on a mesh) run as plain kernels, not XLA-compiled, and
    only oneDNN's CPU kernels have their gradient -> refused on a CPU mesh without oneDNN, up front;
  - `LayoutMap.scope()` breaks subclassed models -> only the functional networks are built in it; the method
    model's own variables (step, baseline, Keras counters, metrics) are made replicated DVariables by hooks;
  - StatelessMultinomial (`tf.random.stateless_categorical`) has no layout propagation -> on a mesh,
    `pseudo_labels` samples by inverse CDF from one replicated `stateless_uniform` draw per row;
  - SplitV of a batch-sharded tensor gives pieces of inconsistent shapes, and logits sharded over classes
    break sparse cross-entropy -> `split` slices a replicated copy; logits layers are gathered, not sharded;
  - DTensorDataset needs one batch size for all inputs, repeats its first batch on a 1-device mesh, and its
    iterator cannot be checkpointed -> `MeshIterator` (plain per-device iterators, packed);
  - a checkpoint cannot hold a plain iterator's state next to DVariables -> the data position goes to a
    checkpoint of its own (`save_position` / `restore_position`);
  - `get_weights()` fails on sharded variables, `export()` of a DTensor model serves wrong outputs, and a
    partial last batch cannot be split over a mesh -> `get_weights` gathers, export and evaluation use
    single-device copies (`single_device_copy`; `SemiSupervisedModel.evaluate`).
"""
import os

# DTensor's all-reduce combining pass (on by default in TF 2.21) moves the reductions of a step past the variable
# writes and reads that follow them: a variable written and read back in one step (the MPL student's update and
# its labeled loss "after"; a metric's result) then reads stale values, and some updates are lost. Measured in
# tests/layout/test_layout.py; must be set before DTensor compiles its first function, so before the imports below.
os.environ.setdefault("DTENSOR_ENABLE_COMBINE_ALL_REDUCES_OPTIMIZATION", "0")

# pylint: disable=wrong-import-position
from mpl_tf.layout.inputs import (POSITION_SUFFIX, MeshIterator, checkpointable_iterator, iterator, pseudo_labels,
                                  prune_positions, restore_position, sample_categorical, save_position)
from mpl_tf.layout.mesh import (BATCH, MODEL, UNSHARDED, Layout, Mesh, activate, active_mesh,
                                batch_sharded, create_mesh, initialize, is_chief, mesh_from_config,
                                mesh_of, replicated, wait_for_clients)
from mpl_tf.layout.networks import (clone_network, get_weights, is_dtensor, make_optimizer,
                                    metric_kwargs, network_options, onednn_enabled, place_model, place_network,
                                    refuse_grouped_convolutions, set_weights, single_device_copy, split, to_host,
                                    to_mesh, variable)
from mpl_tf.layout.plan import (FAMILY_NOTES, GatheredConv2D, GatheredDense, Placement, describe, layout_map,
                                local_shape, per_device_bytes, sharding_plan, single_device_class)
