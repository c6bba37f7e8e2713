"""Images accepted by the runner, checked before they reach the processor so that errors name the input."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ACCEPTED = "a PIL.Image.Image, a path to an image file, or a uint8 numpy array of shape [H, W] or [H, W, 3|4]"


def to_pil(image: Any, *, where: str) -> Image.Image:
    """Converts one image to RGB PIL; raises TypeError/ValueError naming `where` (e.g. 'images[0][1]')."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{where}: image file {path} does not exist")
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, Image.UnidentifiedImageError) as err:
            raise ValueError(f"{where}: {path} is not a readable image ({err})") from err
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise ValueError(f"{where}: numpy image of dtype {image.dtype} and shape {image.shape}; "
                             "expected uint8 of shape [H, W] or [H, W, 3|4]")
        return Image.fromarray(image).convert("RGB")
    raise TypeError(f"{where}: unsupported image type {type(image).__module__}.{type(image).__qualname__}; "
                    f"expected {ACCEPTED}")


def check_pixels(image: Image.Image, max_pixels: int, *, where: str) -> None:
    """Refuses an image larger than max_pixels rather than letting the processor shrink it unseen."""
    w, h = image.size
    if w * h > max_pixels:
        raise ValueError(f"{where}: image of {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels}; "
                         "resize it first or load the runner with a larger max_pixels")


def normalize(images: Any, batch: int, max_pixels: int) -> list[list[Image.Image]] | None:
    """images for a batch of `batch` prompts -> one list of RGB images per prompt, or None when there are none.

    Accepted: None; one image or a list of images (batch 1); a list of `batch` lists (one per prompt)."""
    if images is None:
        return None
    if batch == 1 and not (isinstance(images, (list, tuple)) and images and isinstance(images[0], (list, tuple))):
        per_prompt = [list(images) if isinstance(images, (list, tuple)) else [images]]
    else:
        if not isinstance(images, (list, tuple)) or len(images) != batch or \
                not all(isinstance(x, (list, tuple)) or x is None for x in images):
            raise ValueError(f"images: for {batch} prompts, expected a list of {batch} lists of images "
                             f"(one list per prompt, possibly empty), got {type(images).__name__}"
                             + (f" of length {len(images)}" if isinstance(images, (list, tuple)) else ""))
        per_prompt = [list(x or []) for x in images]
    out = []
    for i, group in enumerate(per_prompt):
        converted = []
        for j, image in enumerate(group):
            where = f"images[{i}][{j}]" if batch > 1 else f"images[{j}]"
            pil = to_pil(image, where=where)
            check_pixels(pil, max_pixels, where=where)
            converted.append(pil)
        out.append(converted)
    return out if any(out) else None
