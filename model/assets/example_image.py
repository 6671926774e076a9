"""The bundled example image (``model/assets/example.png``): three flat shapes on a light background.

    python -m model.assets.example_image [--out FILE]

Layout (640x480, RGB): a red circle at the top-left, a green triangle in the centre and a blue
square at the bottom-right.  ``SHAPES`` records each shape's bounding box in pixels, so tests and
demos can check grounding answers (multiply by 1000/W, 1000/H for InternVL's 0-1000 grid).
The drawing is deterministic; the PNG carries no metadata.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

__all__ = ["WIDTH", "HEIGHT", "BACKGROUND", "SHAPES", "DEFAULT_OUT", "draw_example_image", "write_example_image", "main"]

WIDTH, HEIGHT = 640, 480
BACKGROUND = (245, 245, 240)
RED, GREEN, BLUE = (220, 40, 40), (40, 170, 70), (40, 80, 220)
OUTLINE = (60, 60, 60)

# name -> (colour, [x1, y1, x2, y2] bounding box in pixels, inclusive)
SHAPES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int, int]]] = {
    "red circle": (RED, (50, 40, 190, 180)),
    "green triangle": (GREEN, (240, 160, 400, 320)),
    "blue square": (BLUE, (460, 310, 590, 440)),
}
DEFAULT_OUT = Path(__file__).resolve().parent / "example.png"


def draw_example_image() -> Image.Image:
    """Draw the example image (deterministic, 640x480 RGB)."""
    img = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(img)
    colour, box = SHAPES["red circle"]
    draw.ellipse(box, fill=colour, outline=OUTLINE, width=3)
    colour, (x1, y1, x2, y2) = SHAPES["green triangle"]
    draw.polygon([((x1 + x2) // 2, y1), (x2, y2), (x1, y2)], fill=colour, outline=OUTLINE, width=3)
    colour, box = SHAPES["blue square"]
    draw.rectangle(box, fill=colour, outline=OUTLINE, width=3)
    return img


def write_example_image(out: str | Path = DEFAULT_OUT) -> Path:
    """Draw the image and save it as a PNG at ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_example_image().save(out, format="PNG", optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.assets.example_image", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output PNG (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    out = write_example_image(args.out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
