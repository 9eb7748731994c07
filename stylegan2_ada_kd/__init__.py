"""The method: networks (``networks``), data (``data``), augmentation (``augment``), training (``training``),
checkpoints (``checkpoint``), the KD-DLGAN plugin (``kd``), the plugin families of train.py (``plugins``) and
projection into W (``projection``)."""
