"""`build_dataset(name, ...)`: the paper's benchmarks and offline / bring-your-own data behind one interface.

The datasets, their sources and their default splits are the table in docs/usage.md ("Datasets"): the one copy,
kept beside the commands that use them; `SPECS` below is the code of each row.

Counts are ints (totals, split equally over the classes) or floats (a fraction of every class); see
`splits.py`. The split is named reproducibly (`cifar10_4k.seed3`, `cifar10_4k@250.seed3`) and fingerprinted.
Everything random about the data (the labeled draw, shuffles, TFDS file orders) derives from `seed`; held-out
sets drawn from a pool use a fixed seed, so different seeds are scored on the same images.
"""
import dataclasses
import logging
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from mpl_tf.data import augment, pipeline, sources, splits, two_moons
from mpl_tf.data.folder_source import folder_source
from mpl_tf.data.tfds_source import TfdsSource

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DatasetBundle:
  """What a run needs from the data. See `pipeline.py` for the element structures.

  Attributes:
    name: the dataset name given to `build_dataset`.
    split_name: reproducible name of the split, e.g. "cifar10_4k.seed3".
    split_digest: fingerprint of the labeled / validation / test indices.
    num_classes, input_shape: what the models are built for (input_shape excludes the batch).
    train: infinite MPL elements `((x_l, y_l), x_u)` or `((x_l, y_l), (x_u_weak, x_u_strong))`.
    labeled: infinite `(x, y)` batches of the labeled set, weak view (supervised training, finetuning).
    validation: finite `(x, y)` batches, or None when the dataset holds none out.
    test: finite `(x, y)` batches.
    num_labeled, num_unlabeled, num_validation, num_test: example counts.
    batch_size, unlabeled_batch_size, labeled_batch_size: per-step batch sizes of train / labeled.
    two_views: whether `train` carries two unlabeled views.
    class_names: if the source names its classes.
    class_counts: examples a class in the labeled split and in the test split (None where the test labels are
      not in memory: a streamed TFDS split), for the line a run prints at its start.
    augmentation: the augmentation in effect (None for two_moons), as resolved from the dataset's defaults and the
      arguments: the run writes it to its workdir.
    raw: the source, split, views and preparation behind `train` (`RawExamples`), for work that needs each raw
      example once (Reduced MPL's stored predictions); None for two_moons.
  """
  name: str
  split_name: str
  split_digest: str
  num_classes: int
  input_shape: Tuple[int, ...]
  train: tf.data.Dataset
  labeled: tf.data.Dataset
  validation: Optional[tf.data.Dataset]
  test: tf.data.Dataset
  num_labeled: int
  num_unlabeled: int
  num_validation: int
  num_test: int
  batch_size: int
  unlabeled_batch_size: int
  labeled_batch_size: int
  two_views: bool
  class_names: Optional[Tuple[str, ...]] = None
  class_counts: Optional[Tuple[np.ndarray, Optional[np.ndarray]]] = None  # per class: labeled, test (if known)
  raw: Optional["RawExamples"] = None
  augmentation: Optional[augment.AugmentConfig] = None

  def as_dict(self) -> Dict[str, object]:
    """The fields as a dict (`train`, `labeled`, `test`, `num_classes`, `input_shape`, `split_name`, ...)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class RawExamples:
  """What a bundle's training streams are made from: the source, its split, and the view functions and
  per-example preparation (`prepare`, as for training) that turn a raw example into what the model sees."""
  source: sources.Source
  split: splits.Split
  views: object
  prepare: Callable


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Defaults of one named dataset. `source` takes the keyword arguments of `build_dataset` it needs."""
  source: Callable[..., sources.Source]
  augment: augment.AugmentConfig
  num_labeled: splits.Count
  num_validation: splits.Count = 0
  num_test: splits.Count = 0  # held out of the pool, only for sources without a test set of their own
  unlabeled_includes_labeled: bool = False
  image_size: Optional[int] = None  # sources of varying sizes are cropped / resized to this
  fill_from_border: bool = False  # fill value = the images' median border pixel (`augment.border_fill`)
  # Data that is not images from a source (two moons) builds its whole bundle: called with build_dataset's split
  # and batch settings, in place of the source, split and views below.
  bundle: Optional[Callable[..., "DatasetBundle"]] = None


