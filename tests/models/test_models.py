"""The model zoo: sizes, architecture details, dtypes, the bn_fused option, the builder's names and errors.

Run alone: `python -m pytest -q -p no:xdist tests/models/test_models.py -s` (-s shows the measured parameter counts).
"""
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from mpl_tf.keras import keras
from mpl_tf.models import FAMILIES, KNOWN_MODELS, build_model, model_family
from mpl_tf.models.common import CIFAR10_MEAN, CIFAR10_STD, Standardize, batch_norm_layers

CLASSES = 10
CIFAR = (32, 32, 3)
DIGITS = (8, 8, 1)


def n_params(model, trainable=False):
  weights = model.trainable_weights if trainable else model.weights
  return int(sum(np.prod(w.shape) for w in weights))


def wrn28_params(k: int, n: int) -> int:
  """WRN-28-k of the official code counted by hand (BN: 4 numbers a channel, moving statistics included)."""
  c1, c2, c3 = 16 * k, 32 * k, 64 * k
  bn = lambda c: 4 * c  # noqa: E731
  stem = 9 * 3 * c1
  plain = lambda c: 2 * bn(c) + 2 * 9 * c * c  # noqa: E731  (a block keeping width and resolution)
  down = lambda cin, c: bn(cin) + 9 * cin * c + bn(c) + 9 * c * c + cin * c  # noqa: E731  (with 1x1 shortcut)
  groups = 4 * plain(c1) + down(c1, c2) + 3 * plain(c2) + down(c2, c3) + 3 * plain(c3)
  return stem + groups + bn(c3) + c3 * n + n


def forward(model, shape, batch=2, seed=0):
  x = np.random.default_rng(seed).random((batch,) + tuple(shape)).astype(keras.backend.floatx())
  return model(x, training=True), model(x, training=False)


@pytest.fixture(autouse=True)
def _restore_precision():
  """Every test starts and ends in float32 with no explicit policy."""
  yield
  keras.backend.set_floatx("float32")
  keras.mixed_precision.set_global_policy(None)


@pytest.fixture(scope="module")
def wrn28_2():
  return build_model("wrn28_2", CLASSES, CIFAR)


@pytest.fixture(scope="module")
def resnet50():
  return build_model("resnet50", CLASSES, CIFAR)


@pytest.fixture(scope="module")
def efficientnet_b0():
  return build_model("efficientnet_b0", CLASSES, CIFAR)


# ---------------------------------------------------------------------------------------------- WRN-28-k


def test_wrn28_2_has_the_official_size(wrn28_2):
  total, trainable = n_params(wrn28_2), n_params(wrn28_2, trainable=True)
  print(f"\nWRN-28-2, 10 classes: {total:,} parameters, {trainable:,} trainable")
  assert total == wrn28_params(2, CLASSES) == 1_475_818
  assert trainable == 1_472_170
  assert 1_400_000 <= trainable <= 1_500_000  # "~1.45M" (official WRN-28-2)


