"""Platform code, which never imports the method: processes and launch (``distributed``, ``launcher``),
what a run writes besides snapshots (``run_io``), statistics (``training_stats``), the layer table of the
log (``module_summary``), TorchScript files of frozen models (``torchscript``), stopping on SIGTERM/SIGUSR1
(``stop``), tensor helpers (``misc``) and the image ops with their optional CUDA builds (``ops``,
``custom_ops``)."""
