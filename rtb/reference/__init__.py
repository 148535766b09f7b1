"""The reference inpainter: a small convolutional network trained in-repo (see ``docs/reference-model.md``)."""

from rtb.reference.model import ReferenceConfig, ReferenceNet, composite, load_weights, push_pull_fill, save_weights

__all__ = ["ReferenceConfig", "ReferenceNet", "composite", "load_weights", "push_pull_fill", "save_weights"]
