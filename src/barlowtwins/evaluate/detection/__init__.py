"""Object-detection transfer: data readers (VOC, COCO), the C4/FPN detectors, AP, and the protocol.

    >>> from barlowtwins.evaluate.detection import build_detector, standard_schedule, run_detection
"""

from barlowtwins.evaluate.detection.ap import coco_detection_ap, pycocotools_ap, voc_ap, voc_detection_ap
from barlowtwins.evaluate.detection.data import DetectionDataset, coco_detection, voc_detection
from barlowtwins.evaluate.detection.model import build_detector
from barlowtwins.evaluate.detection.protocol import (
    DetectionResult,
    DetectionRun,
    DetectionSchedule,
    run_detection,
    standard_schedule,
)

__all__ = ["DetectionDataset", "DetectionResult", "DetectionRun", "DetectionSchedule", "build_detector",
           "coco_detection", "coco_detection_ap", "pycocotools_ap", "run_detection", "standard_schedule",
           "voc_ap", "voc_detection", "voc_detection_ap"]
