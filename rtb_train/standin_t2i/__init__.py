"""The stand-in text-to-image model: a procedural captioned domain (:mod:`.domain`) and the CPU training of an
SD-format model on it (autoencoder, UNet, CLIP text encoder) and of the recogniser the measures use.

``python -m rtb_train.standin_t2i --help``; the shipped result is ``rtb/weights/standin-t2i``.
"""
