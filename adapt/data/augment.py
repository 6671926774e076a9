"""The recipe's ``data.augment`` section -> the training-time augmentation callable (or None).

    augment = build_augment(recipe.data.augment, recipe.seed, general_sources)   # None when the section is null
    image, record = augment(image, record, key=(epoch, position))
    print(augment.summary(records))   # how many records are flipped / turned, and why the others are not

The augmentation itself (flips, 90° turns, colour jitter, boxes in the text moved with the pixels)
lives with the domains: ``domains.augment.build_augmentation``. It is applied by
`SupervisedDataset` to training items only, keyed by ``(epoch, position)`` so resume is exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .samples import DataError

__all__ = ["build_augment"]


def build_augment(spec: Any, seed: int = 0, general_sources: Iterable[str] = ()):
    """An augmentation for `spec` (``recipe.data.augment``: an object or dict with ``flips``, ``rot90``,
    ``color_jitter``; a dict is read as the recipe section is, a key left out taking its default), or None when
    `spec` is None or switches everything off. Records of `general_sources` (the names of the ``kind: general``
    sources) are left as they are. Raises `DataError` for a dict the recipe would refuse (an unknown key) and for a
    `spec` that is neither."""
    if spec is None:
        return None
    if isinstance(spec, dict):  # {"color_jitter": 0.1} meant flips and turns off here, on in a recipe
        from pydantic import ValidationError

        from adapt.recipe import Augment

        try:
            spec = Augment.model_validate(spec)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'augment'}: {e['msg']}" for e in exc.errors())
            raise DataError(f"data.augment {spec!r}: {problems}") from None
    elif not hasattr(spec, "model_dump"):
        raise DataError(f"data.augment: {spec!r} is not a mapping of flips, rot90 and color_jitter (nor null, for off)")
    values = spec.model_dump()
    if not (values.get("flips") or values.get("rot90") or values.get("color_jitter")):
        return None
    from domains.augment import build_augmentation

    return build_augmentation(flips=bool(values.get("flips")), rot90=bool(values.get("rot90")),
                              color_jitter=float(values.get("color_jitter") or 0.0), seed=seed,
                              general_sources=general_sources)
