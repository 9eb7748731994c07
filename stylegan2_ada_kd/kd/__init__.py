"""The KD-DLGAN plugin (Cui et al., CVPR 2023): the loss with AGKD and CGKD (``loss``), D's KD head
(``heads``), frozen teachers (``teacher``; open_clip in ``teacher_open_clip``, TorchScript encoders in
``teacher_torchscript``), CGKD's prompts (``prompts``) and real-image anchors (``anchors``), the terms and
formulations they share (``variants``) and the ``--kd`` family of train.py (``options``). The core never
imports this package; it plugs in through the loss class and D's head hook."""