def test_wrn28_2_follows_the_official_architecture(wrn28_2):
  convs = [l for l in wrn28_2.layers if isinstance(l, keras.layers.Conv2D)]
  stem = wrn28_2.get_layer("stem_conv")
  assert stem.filters == 32 and stem.kernel_size == (3, 3)  # official stem: 16k channels
  assert len(convs) == 1 + 12 * 2 + 2  # stem, 12 blocks of two 3x3 convs, shortcuts where width changes
  assert sorted(l.name for l in convs if l.kernel_size == (1, 1)) == ["block5_shortcut_conv", "block9_shortcut_conv"]
  assert {l.filters for l in convs} == {32, 64, 128}
  assert [l.strides for l in convs if l.strides != (1, 1)] == [(2, 2)] * 4  # blocks 5 and 9, conv and shortcut
  assert not any(l.use_bias for l in convs)
  init = stem.kernel_initializer.get_config()
  assert (init["scale"], init["mode"], init["distribution"]) == (2.0, "fan_out", "untruncated_normal")
  bns = batch_norm_layers(wrn28_2)
  assert len(bns) == 12 * 2 + 1
  assert {(l.momentum, l.epsilon) for l in bns} == {(0.99, 1e-3)}
  standardize = wrn28_2.get_layer("standardize")  # CIFAR-10 statistics of the official code by default
  assert standardize.mean == pytest.approx(CIFAR10_MEAN) and standardize.std == pytest.approx(CIFAR10_STD)
  slopes = [float(l.alpha) for l in wrn28_2.layers if isinstance(l, keras.layers.LeakyReLU)]
  assert len(slopes) == 12 * 2 + 1 and np.allclose(slopes, 0.2)
  assert wrn28_2.get_layer("head_dropout").rate == 0.2
  dense = wrn28_2.get_layer("logits")
  assert dense.activation is keras.activations.linear
  assert dense.kernel_initializer.get_config()["mode"] == "fan_out"  # U(+-1/sqrt(num_classes)), official
  # Weight decay belongs to the optimizer: no regularisation losses in the model.
  assert wrn28_2.losses == []
  assert all(getattr(l, "kernel_regularizer", None) is None for l in wrn28_2.layers)


def test_wrn28_width_by_name_or_option():
  m3 = build_model("wrn28_k", CLASSES, (16, 16, 3), width=3)
  assert n_params(m3) == wrn28_params(3, CLASSES)
  m1 = build_model("wrn28_1", 7, (16, 16, 3))
  assert n_params(m1) == wrn28_params(1, 7) and m1.name == "wrn28_1"
  with pytest.raises(ValueError, match="width"):
    build_model("wrn28_k", CLASSES, CIFAR)
  with pytest.raises(ValueError, match="width"):
    build_model("wrn28_2", CLASSES, CIFAR, width=4)


def test_wrn28_2_forward_training_and_inference(wrn28_2):
  train, infer = forward(wrn28_2, CIFAR)
  assert train.shape == infer.shape == (2, CLASSES)
  assert train.dtype == infer.dtype == tf.float32
  assert np.isfinite(train.numpy()).all() and np.isfinite(infer.numpy()).all()


# ---------------------------------------------------------------------------------------------- ResNet-50


def test_resnet50_size_and_forward(resnet50):
  head = 2048 * CLASSES + CLASSES
  total, trainable = n_params(resnet50), n_params(resnet50, trainable=True)
  print(f"\nResNet-50, 10 classes: {total:,} parameters, {trainable:,} trainable")
  assert total == 23_587_712 + head  # keras.applications ResNet50(include_top=False)
  assert trainable == 23_534_592 + head
  train, infer = forward(resnet50, CIFAR, batch=1)
  assert train.shape == infer.shape == (1, CLASSES) and infer.dtype == tf.float32
  assert resnet50.get_layer("logits").activation is keras.activations.linear  # logits, no softmax


# ---------------------------------------------------------------------------------------------- EfficientNet


@pytest.mark.parametrize("variant,backbone,features", [("b0", 4_049_564, 1280), ("b7", 64_097_680, 2560)])
def test_efficientnet_sizes(variant, backbone, features, efficientnet_b0):
  model = efficientnet_b0 if variant == "b0" else build_model(f"efficientnet_{variant}", CLASSES, CIFAR)
  total = n_params(model)
  print(f"\nEfficientNet-{variant.upper()}, 10 classes: {total:,} parameters, "
        f"{n_params(model, trainable=True):,} trainable")
  assert total == backbone + features * CLASSES + CLASSES
  assert model.get_layer("top_dropout").rate == {"b0": 0.2, "b7": 0.5}[variant]


def test_efficientnet_forward(efficientnet_b0):
  train, infer = forward(efficientnet_b0, CIFAR)
  assert train.shape == infer.shape == (2, CLASSES) and infer.dtype == tf.float32
  assert np.isfinite(train.numpy()).all()


