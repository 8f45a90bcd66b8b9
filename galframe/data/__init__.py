"""Data: the dataset format, readers, scalings, augmentation and the datamodule."""
