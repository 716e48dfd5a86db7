"""Track 4's detector: the frozen-backbone Faster R-CNN (model.py), VOC07 images and proposals (data.py), and its
resumable training and inference (train.py). Above the engine (it reuses its checkpoint and schedule helpers),
below the orchestration module evaluation/detection_track.py."""
