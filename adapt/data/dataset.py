"""Records → training tensors: a map-style dataset over a mixture order, and its collate function."""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Sequence

import torch

from model.processor import IGNORE_INDEX, Encoded, SampleTooLongError
from model.tiling import ImageLoadError, TilingConfig, load_image, preprocess_image

from .samples import TOO_LONG, UNDECODABLE_IMAGE, DataError, Record, SkipLog, record_tiling

__all__ = ["SupervisedDataset", "TileDataset", "collate", "collate_tiles", "pack", "record_tiles"]


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
        # (e.g. ``domains.augment.build_augmentation``); a pure function of (its seed,
        # epoch, position), so a resumed run sees the same pixels. Evaluation never uses it. It is handed every
        # single-image record and decides itself what each may get (`Augmentation.plan`: no flips for text that
        # names a direction, nothing for general sources).
        self.augment = augment
        self.epoch = 0
        self.processor = processor
        self.max_seq_length = max_seq_length
        self.skips = skips
        self.tiling = tiling if tiling is not None else processor.tiling
        self._bad: dict[tuple[str, int], tuple[str, str, str, str]] = {}  # -> (source, reason, where, detail)
        self.set_order(order, epoch)

    def set_order(self, order: Sequence[tuple[str, int]], epoch: int | None = None) -> None:
        """Use a new order (e.g. the next epoch's, with its `epoch` for augmentation) without rebuilding the dataset;
        a `DataError`, changing nothing, names an item that is no ``(source, record index)`` of ``records`` (a record
        may appear any number of times) or an epoch that is no whole number >= 0."""
        epoch = self.epoch if epoch is None else _epoch(epoch)
        order = list(order)
        sizes = {source: len(records) for source, records in self.records.items()}
        for k, item in enumerate(order):  # every item, or a wrong one fails (or reads another record) mid-epoch
            if not (type(item) is tuple and len(item) == 2 and type(item[0]) is str and type(item[1]) is int
                    and 0 <= item[1] < sizes.get(item[0], 0)):
                order[k] = _order_item(k, item, sizes)
        self.order, self.epoch = order, epoch

    def __len__(self) -> int:
        return len(self.order)

    def dropped_entry(self, i: int) -> tuple[str, str, str, str] | None:
        """``(source, reason, where, detail)`` when item ``i`` was dropped (call after ``self[i]``), else None."""
        return self._bad.get(self.order[i])

    def _decoded(self, i: int, augment: bool = True) -> tuple[Record, list] | None:
        """Record ``order[i]`` and its decoded (and, with `augment`, augmented) images; None when they do not
        decode."""
        source, index = self.order[i]
        if (source, index) in self._bad:
            return None
        record = self.records[source][index]
        try:
            images = [load_image(p, max_pixels=self.tiling.max_pixels) for p in record.images]
        except ImageLoadError as exc:
            self._drop(record, index, UNDECODABLE_IMAGE, str(exc))
            return None
        if augment and self.augment is not None and len(images) == 1:
            image, record = self.augment(images[0], record, key=(self.epoch, i))
            images = [image]
        return record, images

    def __getitem__(self, i: int) -> dict | None:
        source, index = self.order[i]
        for augment in (True, False):
            decoded = self._decoded(i, augment)
            if decoded is None:
                return None
            record, images = decoded
            try:
                return {"encoded": self._encode(record, images, source, index), "source": source, "record": record}
            except SampleTooLongError as exc:  # measure() was skipped or used another tiling
                if augment and record is not self.records[source][index]:
                    continue  # only its augmented text (a moved box's digits) is too long: train it as it was read
                self._drop(record, index, TOO_LONG, str(exc))
                return None
        return None

    def _encode(self, record: Record, images: list, source: str, index: int) -> Encoded:
        tiling = record_tiling(record, self.tiling)
        # measure()'s tokens, unless augmentation handed back another record or the decoded sizes tile otherwise
        plan = record.token_plan if record is self.records[source][index] else None
        if plan is None:
            return self.processor(record.conversations, images, add_generation_prompt=False, with_labels=True,
                                  max_length=self.max_seq_length, tiling=tiling)
        return self._planned(record, plan, *self.processor.prepare_images(images, tiling))

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


def _epoch(epoch) -> int:
    """`epoch` as an int (augmentation draws by it: 1.5 or "2" would draw another epoch's pixels), else a
    `DataError`."""
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise DataError(f"epoch must be a whole number >= 0, got {epoch!r}")
    return int(epoch)


