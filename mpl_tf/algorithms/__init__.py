"""One file per method: its model class, its `phases` and its `METHOD` (`phases.py` says what those are). Every
model is a `base.SemiSupervisedModel` and trains with Keras `fit`."""
