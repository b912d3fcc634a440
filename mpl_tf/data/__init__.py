"""Data: splits, augmentation, sources and the `tf.data` pipelines MPL trains on.

`from mpl_tf.data import build_dataset` is the entry point (see `datasets.py`); it is imported lazily so that
`import mpl_tf.data.two_moons` stays cheap (no TFDS).
"""
__all__ = ["build_dataset", "DatasetBundle", "known_datasets"]


def __getattr__(name):
  if name in __all__:
    from mpl_tf.data import datasets  # pylint: disable=g-import-not-at-top
    return getattr(datasets, name)
  raise AttributeError(f"module 'mpl_tf.data' has no attribute {name!r}")