# A user's own images may be anything (digits, documents, scans, medical images): no flips unless asked, only
# class-keeping ops (augment.OWN_DATA_OPS), a Cutout of a quarter of the side, padding / Cutout filled with the
# images' background colour. On digits-like data the CIFAR defaults (flips, Cutout of half the side in grey,
# Invert, Solarize, SamplePairing) left MPL's student far below supervised training (RESULTS.md).
_OWN_DATA = augment.AugmentConfig(flip=False, pad_fraction=0.125, ops=augment.OWN_DATA_OPS, num_ops=2,
                                  magnitude=10.0, cutout_fraction=0.25)
_THIRTY_TWO = dict(pad_fraction=0.125, fill_value=128.0, num_ops=2, magnitude=16.0, cutout_fraction=0.5)

SPECS: Dict[str, DatasetSpec] = {
    "svhn_1k": DatasetSpec(
        source=lambda data_dir=None, **_: TfdsSource("svhn_cropped", extra_splits=("extra",), data_dir=data_dir),
        augment=augment.AugmentConfig(flip=False, ops=augment.SVHN_OPS, **_THIRTY_TWO),
        num_labeled=1000),
    "cifar10_4k": DatasetSpec(
        source=lambda data_dir=None, **_: TfdsSource("cifar10", data_dir=data_dir),
        augment=augment.AugmentConfig(flip=True, ops=augment.CIFAR10_OPS, **_THIRTY_TWO),
        num_labeled=4000, num_validation=5000),
    "imagenet_10pct": DatasetSpec(
        source=lambda data_dir=None, **_: TfdsSource("imagenet2012", test_split="validation", data_dir=data_dir),
        augment=augment.AugmentConfig(flip=True, pad_fraction=0.0, ops=augment.IMAGENET_OPS, magnitude=17.0,
                                      cutout_fraction=0.25, rejitter_strong=False),
        num_labeled=0.1, unlabeled_includes_labeled=True, image_size=224),
    "digits": DatasetSpec(
        source=lambda **_: sources.digits_source(),
        augment=augment.AugmentConfig(flip=False, pad_fraction=0.125, fill_value=0.0, ops=augment.DIGITS_OPS,
                                      magnitude=10.0, cutout_fraction=0.25),
        num_labeled=50, num_test=500),
    "two_moons": DatasetSpec(source=None, augment=augment.AugmentConfig(), num_labeled=6,
                             bundle=lambda **settings: _two_moons(**settings)),
    "folder": DatasetSpec(
        source=lambda path=None, unlabeled_path=None, test_path=None, image_size=None, **_: folder_source(
            _required(path, "folder"), unlabeled_path=unlabeled_path, test_path=test_path,
            image_size=(image_size, image_size) if image_size else None),
        augment=_OWN_DATA, fill_from_border=True, num_labeled=1.0, num_test=0.2),
    "npz": DatasetSpec(
        source=lambda path=None, **_: sources.npz_source(_required(path, "npz")),
        augment=_OWN_DATA, fill_from_border=True, num_labeled=1.0),
}


def _required(path: Optional[str], name: str) -> str:
  if not path:
    raise ValueError(f"dataset '{name}' needs path=... (gin: build_dataset.path)")
  return path


def known_datasets() -> Tuple[str, ...]:
  return tuple(sorted(SPECS))


def _augment_config(spec: DatasetSpec, source: sources.Source, channels: int, ops, num_ops, magnitude,
                    cutout_fraction, flip, fill_value) -> augment.AugmentConfig:
  """The dataset's default augmentation with the given arguments (None: keep the default) applied."""
  if fill_value is None and spec.fill_from_border:
    images = source.sample_images(1000)
    if images:
      fill_value = augment.border_fill(images)
  overrides = {k: v for k, v in dict(ops=tuple(ops) if ops is not None else None, num_ops=num_ops,
                                     magnitude=magnitude, cutout_fraction=cutout_fraction, flip=flip,
                                     fill_value=fill_value).items()
               if v is not None}
  config = dataclasses.replace(spec.augment, **overrides)
  if channels != 3:
    colour = [op for op in config.ops if op == "Color"]
    if colour:
      log.info("dropping RandAugment op Color: the images have %d channel(s)", channels)
      config = dataclasses.replace(config, ops=tuple(op for op in config.ops if op != "Color"))
  return config