def test_efficientnet_matches_keras_applications():
  """Same weights (names, shapes), same layer configs, same function as keras.applications.EfficientNetB0."""
  ours = build_model("efficientnet_b0", CLASSES, CIFAR, mean=(0.0,), std=(1.0,), drop_connect_rate=0.0)
  grouped = build_model("efficientnet_b0", CLASSES, CIFAR, mean=(0.0,), std=(1.0,), drop_connect_rate=0.0,
                        grouped_depthwise=True)
  ref = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=CIFAR, pooling="avg",
                                          drop_connect_rate=0.0)
  ref_weights = {w.name: w for w in ref.weights if not w.name.startswith("normalization")}  # identity, untrained
  ours_weights = {w.name: w for w in ours.weights if not w.name.startswith("logits")}
  assert set(ours_weights) == set(ref_weights)
  ref_layers = {l.name: l for l in ref.layers}
  for layer in ours.layers:
    if layer.name in ref_layers:
      a, b = layer.get_config(), ref_layers[layer.name].get_config()
      a.pop("fused", None), b.pop("fused", None)
      assert a == b, layer.name
  grouped_weights = {w.name: w for w in grouped.weights}
  for name, w in ref_weights.items():
    ours_weights[name].assign(w)
    if name.endswith("dwconv/depthwise_kernel:0"):  # (k, k, C, 1) -> the grouped Conv2D's (k, k, 1, C)
      target = grouped_weights[name.replace("depthwise_kernel", "kernel")]
      target.assign(tf.reshape(w, target.shape))
    else:
      grouped_weights[name].assign(w)
  # Inference mode: in training mode the deepest BN layers normalise over 2 values per channel (1x1 maps at
  # 32x32 input) and amplify float rounding (the reference's x * 255 / 255) to ~1e-3.
  x = np.random.default_rng(0).random((2,) + CIFAR).astype("float32")
  expected = ref(x * 255.0, training=False).numpy()  # keras.applications divides by 255 itself
  for model in (ours, grouped):
    features = keras.Model(model.inputs, model.get_layer("avg_pool").output)
    np.testing.assert_allclose(features(x, training=False).numpy(), expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())


# ---------------------------------------------------------------------------------------------- small CNN


def test_cnn_small_size_and_forward():
  model = build_model("cnn_small", CLASSES, DIGITS)
  print(f"\ncnn_small, 10 classes: {n_params(model):,} parameters, {n_params(model, trainable=True):,} trainable")
  assert n_params(model) == 56_874 and n_params(model, trainable=True) == 56_554
  train, infer = forward(model, DIGITS, batch=3)
  assert train.shape == infer.shape == (3, CLASSES) and infer.dtype == tf.float32


