"""The deep-feature focus measure ("ums"): the UNet++, its unsupervised training, and its shipped weights."""
