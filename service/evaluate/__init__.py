"""Score preannotations or annotators against benchmark labels (Benchmark QA, annotator training).

Pipeline: ``inputs`` loads any supported export into ``types.Dataset`` -> ``pairing`` lines items, slots and frames
up -> ``matching`` makes one-to-one pairs per frame -> ``metrics`` / ``coco_map`` count them -> ``outputs`` writes
``summary.json``, ``leaderboard.csv``, ``iou_results.csv`` (``seed_csv``) and ``report.html`` (``report``).
"""