def build_dataset(name: str, *, num_labeled: splits.Count = None, seed: int = 0, batch_size: int = 64,
                  uda_ratio: int = 1, two_views: bool = True, unlabeled_view: str = "strong",
                  eval_batch_size: int = 256, labeled_batch_size: Optional[int] = None,
                  num_validation: splits.Count = None, num_test: splits.Count = None,
                  augment_ops: Optional[Sequence[str]] = None, augment_num_ops: Optional[int] = None,
                  augment_magnitude: Optional[float] = None, cutout_fraction: Optional[float] = None,
                  flip: Optional[bool] = None, fill_value: Optional[float] = None, noise_stddev: float = 0.0,
                  image_size: Optional[int] = None,
                  data_dir: Optional[str] = None, path: Optional[str] = None, unlabeled_path: Optional[str] = None,
                  test_path: Optional[str] = None, shuffle_buffer: int = 10_000) -> DatasetBundle:
  """Builds the training, labeled and evaluation datasets of one named dataset.

  Args:
    name: one of `known_datasets()`.
    num_labeled: labeled examples (int total, split equally over classes, or float fraction of each class);
      None: the dataset's default (the paper's count).
    seed: the split's labeled draw and every shuffle derive from it.
    batch_size: labeled examples per training step (B).
    uda_ratio: unlabeled examples per labeled one; unlabeled batches hold uda_ratio * B.
    two_views: unlabeled elements carry (weak, strong) views; else one view (see `unlabeled_view`).
    unlabeled_view: "strong" or "weak", the single view when `two_views` is False.
    eval_batch_size: batch size of validation and test.
    labeled_batch_size: batch size of `labeled` (finetuning uses 512 in the paper); None: batch_size.
    num_validation: validation examples held out of the pool; None: the dataset's default.
    num_test: test examples held out of the pool, for sources without a test set; None: default.
    augment_ops: RandAugment op names (None: the paper's Table 5 list for the dataset).
    augment_num_ops: N, RandAugment ops per image. augment_magnitude: M (RandAugment's scale; 10 = reference max).
    cutout_fraction: Cutout side as a fraction of the image side. flip: allow horizontal flips.
    fill_value: in [0, 255], for padding, Cutout and geometric ops; None: the dataset's (128 for the paper's
      benchmarks, 0 for digits, the images' median border pixel for folder / npz).
    Every augmentation argument left None keeps the dataset's default; own data (folder / npz) defaults to no
    flips, class-keeping ops (`augment.OWN_DATA_OPS`) at M = 10 and a Cutout of a quarter of the side.
    noise_stddev: two_moons only: Gaussian noise on the strong view (0: strong = weak = the raw points).
    image_size: ImageNet / folder: side of the square images fed to the model.
    data_dir: TFDS data directory. path / unlabeled_path / test_path: folder or .npz inputs.
    shuffle_buffer: TFDS data too large to hold in memory is permuted in windows of this many encoded examples
      (`sources.window_shuffled`); in-memory, folder and small TFDS sets are fully reshuffled every epoch.

  Raises:
    ValueError: unknown name (the message lists the known ones) or a split that cannot be made.
    DatasetNotPreparedError: a TFDS dataset that is not on disk (the message says how to prepare it).
  """
  if name not in SPECS:
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(known_datasets())}")
  spec = SPECS[name]
  if int(uda_ratio) != uda_ratio or uda_ratio < 1:
    raise ValueError(f"uda_ratio must be a positive integer, got {uda_ratio!r}")
  unlabeled_batch_size = int(uda_ratio) * int(batch_size)
  labeled_batch_size = labeled_batch_size or batch_size
  defaults = (spec.num_labeled, spec.num_validation)
  num_labeled = spec.num_labeled if num_labeled is None else num_labeled
  num_validation = spec.num_validation if num_validation is None else num_validation
  split_name = splits.split_name(name, seed, num_labeled, defaults[0], num_validation, defaults[1])

  if spec.bundle is not None:
    return spec.bundle(num_labeled=num_labeled, seed=seed, batch_size=batch_size,
                       unlabeled_batch_size=unlabeled_batch_size, labeled_batch_size=labeled_batch_size,
                       two_views=two_views, unlabeled_view=unlabeled_view, eval_batch_size=eval_batch_size,
                       noise_stddev=noise_stddev, split_name=split_name)

  source = spec.source(data_dir=data_dir, path=path, unlabeled_path=unlabeled_path, test_path=test_path,
                       image_size=image_size)
  own_test = source.num_test > 0
  if own_test and num_test:
    raise ValueError(f"{name} has a test set of its own ({source.num_test} examples); num_test={num_test!r} "
                     "only applies to sources without one")
  num_test = 0 if own_test else (spec.num_test if num_test is None else num_test)
  split = splits.make_split(source.pool_labels, source.num_classes, num_labeled, num_validation=num_validation,
                            num_test=num_test, seed=seed,
                            unlabeled_includes_labeled=spec.unlabeled_includes_labeled)
  if not split.labeled.size:
    raise ValueError(f"{name}: the split has no labeled examples (num_labeled={num_labeled!r})")
  num_unlabeled = len(split.unlabeled) + source.num_extra_unlabeled
  if not num_unlabeled:
    raise ValueError(f"{name}: no unlabeled examples are left: lower num_labeled (now {num_labeled!r}) or add "
                     "unlabeled data (unlabeled_path for folders, x_unlabeled for .npz)")

  if spec.image_size or (source.image_shape is None):
    size = image_size or spec.image_size
    if not size:
      raise ValueError(f"{name}: the images vary in size: give image_size")
    input_shape = (size, size, 3)
    train_prepare, eval_prepare = pipeline.random_resized_crop(size), pipeline.center_crop(size)
  else:
    input_shape = tuple(source.image_shape)
    train_prepare = eval_prepare = pipeline.as_float
  config = _augment_config(spec, source, input_shape[-1], augment_ops, augment_num_ops, augment_magnitude,
                           cutout_fraction, flip, fill_value)
  log.info("augmentation of %s: %s", name, augment.describe(config))
  views = augment.image_views(config, input_shape)

  lab_seed, unl_seed = splits.derived_seed(seed, "labeled"), splits.derived_seed(seed, "unlabeled")
  train = pipeline.train_dataset(
      source.labeled_stream(split.labeled, lab_seed, shuffle_buffer),
      source.unlabeled_stream(split.unlabeled, unl_seed, shuffle_buffer),
      batch_size=batch_size, unlabeled_batch_size=unlabeled_batch_size, views=views, seed=seed,
      prepare=train_prepare, two_views=two_views, unlabeled_view=unlabeled_view)
  labeled = pipeline.labeled_dataset(
      source.labeled_stream(split.labeled, splits.derived_seed(seed, "finetune"), shuffle_buffer),
      batch_size=labeled_batch_size, views=views, seed=seed, prepare=train_prepare)
  validation = pipeline.eval_dataset(source.examples(split.validation) if split.validation.size else None,
                                     batch_size=eval_batch_size, finish=views.finish, prepare=eval_prepare)
  test_examples = source.test_examples() if own_test else source.examples(split.test)
  if test_examples is None or not (source.num_test or split.test.size):
    raise ValueError(f"{name}: no test set: the source has none and num_test is 0")
  test = pipeline.eval_dataset(test_examples, batch_size=eval_batch_size, finish=views.finish,
                               prepare=eval_prepare)
  log.info("dataset %s: %d labeled, %d unlabeled, %d validation, %d test", split_name, len(split.labeled),
           num_unlabeled, len(split.validation), source.num_test or len(split.test))
  return DatasetBundle(
      name=name, split_name=split_name, split_digest=split.digest(), num_classes=source.num_classes,
      input_shape=input_shape, train=train, labeled=labeled, validation=validation, test=test,
      num_labeled=len(split.labeled), num_unlabeled=num_unlabeled, num_validation=len(split.validation),
      num_test=source.num_test if own_test else len(split.test), batch_size=batch_size,
      unlabeled_batch_size=unlabeled_batch_size, labeled_batch_size=labeled_batch_size, two_views=two_views,
      class_names=source.class_names, class_counts=_class_counts(source, split, own_test),
      raw=RawExamples(source, split, views, train_prepare), augmentation=config)


