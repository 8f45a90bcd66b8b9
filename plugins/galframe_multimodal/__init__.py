"""galframe_multimodal: encoders of the modalities besides the image, and their fusion with it.

* ``encoder.tabular`` (:mod:`galframe_multimodal.tabular`): named catalog columns (other surveys' magnitudes
  and errors) through an MLP; a missing value is masked with a per-column indicator, never imputed.
* ``encoder.spectrum`` (:mod:`galframe_multimodal.spectrum`): flux, inverse variance and mask on a wavelength
  grid through a 1-D convolutional network; masked pixels carry no flux.
* ``fusion.concat``, ``fusion.gated``, ``fusion.attention`` (:mod:`galframe_multimodal.fusion`): the
  modalities' embeddings made into the one embedding the tasks read, absent modalities masked out.

Selected with ``modalities=[image,tabular]`` (galframe/modalities.py); options under ``encoders.<modality>``
and ``fusion`` (``conf/encoder/*.yaml``, ``conf/fusion/*.yaml``).  See docs/multimodal.md.
"""
from __future__ import annotations
