"""The model zoo: one file per family behind `build_model(name, num_classes, input_shape, **options)`.

All models are functional tf-keras models taking [0, 1] images and returning logits; see `builder.py`.
"""
from mpl_tf.models.builder import FAMILIES, KNOWN_MODELS, build_model, model_family

__all__ = ["FAMILIES", "KNOWN_MODELS", "build_model", "model_family"]