def describe_classes(bundle: DatasetBundle, shown: int = 20) -> str:
  """'10 classes (labeled / test): 0 10/50, 1 10/50, ...; 3,900 unlabeled, 0 validation': what the run learns from,
  printed at its start (a class with few labeled examples, or none in the test split, shows here first)."""
  if bundle.class_counts is None:
    return f"{bundle.num_classes} classes; {bundle.num_labeled:,} labeled, {bundle.num_unlabeled:,} unlabeled"
  labeled, test = bundle.class_counts
  names = bundle.class_names or [str(c) for c in range(bundle.num_classes)]
  cells = [f"{names[c]} {labeled[c]}" + (f"/{test[c]}" if test is not None else "") for c in range(len(labeled))]
  more = f", ... and {len(cells) - shown} more" if len(cells) > shown else ""
  return (f"{bundle.num_classes} classes (labeled{' / test' if test is not None else ''}): "
          f"{', '.join(cells[:shown])}{more}; {bundle.num_unlabeled:,} unlabeled, {bundle.num_validation:,} "
          f"validation, {bundle.num_test:,} test")


def _class_counts(source, split, own_test: bool):
  """(labeled, test) examples per class; test None when its labels are not in memory."""
  count = lambda labels: np.bincount(np.asarray(labels, np.int64), minlength=source.num_classes)
  test = source.test_labels() if own_test else source.pool_labels[split.test]
  return count(source.pool_labels[split.labeled]), (count(test) if test is not None else None)


