"""mpl_tf: Meta Pseudo Labels (Pham et al., CVPR 2021) in TensorFlow 2 / tf-keras.

`MetaPseudoLabelsModel` is the algorithm; `mpl_tf.train` is the command-line entry point.
"""
from mpl_tf.algorithms.mpl import MetaPseudoLabelsModel

__all__ = ["MetaPseudoLabelsModel"]
