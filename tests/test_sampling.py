"""sweep.engine.length_sampler.LengthGroupedSampler: a permutation per epoch, deterministic per
seed+epoch, DistributedSampler's per-rank contract, and much less padding than a shuffle."""
from __future__ import annotations

import random

import pytest
from torch.utils.data import RandomSampler
from torch.utils.data.distributed import DistributedSampler

from sweep.data.tokenize import TokenizedCompletion, TokenizedPair
from sweep.engine.length_sampler import LengthGroupedSampler, item_length

_RNG = random.Random(3)
LENGTHS = [_RNG.randint(5, 300) for _ in range(203)]  # not a multiple of any batch


def batches_of(order: list[int], size: int) -> list[list[int]]:
    return [order[i:i + size] for i in range(0, len(order), size)]


def pad_share(batches: list[list[int]]) -> float:
    real = sum(LENGTHS[i] for b in batches for i in b)
    padded = sum(len(b) * max(LENGTHS[i] for i in b) for b in batches)
    return 1 - real / padded


def test_every_row_once_per_epoch_and_little_padding():
    sampler = LengthGroupedSampler(LENGTHS, 8, seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(len(LENGTHS))) and len(sampler) == len(LENGTHS)
    shuffled = list(RandomSampler(range(len(LENGTHS))))
    assert pad_share(batches_of(order, 8)) < 0.1 < 0.3 < pad_share(batches_of(shuffled, 8))


def test_deterministic_per_seed_and_epoch():
    a, b = LengthGroupedSampler(LENGTHS, 8, seed=1), LengthGroupedSampler(LENGTHS, 8, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == sorted(first)
    assert list(LengthGroupedSampler(LENGTHS, 8, seed=2)) != first


def test_longest_batch_comes_first():
    order = list(LengthGroupedSampler(LENGTHS, 8, seed=5))
    assert max(LENGTHS) in [LENGTHS[i] for i in order[:8]]


@pytest.mark.parametrize("replicas", [2, 3])
def test_ranks_follow_the_distributed_sampler_contract(replicas):
    samplers = [LengthGroupedSampler(LENGTHS, 4, num_replicas=replicas, rank=r, seed=7) for r in range(replicas)]
    reference = DistributedSampler(range(len(LENGTHS)), num_replicas=replicas, rank=0, shuffle=True)
    assert all(isinstance(s, DistributedSampler) for s in samplers)  # prepare_data_loader keeps it
    per_rank = [list(s) for s in samplers]
    assert all(len(p) == len(s) == len(reference) for p, s in zip(per_rank, samplers))
    assert set().union(*per_rank) == set(range(len(LENGTHS)))  # wrap-around padding repeats a few rows
    # Step k of every rank comes from the same global batch: similar lengths across ranks too.
    global_order = samplers[0].global_order()
    for k, rank_batches in enumerate(zip(*(batches_of(p, 4) for p in per_rank))):
        if all(len(b) == 4 for b in rank_batches):
            assert sorted(i for b in rank_batches for i in b) == sorted(global_order[k * 4 * replicas:(k + 1) * 4 * replicas])


def test_evaluation_order_is_sorted_and_sharded():
    samplers = [LengthGroupedSampler(LENGTHS, 8, num_replicas=2, rank=r, shuffle=False) for r in range(2)]
    first, second = list(samplers[0]), list(samplers[1])
    # Sorted, then padded to an even split by wrapping around to the shortest row.
    assert [LENGTHS[i] for i in first + second] == sorted(LENGTHS) + [min(LENGTHS)]
    assert list(samplers[0]) == first  # epochs do not change it


def test_item_length_of_pairs_counts_the_longer_completion():
    pair = TokenizedPair([1, 2, 3], [4] * 5, [6] * 9)
    assert item_length(pair) == item_length((0, pair)) == 12
    assert item_length(TokenizedCompletion([1], [2, 3], True)) == 3


def test_worker_loader_uses_it_by_config():
    from sweep.config.schema import PrefsweepConfig
    from sweep.engine.collate import PairCollator
    from sweep.engine.loop import make_loader

    items = [TokenizedPair([1] * (n % 7 + 1), [2] * (n % 11 + 1), [3] * (n % 5 + 1)) for n in range(40)]
    grouped = make_loader(items, PrefsweepConfig(), PairCollator(0), batch_size=4, shuffle=True, num_replicas=2, rank=1)
    assert isinstance(grouped.sampler, LengthGroupedSampler) and grouped.sampler.rank == 1 and len(grouped) == 5
    batch = next(iter(grouped))
    assert batch["input_ids"].shape[0] == 8 and batch["index"].shape == (4,)
    plain = PrefsweepConfig.model_validate({"train": {"group_by_length": False}})
    assert isinstance(make_loader(items, plain, PairCollator(0), batch_size=4, shuffle=True).sampler, RandomSampler)
