"""Length-grouped sampling: batches of rows with similar lengths, so padding each batch to
its own longest row wastes little work.

`LengthGroupedSampler` is a `DistributedSampler`, so `ray.train.torch.prepare_data_loader`
keeps it (Ray only swaps in its own sampler when the loader's is not distributed) and it
follows DistributedSampler's contract: every rank draws `ceil(N / num_replicas)` indices
per epoch (the list is padded by wrapping around, as DistributedSampler does), all ranks
derive the order from the same `seed + epoch`, and `set_epoch` reshuffles.

The order, per epoch (the recipe of HF's LengthGroupedSampler, extended to ranks):
1. a random permutation of all rows;
2. cut into megabatches of `megabatch_size` global batches; inside each, sort by length,
   so a global batch (batch_size x num_replicas rows) holds rows of similar length while the
   megabatch keeps the content random;
3. shuffle the global batches, then move the one holding the longest row to the front, so
   a batch that does not fit in memory fails at the first step, not hours in;
4. rank r takes block r of every global batch, so each rank's batches are homogeneous too.
Without shuffle (evaluation) rows are simply sorted by length.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data.distributed import DistributedSampler

from sweep.data.tokenize import TokenizedCompletion, TokenizedPair


def item_length(item) -> int:
    """Padded width a row needs: a pair's chosen and rejected rows share one batch, so its
    longer completion decides."""
    if isinstance(item, tuple):  # (index, item) as the loaders hold them
        item = item[1]
    if isinstance(item, TokenizedPair):
        return len(item.prompt_ids) + max(len(item.chosen_ids), len(item.rejected_ids))
    if isinstance(item, TokenizedCompletion):
        return len(item.prompt_ids) + len(item.completion_ids)
    return len(item)


def lengths_of(items) -> list[int]:
    """`item_length` of every row; packed rows (`sweep.data.token_rows.TokenRows`) know them all at once."""
    if hasattr(items, "lengths"):
        return items.lengths().tolist()
    return [item_length(item) for item in items]


class LengthGroupedSampler(DistributedSampler):
    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        megabatch_size: int = 50,
    ):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        if not lengths:
            raise ValueError("no rows to sample")
        # DistributedSampler.__init__ would query torch.distributed; set its fields directly.
        self.dataset = lengths  # only its len() is used by the base class
        self.lengths = [int(n) for n in lengths]
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.drop_last = False
        self.megabatch_size = megabatch_size
        self.num_samples = -(-len(self.lengths) // num_replicas)
        self.total_size = self.num_samples * num_replicas

    def global_order(self) -> list[int]:
        """All ranks' indices for this epoch, padded to total_size, in global-batch order."""
        n = len(self.lengths)
        if not self.shuffle:
            # Stable sort: equal lengths keep file order, so evaluation is reproducible.
            order = sorted(range(n), key=lambda i: self.lengths[i])
            return (order + order[: self.total_size - n])[: self.total_size]
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(n, generator=generator).tolist()
        perm = (perm + perm[: self.total_size - n])[: self.total_size]  # wrap, as DistributedSampler
        global_batch = self.batch_size * self.num_replicas
        mega = global_batch * self.megabatch_size
        batches: list[list[int]] = []
        for start in range(0, len(perm), mega):
            chunk = sorted(perm[start:start + mega], key=lambda i: -self.lengths[i])
            batches += [chunk[k:k + global_batch] for k in range(0, len(chunk), global_batch)]
        # Only the last megabatch can end in a short batch (its size is still a multiple of
        # num_replicas). It goes last, so every rank's DataLoader batches line up with global batches.
        short = [batches.pop()] if len(batches[-1]) < global_batch else []
        batch_order = torch.randperm(len(batches), generator=generator).tolist() if batches else []
        batches = [batches[k] for k in batch_order]
        if batches:
            longest = max(range(len(batches)), key=lambda k: max(self.lengths[i] for i in batches[k]))
            batches.insert(0, batches.pop(longest))
        batches += short
        return [i for batch in batches for i in batch]

    def __iter__(self) -> Iterator[int]:
        order = self.global_order()
        if not self.shuffle:
            # Contiguous slices: each rank evaluates rows of similar length together.
            return iter(order[self.rank * self.num_samples:(self.rank + 1) * self.num_samples])
        mine: list[int] = []
        global_batch = self.batch_size * self.num_replicas
        for start in range(0, len(order), global_batch):
            batch = order[start:start + global_batch]
            share = len(batch) // self.num_replicas  # exact: total_size and batch sizes are multiples of it
            mine += batch[self.rank * share:(self.rank + 1) * share]
        return iter(mine)

    def __len__(self) -> int:
        return self.num_samples
