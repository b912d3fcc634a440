"""One file per method; all share `base.SemiSupervisedModel` and train with Keras `fit`."""
