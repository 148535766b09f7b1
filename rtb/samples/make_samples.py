"""Generate the bundled sample catalog (``rtb/samples/catalog/``): six ~256 px image/mask pairs.

Photos come from ``skimage.data`` (bundled with scikit-image, no download); logos and text are drawn with
Pillow. Each pair is ``NAME.png`` + ``NAME_mask.png`` (white = protected) + ``NAME.txt`` (an edit prompt),
the ``pairs`` catalog format. Rerun after changing it:

    python rtb/samples/make_samples.py            # writes rtb/samples/catalog/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage import data

SIDE = 256


def fit(array: np.ndarray) -> Image.Image:
    """A PIL image whose longest side is ``SIDE`` pixels."""
    image = Image.fromarray(array)
    scale = SIDE / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)


def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def blank_mask(image: Image.Image) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    mask = Image.new("L", image.size, 0)
    return mask, ImageDraw.Draw(mask)


def draw_logo(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], fill: tuple) -> None:
    """A made-up brand mark: a ring, a triangle and the letters RTB."""
    x0, y0, x1, y1 = box
    draw.ellipse(box, outline=fill, width=max(2, (x1 - x0) // 12))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    r = (x1 - x0) / 4
    draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.7), (cx + r, cy + r * 0.7)], fill=fill)


def astronaut() -> tuple[Image.Image, Image.Image, str]:
    image = fit(data.astronaut())  # 256×256
    mask, draw = blank_mask(image)
    draw.ellipse((84, 22, 146, 104), fill=255)  # the face
    return image, mask, "the same astronaut with a different face"


def chelsea() -> tuple[Image.Image, Image.Image, str]:
    image = fit(data.chelsea())  # 256×170
    mask, draw = blank_mask(image)
    draw.ellipse((80, 15, 210, 140), fill=255)  # the cat's face
    return image, mask, "a dog sitting in the same place"


def coffee() -> tuple[Image.Image, Image.Image, str]:
    image = fit(data.coffee())  # 256×171
    draw = ImageDraw.Draw(image)
    box = (96, 52, 146, 102)
    draw_logo(draw, box, (180, 30, 30))
    mask, mask_draw = blank_mask(image)
    mask_draw.rectangle((box[0] - 4, box[1] - 4, box[2] + 4, box[3] + 4), fill=255)  # the logo on the cup
    return image, mask, "a coffee cup with a competitor's logo"


def rocket() -> tuple[Image.Image, Image.Image, str]:
    image = fit(data.rocket())  # 256×171
    draw = ImageDraw.Draw(image)
    text, position, typeface = "SPACE CO.", (12, 130), font(22)
    draw.text(position, text, fill=(255, 255, 255), font=typeface, stroke_width=2, stroke_fill=(0, 0, 0))
    left, top, right, bottom = draw.textbbox(position, text, font=typeface, stroke_width=2)
    mask, mask_draw = blank_mask(image)
    mask_draw.rectangle((left - 4, top - 4, right + 4, bottom + 4), fill=255)  # the caption
    return image, mask, "a rocket launch with a different caption"


def poster() -> tuple[Image.Image, Image.Image, str]:
    """A drawn RGBA sticker: a gradient card with a logo and a slogan, transparent corners."""
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    rgb = np.stack([x, y, 255 - (x + y) // 2], axis=-1).astype(np.uint8)
    image = Image.fromarray(rgb).convert("RGBA")
    alpha = Image.new("L", image.size, 0)
    ImageDraw.Draw(alpha).rounded_rectangle((0, 0, SIDE - 1, SIDE - 1), radius=40, fill=255)
    image.putalpha(alpha)
    draw = ImageDraw.Draw(image)
    draw_logo(draw, (78, 40, 178, 140), (255, 255, 255, 255))
    draw.text((40, 170), "PROTECT ME", fill=(20, 20, 20, 255), font=font(28))
    mask, mask_draw = blank_mask(image)
    mask_draw.rectangle((70, 32, 186, 148), fill=255)  # the logo
    mask_draw.rectangle((34, 164, 224, 208), fill=255)  # the slogan
    return image, mask, "the same card with another brand"


def cameraman() -> tuple[Image.Image, Image.Image, str]:
    """A grayscale (mode L) photo: the output comes back RGB."""
    image = fit(data.camera())  # 256×256, L
    mask, draw = blank_mask(image)
    draw.ellipse((84, 20, 132, 82), fill=255)  # the head
    return image, mask, "the same photographer with another face"


SAMPLES = {
    "astronaut": astronaut,
    "chelsea": chelsea,
    "coffee": coffee,
    "rocket": rocket,
    "poster": poster,
    "cameraman": cameraman,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(Path(__file__).parent / "catalog"))
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name, make in SAMPLES.items():
        image, mask, prompt = make()
        image.save(out / f"{name}.png", optimize=True)
        mask.save(out / f"{name}_mask.png", optimize=True)
        (out / f"{name}.txt").write_text(prompt + "\n")
        print(f"{name}: {image.width}×{image.height} {image.mode}, mask {np.asarray(mask).mean() / 255:.1%}")


if __name__ == "__main__":
    main()
