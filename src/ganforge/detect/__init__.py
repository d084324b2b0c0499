"""YOLO v1 detection: models, boxes and targets, the loss, inference, VOC evaluation and data.

Nothing here imports the GAN trainer, its config or its models: the detector is its own task on
shared pieces (registry, io, data downloads and archive safety).
"""
