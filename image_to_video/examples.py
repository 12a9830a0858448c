"""Example pictures for the page, drawn by the app itself (no downloaded assets)."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = 512

#: File name -> the prompt the page suggests with it.
EXAMPLES = {
    "seaside_sunset.png": "the waves roll in slowly, the sun sets over the sea",
    "mountain_lake.png": "clouds drift across the sky, gentle ripples on the lake",
}


def ensure_examples(folder: Path) -> list[tuple[Path, str]]:
    """Draw the example pictures into ``folder`` if missing; return (path, prompt) pairs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    painters = {"seaside_sunset.png": _seaside_sunset, "mountain_lake.png": _mountain_lake}
    pairs = []
    for name, prompt in EXAMPLES.items():
        path = folder / name
        if not path.is_file():
            painters[name]().save(path)
        pairs.append((path, prompt))
    return pairs


def _vertical_gradient(top: tuple[int, int, int], bottom: tuple[int, int, int], height: int) -> Image.Image:
    image = Image.new("RGB", (SIZE, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / max(1, height - 1)
        draw.line([(0, y), (SIZE, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom)))
    return image


def _seaside_sunset() -> Image.Image:
    image = _vertical_gradient((255, 140, 90), (255, 214, 150), SIZE)
    draw = ImageDraw.Draw(image)
    draw.ellipse([196, 200, 316, 320], fill=(255, 236, 170))
    sea = _vertical_gradient((40, 90, 150), (10, 40, 80), SIZE // 2)
    image.paste(sea, (0, SIZE // 2))
    for row in range(14):
        y = SIZE // 2 + 10 + row * 18
        for x in range(0, SIZE, 48):
            offset = 24 * (row % 2)
            draw.arc([x + offset, y, x + offset + 40, y + 10], 200, 340, fill=(200, 225, 245), width=2)
    draw.rectangle([0, 440, SIZE, SIZE], fill=(230, 200, 140))
    return image.filter(ImageFilter.SMOOTH)


def _mountain_lake() -> Image.Image:
    image = _vertical_gradient((120, 180, 235), (210, 235, 250), SIZE)
    draw = ImageDraw.Draw(image)
    for cx, cy in ((110, 90), (360, 70)):
        for dx in (-30, 0, 30):
            draw.ellipse([cx + dx - 40, cy - 20, cx + dx + 40, cy + 20], fill=(250, 250, 252))
    peaks = [(0, 300), (90, 170), (170, 260), (270, 130), (380, 250), (450, 190), (SIZE, 300)]
    draw.polygon(peaks + [(SIZE, 330), (0, 330)], fill=(90, 110, 130))
    draw.polygon([(240, 160), (270, 130), (300, 160), (285, 170), (255, 168)], fill=(245, 245, 250))
    draw.rectangle([0, 330, SIZE, SIZE], fill=(60, 120, 160))
    for i in range(10):
        y = 345 + i * 16
        width = 60 + 25 * math.sin(i)
        draw.line([(256 - width, y), (256 + width, y)], fill=(150, 190, 215), width=2)
    draw.rectangle([0, 470, SIZE, SIZE], fill=(70, 130, 60))
    return image.filter(ImageFilter.SMOOTH)