def test_cnn_small_learns_digits():
  """Trains in seconds on CPU and must generalise: >= 90% on 297 held-out real digits.

  BN momentum 0.9 for this 190-step run: with the default 0.99 the moving statistics still hold 15% of their
  initial (0, 1) after 190 updates and inference accuracy lags (0.83 here; 0.94 after 15 epochs).
  """
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  digits = load_digits()
  x = (digits.images[..., None] / 16.0).astype("float32")
  y = digits.target.astype("int32")
  keras.utils.set_random_seed(0)
  model = build_model("cnn_small", CLASSES, DIGITS, seed=0, bn_momentum=0.9)
  model.compile(optimizer=keras.optimizers.Adam(3e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
  model.fit(x[:1500], y[:1500], batch_size=64, epochs=8, verbose=0)
  _, accuracy = model.evaluate(x[1500:], y[1500:], verbose=0)
  print(f"\ncnn_small on digits, 8 epochs: held-out accuracy {accuracy:.3f}")
  assert accuracy >= 0.9


def test_seed_makes_initialisation_reproducible():
  a, b, c = (build_model("cnn_small", CLASSES, DIGITS, seed=s) for s in (3, 3, 4))
  for wa, wb in zip(a.get_weights(), b.get_weights()):
    np.testing.assert_array_equal(wa, wb)
  assert not np.array_equal(a.get_layer("conv1").kernel.numpy(), c.get_layer("conv1").kernel.numpy())


# ---------------------------------------------------------------------------------------------- options, dtypes


@pytest.mark.parametrize("name,shape", [("wrn28_1", (16, 16, 3)), ("cnn_small", DIGITS),
                                        ("efficientnet_b0", CIFAR), ("resnet50", CIFAR)])
def test_bn_fused_option_reaches_every_batch_norm(name, shape, request):
  prebuilt = {"efficientnet_b0": "efficientnet_b0", "resnet50": "resnet50"}  # default (fused) models, module-wide
  fused = request.getfixturevalue(prebuilt[name]) if name in prebuilt else build_model(name, CLASSES, shape)
  unfused = build_model(name, CLASSES, shape, bn_fused=False)
  assert batch_norm_layers(fused) and {l.fused for l in batch_norm_layers(fused)} == {True}
  assert {l.fused for l in batch_norm_layers(unfused)} == {False}
  assert n_params(fused) == n_params(unfused)
  assert [l.name for l in fused.layers] == [l.name for l in unfused.layers]
  if name != "resnet50":  # a ResNet-50 forward pass is tested once, above
    forward(unfused, shape)


@pytest.mark.parametrize("name,shape", [("wrn28_1", (16, 16, 3)), ("cnn_small", DIGITS)])
def test_float64(name, shape):
  keras.mixed_precision.set_global_policy(None)
  keras.backend.set_floatx("float64")
  model = build_model(name, CLASSES, shape)
  assert {w.dtype for w in model.weights} == {tf.float64}
  assert {l.fused for l in batch_norm_layers(model)} == {False}  # no float64 fused kernel: None unfuses
  train, infer = forward(model, shape)
  assert train.dtype == infer.dtype == tf.float64
  with pytest.raises(ValueError, match="bn_fused=True"):
    build_model(name, CLASSES, shape, bn_fused=True)


@pytest.mark.parametrize("name,shape", [("wrn28_1", (16, 16, 3)), ("cnn_small", DIGITS), ("efficientnet_b0", CIFAR)])
def test_mixed_bfloat16_gives_float32_logits(name, shape):
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  model = build_model(name, CLASSES, shape)
  conv = next(l for l in model.layers if isinstance(l, keras.layers.Conv2D))
  assert conv.compute_dtype == "bfloat16" and conv.kernel.dtype == tf.float32
  assert model.get_layer("logits").compute_dtype == "float32"
  assert model.get_layer("standardize").compute_dtype == "float32"
  train, infer = forward(model, shape)
  assert train.dtype == infer.dtype == tf.float32
  assert np.isfinite(infer.numpy()).all()


def test_resnet50_under_mixed_bfloat16_gives_float32_logits():
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  model = build_model("resnet50", CLASSES, CIFAR)
  assert model.get_layer("conv1_conv").compute_dtype == "bfloat16"
  assert model.output.dtype == tf.float32


# ---------------------------------------------------------------------------------------------- builder


def test_every_model_is_functional(wrn28_2, resnet50, efficientnet_b0):
  for model in (wrn28_2, resnet50, efficientnet_b0, build_model("cnn_small", CLASSES, DIGITS)):
    assert model._is_graph_network  # pylint: disable=protected-access
    assert model.get_layer("standardize") is model.layers[1]  # inputs in [0, 1], standardised inside
    assert model.layers[-1].name == "logits"


def test_model_family():
  expected = {"wrn28_2": "wide_resnet", "wrn28_10": "wide_resnet", "wrn28_k": "wide_resnet", "resnet50": "resnet",
              "cnn_small": "cnn", "mlp": "mlp", **{f"efficientnet_b{i}": "efficientnet" for i in range(8)}}
  for name, family in expected.items():
    assert model_family(name) == family
  assert set(expected.values()) == set(FAMILIES)
  for bad in ("wrn28", "wrn28_x", "efficientnet_b8", "resnet", "WRN28_2", None):
    with pytest.raises(ValueError, match="known names"):
      model_family(bad)


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(ValueError) as error:
    build_model("wrn40_2", CLASSES, CIFAR)
  assert all(name in str(error.value) for name in KNOWN_MODELS)


@pytest.mark.parametrize("name,options,match", [
    ("wrn28_2", {"kernel_regularizer": 5e-4}, "unknown option.*kernel_regularizer.*accepts"),
    ("resnet50", {"seed": 1}, "unknown option.*seed"),
    ("wrn28_2", {"dropout": 1.5}, "dropout"),
    ("wrn28_2", {"bn_fused": "no"}, "bn_fused"),
    ("wrn28_0", {}, "width"),
    ("cnn_small", {"widths": (8, 8), "strides": (1,)}, "same length"),
    ("efficientnet_b0", {"mean": (0.5, 0.5), "std": (1.0, 1.0)}, "channel statistics"),
    ("efficientnet_b0", {"mean": (0.5, 0.5)}, "same non-zero length"),
])
def test_bad_options_are_clear_errors(name, options, match):
  shape = DIGITS if name == "cnn_small" else CIFAR
  with pytest.raises(ValueError, match=match):
    build_model(name, CLASSES, shape, **options)


def test_bad_shapes_and_class_counts():
  with pytest.raises(ValueError, match="num_classes"):
    build_model("cnn_small", 1, DIGITS)
  with pytest.raises(ValueError, match="input_shape"):
    build_model("wrn28_2", CLASSES, (32, 32))
  with pytest.raises(ValueError, match="at least 32"):
    build_model("resnet50", CLASSES, (16, 16, 3))
  with pytest.raises(ValueError, match="input_shape"):
    build_model("cnn_small", CLASSES, None)


def test_mlp_is_delegated_to_the_leads_builder(monkeypatch):
  calls = []
  fake = types.ModuleType("mpl_tf.models.mlp")

  def build_mlp(num_classes, input_shape, hidden=(8, 8), activation="sigmoid", init_scale=0.1, seed=None,
                name="mlp"):
    calls.append((num_classes, input_shape, hidden, activation, init_scale, seed, name))
    return "model"

  fake.build_mlp = build_mlp
  monkeypatch.setitem(sys.modules, "mpl_tf.models.mlp", fake)
  assert build_model("mlp", 2, (2,), hidden=(4,), seed=1) == "model"
  assert calls == [(2, (2,), (4,), "sigmoid", 0.1, 1, "mlp")]
  with pytest.raises(ValueError, match="unknown option.*bn_fused"):
    build_model("mlp", 2, (2,), bn_fused=False)


# ---------------------------------------------------------------------------------------------- Standardize


def test_standardize_values_and_round_trip():
  layer = Standardize(mean=(0.5, 0.25), std=(0.5, 0.25), scale=2.0)
  x = tf.constant([[[[1.0, 0.5], [0.0, 0.0]]]])
  np.testing.assert_allclose(layer(x).numpy(), [[[[2.0, 2.0], [-2.0, -2.0]]]])
  model = build_model("cnn_small", CLASSES, DIGITS, seed=0)
  clone = keras.models.model_from_json(model.to_json())  # registered: configs survive serialisation
  clone.set_weights(model.get_weights())
  x = np.random.default_rng(1).random((2,) + DIGITS).astype("float32")
  np.testing.assert_allclose(clone(x, training=False).numpy(), model(x, training=False).numpy(), rtol=1e-6)
  with pytest.raises(ValueError, match="std > 0"):
    Standardize(mean=(0.0,), std=(0.0,))
