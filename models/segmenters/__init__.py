"""Box-prompted segmenters (``models.base.Segmenter``)."""
