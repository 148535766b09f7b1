"""Generate the bundled detection samples (``rtb/samples/detection/``): photos with known faces and known text.

Photos from ``skimage.data`` (public domain / CC0, bundled with scikit-image, no download); text drawn with
Pillow's own font (Aileron, CC0), so the result does not depend on the machine's fonts. ``regions.json`` holds
the true boxes ``(x0, y0, x1, y1)`` (half-open pixels): faces from brows/hairline to chin and ear to ear, by
eye on the originals; text as the bounding box of the drawn ink. Rerun after changing it:

    python rtb/samples/detection/make_detection_samples.py        # writes rtb/samples/detection/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage import data

SIDE = 384
# Faces in the 512×512 originals (the same boxes as benchmarks/detection.py).
ASTRONAUT_FACE = (178, 58, 272, 176)
CAMERA_FACE = (198, 110, 260, 198)


def scaled(box, scale: float) -> list[int]:
    x0, y0, x1, y1 = box
    return [round(x0 * scale), round(y0 * scale), round(x1 * scale), round(y1 * scale)]


def draw_text(image: Image.Image, text: str, position, size: int, fill, stroke=None) -> list[int]:
    """Draw ``text`` on ``image`` and return the box of its ink."""
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    font = ImageFont.load_default(size=size)
    ImageDraw.Draw(layer).text(
        position,
        text,
        font=font,
        fill=fill + (255,),
        stroke_width=2 if stroke else 0,
        stroke_fill=(stroke + (255,)) if stroke else None,
    )
    alpha = np.asarray(layer.getchannel("A")) > 20
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    image.paste(Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB"))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def portrait_caption() -> tuple[Image.Image, list[dict]]:
    """A frontal face and a white caption with a black outline over the orange suit."""
    image = Image.fromarray(data.astronaut()).resize((SIDE, SIDE), Image.LANCZOS)
    scale = SIDE / 512
    caption = "Photo: NASA, public domain"
    box = draw_text(image, caption, (10, 340), 22, (255, 255, 255), (0, 0, 0))
    return image, [
        {"kind": "face", "box": scaled(ASTRONAUT_FACE, scale), "note": "frontal"},
        {"kind": "text", "box": box, "text": caption},
    ]


def cameraman_credit() -> tuple[Image.Image, list[dict]]:
    """A face turned three quarters, partly hidden by the camera, and a dark credit line in the sky."""
    image = Image.fromarray(data.camera()).convert("RGB").resize((SIDE, SIDE), Image.LANCZOS)
    scale = SIDE / 512
    credit = "Archive 1987 / Photo Desk"
    box = draw_text(image, credit, (120, 14), 20, (20, 20, 20))
    return image, [
        {"kind": "face", "box": scaled(CAMERA_FACE, scale), "note": "turned, partly hidden"},
        {"kind": "text", "box": box, "text": credit},
    ]


def rocket() -> tuple[Image.Image, list[dict]]:
    """A rocket on its launch pad at dusk: no face, no text (a row with no region)."""
    array = data.rocket()
    image = Image.fromarray(array).resize((SIDE, round(SIDE * array.shape[0] / array.shape[1])), Image.LANCZOS)
    return image, []


SAMPLES = {
    "portrait_caption.jpg": (portrait_caption, "skimage.data.astronaut (public domain, NASA)"),
    "cameraman_credit.jpg": (cameraman_credit, "skimage.data.camera (CC0, Lav Varshney)"),
    "rocket.jpg": (rocket, "skimage.data.rocket (public domain, SpaceX)"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    manifest = {
        "note": "true boxes (x0, y0, x1, y1), half-open pixels; made by make_detection_samples.py",
        "images": [],
    }
    for name, (make, source) in SAMPLES.items():
        image, regions = make()
        image.save(args.output / name, quality=92)
        manifest["images"].append(
            {"file": name, "width": image.width, "height": image.height, "source": source, "regions": regions}
        )
    # One image per line: short enough to read, still plain JSON.
    lines = ",\n  ".join(json.dumps(entry) for entry in manifest["images"])
    (args.output / "regions.json").write_text(
        f'{{"note": {json.dumps(manifest["note"])},\n "images": [\n  {lines}\n ]\n}}\n'
    )


if __name__ == "__main__":
    main()