def _two_moons(num_labeled, seed, batch_size, unlabeled_batch_size, labeled_batch_size, two_views, unlabeled_view,
               eval_batch_size, noise_stddev, split_name) -> DatasetBundle:
  """Two moons through the same interface: the views are the raw 2-d points (plus optional noise)."""
  if isinstance(num_labeled, float):
    raise ValueError("two_moons takes an int num_labeled (3 a moon in the paper)")
  data = two_moons.load_two_moons(num_labeled=int(num_labeled), seed=seed)
  source = sources.ArraySource("two_moons", data["x"], data["y"], 2)
  everything = np.arange(len(data["y"]))
  views = augment.gaussian_noise_views(noise_stddev, dimensions=data["x"].shape[1])
  lab_seed, unl_seed = splits.derived_seed(seed, "labeled"), splits.derived_seed(seed, "unlabeled")
  split = splits.Split(labeled=data["labeled_index"], unlabeled=data["unlabeled_index"],
                       validation=np.zeros(0, np.int64), test=everything)
  train = pipeline.train_dataset(
      source.labeled_stream(split.labeled, lab_seed, 0), source.unlabeled_stream(split.unlabeled, unl_seed, 0),
      batch_size=batch_size, unlabeled_batch_size=unlabeled_batch_size, views=views, seed=seed,
      two_views=two_views, unlabeled_view=unlabeled_view)
  finetune_seed = splits.derived_seed(seed, "finetune")
  labeled = pipeline.labeled_dataset(source.labeled_stream(split.labeled, finetune_seed, 0),
                                     batch_size=labeled_batch_size, views=views, seed=seed)
  test = pipeline.eval_dataset(source.examples(everything), batch_size=eval_batch_size, finish=views.finish)
  return DatasetBundle(
      name="two_moons", split_name=split_name, split_digest=split.digest(), num_classes=2, input_shape=(2,),
      train=train, labeled=labeled, validation=None, test=test, num_labeled=len(split.labeled),
      num_unlabeled=len(split.unlabeled), num_validation=0, num_test=len(everything), batch_size=batch_size,
      unlabeled_batch_size=unlabeled_batch_size, labeled_batch_size=labeled_batch_size, two_views=two_views)
