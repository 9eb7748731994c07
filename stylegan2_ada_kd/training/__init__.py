"""Training: options -> kwargs (``config``), the contracts of loss, monitor and augmentation
(``contracts``), the StyleGAN2 loss and its extras (``loss``, ``loss_options``), the run API that builds
and steps G, D and the loss (``run``), the run record (``record``), where its weights come from
(``resume``: ``--resume``, ``--init-from``, ``--resume=auto``), fitting a step into GPU memory
(``memory``), the loop (``loop``), its report (``report``) and the overfitting monitor (``overfit``)."""
