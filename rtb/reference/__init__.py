"""The reference inpainters, trained in-repo (see ``docs/reference-model.md``).

``model`` is the MSE-trained push-pull U-Net (``reference``); ``lama`` the LaMa-style FFC generator and ``gan``
its adversarial training (``reference-gan``); ``data`` the training data of both.
"""

from rtb.reference.lama import LamaConfig, LamaGenerator, load_lama_weights, save_lama_weights
from rtb.reference.model import ReferenceConfig, ReferenceNet, composite, load_weights, push_pull_fill, save_weights

__all__ = [
    "LamaConfig",
    "LamaGenerator",
    "ReferenceConfig",
    "ReferenceNet",
    "composite",
    "load_lama_weights",
    "load_weights",
    "push_pull_fill",
    "save_lama_weights",
    "save_weights",
]