def _order_item(k: int, item, sizes: dict[str, int]) -> tuple[str, int]:
    """Item `k` of a dataset order as a ``(source, record index)`` tuple (from a list pair, a numpy integer index),
    or a `DataError` naming what is wrong with it."""
    if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 2:
        raise DataError(f"order item {k} is {item!r}; each item must be a (source, record index) pair")
    source, index = item
    if not isinstance(source, Hashable) or source not in sizes:
        raise DataError(f"order item {k} names source {source!r}, which is not one of the records' sources "
                        f"({', '.join(map(repr, sorted(sizes))) or 'none'})")
    if isinstance(index, bool) or not isinstance(index, numbers.Integral):
        raise DataError(f"order item {k}: the record index of {source!r} must be a whole number, got {index!r}")
    if not 0 <= index < sizes[source]:
        held = f"indices 0 to {sizes[source] - 1}" if sizes[source] else "no records"
        raise DataError(f"order item {k}: record index {index} is out of range for source {source!r} ({held})")
    return source, int(index)


class TileDataset(SupervisedDataset):
    """Item ``i`` is the tiles of record ``order[i]``'s images, cut as the tiling says (the record's tile cap and
    the multi-image share applied, as `VLMProcessor.prepare_images` does), for training on images alone
    (`adapt distill`); records without images should be left out of ``records``. Dropped images as in
    `SupervisedDataset`."""

    def __init__(self, records: dict[str, list[Record]], order: Sequence[tuple[str, int]], skips: SkipLog, tiling,
                 augment=None, epoch: int = 0):
        if not isinstance(tiling, TilingConfig):  # no processor to take one from: None failed on None.tiling
            raise DataError(f"TileDataset: tiling must be a model.tiling.TilingConfig (the tile size and caps to cut "
                            f"the images by), got {tiling!r}")
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


def collate(batch: list[dict | None], processor, pack_to: int | None = None) -> dict:
    """Drop ``None`` items and pad the rest (``processor.pad``: pad id, mask from lengths, labels
    −100), or with ``pack_to`` pack them into rows of at most that many tokens (`pack`). Adds
    ``"segments"`` (which sample each position holds, −1 for padding), ``"sources"`` (one per
    sample, in segment order) and ``"n_dropped"``. Raises `DataError` when every item was dropped.
    Use ``functools.partial(collate, processor=processor)`` as a DataLoader's ``collate_fn``."""
    kept = [item for item in batch if item is not None]
    if not kept:
        raise DataError(f"all {len(batch)} samples of the batch were dropped (an image that does not decode, or "
                        "longer than max_seq_length); see the skip log for each one's reason")
    encoded = [item["encoded"] for item in kept]
    if pack_to:
        out, order = pack(encoded, processor.pad_token_id, pack_to)
    else:
        out, order = processor.pad(encoded), range(len(kept))
        rows = torch.arange(len(kept))[:, None].expand_as(out["attention_mask"])
        out["segments"] = torch.where(out["attention_mask"].bool(), rows, -1)
    out["sources"] = [kept[i]["source"] for i in order]
    out["n_dropped"] = len(batch) - len(kept)
    return out


def pack(samples: Sequence[Encoded], pad_token_id: int, capacity: int) -> tuple[dict, list[int]]:
    """Several samples per row (first fit, longest first; rows hold at most ``capacity`` tokens unless one
    sample alone is longer) for training without a mask: ``position_ids`` restart at 0 with each sample,
    which is how transformers' causal LMs tell packed samples apart and keep each one attending to
    itself alone. No label crosses a sample boundary: each sample's first label is ignored (it is
    never a target unpacked either). Returns the batch (``input_ids``, ``labels``, ``position_ids``,
    ``segments``, ``pixel_values`` in row order) and the order of the samples in it."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(samples)), key=lambda i: -len(samples[i].input_ids)):
        n = len(samples[i].input_ids)
        fit = next((r for r, free in enumerate(room) if free >= n), None)
        if fit is None:
            rows.append([i])
            room.append(capacity - n)
        else:
            rows[fit].append(i)
            room[fit] -= n
    longest = max(sum(len(samples[i].input_ids) for i in row) for row in rows)
    ids = torch.full((len(rows), longest), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), longest), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), longest), dtype=torch.long)
    segments = torch.full((len(rows), longest), -1, dtype=torch.long)
    order = [i for row in rows for i in row]
    at = 0
    for r, row in enumerate(rows):
        col = 0
        for i in row:
            s, n = samples[i], len(samples[i].input_ids)
            ids[r, col:col + n] = s.input_ids
            labels[r, col + 1:col + n] = s.labels[1:]
            positions[r, col:col + n] = torch.arange(n)
            segments[r, col:col + n] = at
            col, at = col + n, at + 1
        # the padding after the last sample is a sequence of its own (positions from 0), so it never joins one
        positions[r, col:] = torch.arange(longest - col)
    out = {"input_ids": ids, "labels": labels, "position_ids": positions, "segments": segments}
    pixels = [samples[i].pixel_values for i in order if samples[i].pixel_values is not None]
    if pixels:
        out["pixel_values"] = torch.cat(pixels)
    return out, order
