"""Evaluating a detector on a labelled YOLO folder: COCO mAP, the deployed operating point, reports.

`evaluate()` is the entry point; the modules underneath can be used on predictions made elsewhere.
"""
