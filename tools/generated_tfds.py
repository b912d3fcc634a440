"""Writes small on-disk TFDS datasets with the real feature specs: svhn_cropped, cifar10, imagenet2012.

Nothing can be downloaded on our machines, and `tfds.testing.mock_data` serves random examples from a Python
generator, which writes no files and whose datasets `tf.data` cannot checkpoint, so the trainer (which
checkpoints its data iterator) could never run the paper's recipes on it. This tool prepares the datasets the
ordinary TFDS way instead: for each one it subclasses TFDS's own builder class, keeping its name, version and
`_info()` (features, class names, description), and replaces only `_split_generators` with a generator of a
few hundred examples. `download_and_prepare` then writes real sharded TFRecord files and `dataset_info.json`
under `<data_dir>/<name>/<version>/`, which `tfds.load(name, data_dir=...)` and `mpl_tf.data.TfdsSource` read as
they would read the real dataset (gin: `build_dataset.data_dir = '<data_dir>'`).

What is generated (per the real specs):
  svhn_cropped  splits train / test / extra; 32x32x3 PNG-encoded images; labels 0-9; an `id` string.
  cifar10       splits train / test; 32x32x3 PNG; labels 0-9; an `id` string.
  imagenet2012  splits train / validation; JPEG images of varied sizes (`--max_side`); labels 0-999 (the
                real 1,000 WordNet ids as class names); a `file_name` string. ImageNet's manual download is
                never asked for (its `_split_generators`, the only code that reads the manual folder, is replaced).
Each image is a class-coloured background with noise, so a network can learn something from it; labels cycle
through the classes (with 1,000 classes and a few hundred examples, ImageNet's splits hold a subset of them).
Everything derives from `--seed`: the same arguments write the same examples.

Example (a few seconds per dataset):
  python tools/generated_tfds.py --data_dir=/tmp/tfds_generated --datasets=svhn_cropped,cifar10,imagenet2012
  python -m mpl_tf.train --gin_file=gin/svhn_1k.gin --gin_file=gin/smoke.gin --workdir=/tmp/svhn \
      --gin_bindings="build_dataset.data_dir = '/tmp/tfds_generated'" --gin_bindings="build_dataset.num_labeled = 20"
"""
import argparse
import io
import os
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

# Examples per split; `--scale` multiplies them.
SPLITS: Dict[str, Dict[str, int]] = {
    "svhn_cropped": {"train": 300, "test": 100, "extra": 200},
    "cifar10": {"train": 300, "test": 100},
    "imagenet2012": {"train": 300, "validation": 100},
}


def _image(rng: np.random.Generator, label: int, num_classes: int, shape: Tuple[int, int]) -> np.ndarray:
  """A uint8 [H, W, 3] image: a colour that depends on the label, plus noise."""
  hue = (label * 0.618034) % 1.0  # golden-ratio spacing: neighbouring labels get distant colours
  colour = 255 * np.array([abs(np.sin(np.pi * (hue + k / 3))) for k in range(3)])
  noise = rng.normal(0.0, 40.0, size=(*shape, 3))
  del num_classes
  return np.clip(colour + noise, 0, 255).astype(np.uint8)


def _encode(image: np.ndarray, fmt: str) -> bytes:
  """PNG or JPEG bytes of `image` (what the real datasets store; TFDS keeps encoded bytes as they are)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format=fmt)
  return buffer.getvalue()


def _examples(name: str, split: str, count: int, num_classes: int, seed: int,
              max_side: int) -> Iterator[Tuple[str, dict]]:
  """(key, example) pairs of one split, with the features the real builder declares."""
  rng = np.random.default_rng([seed, sum(map(ord, name)), sum(map(ord, split))])
  for i in range(count):
    label = int((i * 7 + rng.integers(0, 3)) % num_classes)
    if name == "imagenet2012":
      shape = tuple(int(s) for s in rng.integers(max(8, max_side // 3), max_side + 1, size=2))
      example = {"image": _encode(_image(rng, label, num_classes, shape), "JPEG"), "label": label,
                 "file_name": f"generated_{split}_{i:06d}.JPEG"}
    else:  # svhn_cropped, cifar10: fixed 32x32x3, PNG as in the real data
      example = {"image": _encode(_image(rng, label, num_classes, (32, 32)), "PNG"), "label": label,
                 "id": f"{split}_{i:06d}"}
    yield f"{split}_{i:06d}", example


def generated_builder_class(name: str, counts: Dict[str, int], seed: int, max_side: int):
  """TFDS's builder class for `name` with its split generators replaced by generated examples."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  real = tfds.builder_cls(name)

  with tfds.core.registered.skip_registration():  # the real class keeps the name in TFDS's registry

    class Generated(real):  # pylint: disable=missing-class-docstring
      def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded; ImageNet's manual folder is never read
        classes = self.info.features["label"].num_classes
        return {split: _examples(name, split, n, classes, seed, max_side) for split, n in counts.items()}

      def _generate_examples(self, *args, **kwargs):  # the real one reads downloaded archives
        raise NotImplementedError("generated datasets come from _split_generators")

  Generated.name = real.name
  Generated.__name__ = f"Generated{real.__name__}"
  return Generated


def write(data_dir: str, datasets: Sequence[str] = tuple(SPLITS), *, scale: float = 1.0, seed: int = 0,
          max_side: int = 96) -> Dict[str, str]:
  """Prepares each of `datasets` under `data_dir`; returns {name: the prepared version's folder}.

  A dataset already prepared there is left alone (delete its folder to write it again).
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  tfds.disable_progress_bar()
  out = {}
  for name in datasets:
    if name not in SPLITS:
      raise ValueError(f"unknown dataset {name!r}; this tool writes {', '.join(SPLITS)}")
    counts = {split: max(1, int(round(n * scale))) for split, n in SPLITS[name].items()}
    builder = generated_builder_class(name, counts, seed, max_side)(data_dir=data_dir)
    if not builder.is_prepared():
      builder.download_and_prepare()
    out[name] = builder.data_dir
  return out


def folder_bytes(path: str, contains: Optional[str] = None) -> int:
  """Total size of the files under `path` (those whose name contains `contains`, if given)."""
  total = 0
  for root, _, files in os.walk(path):
    total += sum(os.path.getsize(os.path.join(root, f)) for f in files if contains is None or contains in f)
  return total


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", required=True, help="TFDS data directory to write into")
  parser.add_argument("--datasets", default=",".join(SPLITS), help="comma-separated TFDS names to write")
  parser.add_argument("--scale", type=float, default=1.0, help="multiplies every split's example count "
                      f"(1.0: {', '.join(f'{k} {v}' for k, v in SPLITS.items())})")
  parser.add_argument("--seed", type=int, default=0, help="every image and label derives from it")
  parser.add_argument("--max_side", type=int, default=96,
                      help="imagenet2012: image sides are drawn from [max_side / 3, max_side]")
  args = parser.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  prepared = write(args.data_dir, [d for d in args.datasets.split(",") if d], scale=args.scale, seed=args.seed,
                   max_side=args.max_side)
  for name, path in prepared.items():
    print(f"{name}: {path} ({folder_bytes(path) / 1e6:.2f} MB)")


if __name__ == "__main__":
  main()
