"""Training data: the image folder/zip dataset and its splits (``dataset``), the open-time check of every
image (``check``), dataset_tool's readers (``sources``), the resumable rank-sharded sampler (``sampler``) and
the built-in demo set (``demo``)."""
