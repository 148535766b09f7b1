"""Training of the models this repository ships, apart from the library (as ``open_clip_train`` is apart from
``open_clip``): ``import rtb`` never imports anything here.

- :mod:`rtb_train.reference`: the MSE-trained reference inpainter (``model="reference"``; CPU).
- :mod:`rtb_train.lama_gan` with :mod:`rtb_train.gan`: the LaMa-style GAN inpainter (``model="reference-gan"``; GPU).
- :mod:`rtb_train.data`: the procedural and photographic training data of both; nothing is downloaded.
- :mod:`rtb_train.heldout`: the held-out evaluation catalog (sources none of the trainers saw).

Optional dependencies of their own: ``pip install 'rtb[train]'`` (scikit-image for the training photos).
"""
