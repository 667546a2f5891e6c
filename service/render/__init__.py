"""Pictures of predictions: detections drawn on frames (supervision's annotators), contact sheets, preview MP4s."""
