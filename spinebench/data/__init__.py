"""Data: the image loader's records, data-source specs, splits and datasets."""
