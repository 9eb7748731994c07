"""Discriminator augmentation: ADA's pipeline and adaptive-p controller (``ada``) built from stateless ops
(``ops``), DiffAugment (``diffaugment``), and the ``--aug`` family that chooses between them (``options``)."""
