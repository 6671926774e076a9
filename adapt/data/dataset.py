"""Records → training tensors: a map-style dataset over a mixture order, and its collate function."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from model.processor import Encoded, SampleTooLongError
from model.tiling import ImageLoadError, load_image, preprocess_image

from .samples import TOO_LONG, UNDECODABLE_IMAGE, DataError, Record, SkipLog, record_tiling

__all__ = ["SupervisedDataset", "TileDataset", "collate", "collate_tiles", "record_tiles"]


class SupervisedDataset(torch.utils.data.Dataset):
    """Item ``i`` encodes record ``order[i]`` (a ``(source, index)`` pair, e.g. from
    `MixturePlan.epoch`) with labels on the gpt turns only.

    Images are fully decoded here (`model.tiling.load_image`), so a file whose header read fine but
    whose body is truncated or corrupt shows up now: the item is ``None``, the record is logged
    once as ``"image does not decode"`` (`SkipLog.add_dropped`) and later visits return ``None`` at
    once; `collate` drops it. With DataLoader workers each worker logs into its own copy of
    ``skips``, so `dropped_entry` tells the caller why position ``i`` was dropped: send it back with
    the batch and merge it into the main process's log (as `adapt.train` does).
    """

    def __init__(
        self,
        records: dict[str, list[Record]],
        order: Sequence[tuple[str, int]],
        processor,
        max_seq_length: int,
        skips: SkipLog,
        tiling=None,
        augment=None,
        epoch: int = 0,
    ):
        self.records = records
        # training-time augmentation: ``augment(image, record, key=(epoch, i)) -> (image, record)``
        # (e.g. ``domains.remote_sensing.augment.build_augmentation``); a pure function of (its seed,
        # epoch, position), so a resumed run sees the same pixels. Evaluation never uses it.
        self.augment = augment
        self.epoch = int(epoch)
        self.processor = processor
        self.max_seq_length = max_seq_length
        self.skips = skips
        self.tiling = tiling if tiling is not None else processor.tiling
        self._bad: dict[tuple[str, int], tuple[str, str, str, str]] = {}  # -> (source, reason, where, detail)
        self.set_order(order)

    def set_order(self, order: Sequence[tuple[str, int]], epoch: int | None = None) -> None:
        """Use a new order (e.g. the next epoch's) without rebuilding the dataset."""
        if epoch is not None:
            self.epoch = int(epoch)
        for source, index in order[:1]:
            self.records[source][index]  # fail fast on a wrong order
        self.order = list(order)

    def __len__(self) -> int:
        return len(self.order)

    def dropped_entry(self, i: int) -> tuple[str, str, str, str] | None:
        """``(source, reason, where, detail)`` when item ``i`` was dropped (call after ``self[i]``), else None."""
        return self._bad.get(self.order[i])

    def _decoded(self, i: int) -> tuple[Record, list] | None:
        """Record ``order[i]`` and its decoded (and augmented) images; None when they do not decode."""
        source, index = self.order[i]
        if (source, index) in self._bad:
            return None
        record = self.records[source][index]
        try:
            images = [load_image(p, max_pixels=self.tiling.max_pixels) for p in record.images]
        except ImageLoadError as exc:
            self._drop(record, index, UNDECODABLE_IMAGE, str(exc))
            return None
        if self.augment is not None and len(images) == 1:
            image, record = self.augment(images[0], record, key=(self.epoch, i))
            images = [image]
        return record, images

    def __getitem__(self, i: int) -> dict | None:
        decoded = self._decoded(i)
        if decoded is None:
            return None
        record, images = decoded
        source, index = self.order[i]
        tiling = record_tiling(record, self.tiling)
        # measure()'s tokens, unless augmentation handed back another record or the decoded sizes tile otherwise
        plan = record.token_plan if record is self.records[source][index] else None
        try:
            if plan is None:
                encoded = self.processor(record.conversations, images, add_generation_prompt=False, with_labels=True,
                                         max_length=self.max_seq_length, tiling=tiling)
            else:
                encoded = self._planned(record, plan, *self.processor.prepare_images(images, tiling))
        except SampleTooLongError as exc:  # measure() was skipped or used another tiling
            self._drop(record, index, TOO_LONG, str(exc))
            return None
        return {"encoded": encoded, "source": source, "record": record}

    def _planned(self, record: Record, plan, pixel_values, num_tiles: list[int]) -> Encoded:
        """What ``processor(...)`` returns for this record, from its token plan when that plan fits these tiles."""
        if plan.num_tiles != tuple(num_tiles) or len(plan.input_ids) > self.max_seq_length:
            return self.processor.encode_tokens(record.conversations, num_tiles, add_generation_prompt=False,
                                                with_labels=True, max_length=self.max_seq_length,
                                                pixel_values=pixel_values)
        input_ids = torch.frombuffer(plan.input_ids, dtype=torch.int32).long()
        return Encoded(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pixel_values,
                       labels=torch.frombuffer(plan.labels, dtype=torch.int32).long(), num_tiles=num_tiles)

    def _drop(self, record: Record, index: int, reason: str, detail: str) -> None:
        self._bad[(record.source, index)] = (record.source, reason, record.where, detail)
        self.skips.add_dropped(record.source, reason, record.where, detail)


class TileDataset(SupervisedDataset):
    """Item ``i`` is the tiles of record ``order[i]``'s images, cut as the tiling says (the record's tile cap and
    the multi-image share applied, as `VLMProcessor.prepare_images` does), for training on images alone
    (`adapt distill`); records without images should be left out of ``records``. Dropped images as in
    `SupervisedDataset`."""

    def __init__(self, records: dict[str, list[Record]], order: Sequence[tuple[str, int]], skips: SkipLog, tiling,
                 augment=None, epoch: int = 0):
        super().__init__(records, order, None, 0, skips, tiling, augment, epoch)

    def __getitem__(self, i: int) -> dict | None:
        decoded = self._decoded(i)
        if decoded is None:
            return None
        record, images = decoded
        return {"pixel_values": record_tiles(record, images, self.tiling), "source": self.order[i][0]}


def record_tiles(record: Record, images: list, tiling) -> torch.Tensor:
    """The tiles of a record's decoded images, concatenated: `(tiles, 3, size, size)`."""
    tiling = record_tiling(record, tiling).for_images(len(images))
    return torch.cat([preprocess_image(image, tiling) for image in images])


def collate_tiles(batch: list[dict | None]) -> dict:
    """Tiles of the kept items concatenated (``pixel_values``), ``tiles`` per item, ``sources``, ``n_dropped``."""
    kept = [item for item in batch if item is not None]
    if not kept:
        raise DataError(f"all {len(batch)} samples of the batch were dropped (their images do not decode); see the skip log")
    return {"pixel_values": torch.cat([item["pixel_values"] for item in kept]),
            "tiles": torch.tensor([item["pixel_values"].shape[0] for item in kept]),
            "sources": [item["source"] for item in kept], "n_dropped": len(batch) - len(kept)}


def collate(batch: list[dict | None], processor) -> dict:
    """Drop ``None`` items and pad the rest (``processor.pad``: pad id, mask from lengths, labels
    −100). Adds ``"sources"`` (one per row) and ``"n_dropped"``. Raises `DataError` when every
    item was dropped. Use ``functools.partial(collate, processor=processor)`` as a DataLoader's
    ``collate_fn``."""
    kept = [item for item in batch if item is not None]
    if not kept:
        raise DataError(
            f"all {len(batch)} samples of the batch were dropped (their images do not decode); see the skip log"
        )
    out = processor.pad([item["encoded"] for item in kept])
    out["sources"] = [item["source"] for item in kept]
    out["n_dropped"] = len(batch) - len(kept)
    return out
