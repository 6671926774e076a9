"""Training data: read and validate InternVL chat JSONL sources, mix them, encode them.

    specs = expand_sources(specs)                        # meta .json → one spec per entry
    skips = SkipLog()
    records = {s.name: measure(read_source(s, skips), processor, max_seq_length, skips) for s in specs}
    skips.check({k: len(v) for k, v in records.items()}, max_bad_fraction=0.05)
    plan = MixturePlan.from_sources(specs, records, general_ratio=0.3, seed=0)
    dataset = SupervisedDataset(records, plan.epoch(0), processor, max_seq_length, skips)
    loader = DataLoader(dataset, batch_size=4, collate_fn=functools.partial(collate, processor=processor))
"""

from .dataset import SupervisedDataset, collate
from .mixture import MixturePlan
from .samples import (
    REASONS,
    DataError,
    DataQualityError,
    MissingDataError,
    Record,
    SkipLog,
    SourceSpec,
    expand_sources,
    measure,
    read_source,
    record_tiling,
)

__all__ = [
    "REASONS",
    "DataError",
    "DataQualityError",
    "MissingDataError",
    "MixturePlan",
    "Record",
    "SkipLog",
    "SourceSpec",
    "SupervisedDataset",
    "collate",
    "expand_sources",
    "measure",
    "read_source",
    "record_tiling",
]
