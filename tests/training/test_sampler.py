"""The sampler: a resumable, rank-split order of micro-batches, and the number of steps it makes."""

import random

from support import micro_batches

from solo_cli.training.config import TrainConfig
from solo_cli.training.sampler import epoch_order, epoch_steps, rank_share, total_steps


def epoch_batches(examples, global_batch, seed, epoch, lengths=None, accum=1):
    """The global micro-batches of one epoch in training order: :func:`epoch_steps`, flat."""
    return [batch for step in epoch_steps(examples, global_batch, seed, epoch, lengths, accum) for batch in step]


def test_epoch_order_is_deterministic_and_a_permutation():
    first = epoch_order(50, seed=3, epoch=0)
    assert first == epoch_order(50, seed=3, epoch=0)
    assert sorted(first) == list(range(50))


def test_epoch_order_changes_with_epoch_and_seed():
    orders = [epoch_order(50, seed=3, epoch=e) for e in range(4)]
    assert len({tuple(o) for o in orders}) == 4
    assert epoch_order(50, seed=4, epoch=0) != orders[0]
    assert epoch_order(50, seed=3, epoch=0) != list(range(50))


def test_epoch_order_small():
    assert epoch_order(0, seed=0, epoch=0) == []
    assert epoch_order(1, seed=0, epoch=5) == [0]


def test_epoch_batches_cover_the_epoch_in_its_order():
    batches = epoch_batches(list(range(10)), 4, seed=1, epoch=2)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sum(batches, []) == epoch_order(10, seed=1, epoch=2)


def test_micro_batches_resume_mid_stream_and_cross_epochs():
    examples = list(range(10))
    whole = micro_batches(examples, 3, seed=5)
    stream = [next(whole) for _ in range(9)]  # 4 per epoch: the last one short
    assert [len(b) for b in stream[:4]] == [3, 3, 3, 1]
    assert sorted(sum(stream[:4], [])) == examples
    resumed = micro_batches(examples, 3, seed=5, start=6)
    assert [next(resumed) for _ in range(3)] == stream[6:9]


def test_total_steps_from_epochs_or_max_steps():
    cfg = TrainConfig(batch_size=4, grad_accum=2, epochs=3)
    assert total_steps(cfg, 10) == 6  # steps of 8 examples: 2 an epoch (8, then 2), never borrowing from the next
    assert total_steps(cfg, 10, world_size=2) == 3  # steps of 16: 1 an epoch
    assert total_steps(TrainConfig(max_steps=7), 10) == 7


def _lengths(n, seed=0):
    rng = random.Random(seed)
    return [rng.randint(3, 200) for _ in range(n)]


def test_grouped_batches_are_deterministic_and_cover_each_epoch_once():
    lengths = _lengths(1000)
    for epoch in range(3):
        batches = epoch_batches(range(1000), 8, seed=2, epoch=epoch, lengths=lengths)
        assert batches == epoch_batches(range(1000), 8, seed=2, epoch=epoch, lengths=lengths)
        assert sorted(sum(batches, [])) == list(range(1000))
        assert [len(b) for b in batches] == [8] * 125
    assert epoch_batches(range(1000), 8, 2, 0, lengths) != epoch_batches(range(1000), 8, 2, 1, lengths)


def test_grouped_batches_pad_less_and_keep_a_short_batch_last():
    lengths = _lengths(1003)

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    grouped = epoch_batches(range(1003), 8, seed=0, epoch=0, lengths=lengths)
    plain = epoch_batches(range(1003), 8, seed=0, epoch=0)
    assert padding(grouped) < padding(plain) / 5
    assert [len(b) for b in grouped] == [len(b) for b in plain]  # 125 full batches, then the 3 left over
    assert max(lengths[i] for i in grouped[0]) == max(lengths)  # the widest batch first: out of memory shows at once
    firsts = {tuple(epoch_batches(range(1003), 8, seed=0, epoch=e, lengths=lengths)[1]) for e in range(4)}
    assert len(firsts) == 4  # the batch order is shuffled each epoch


def test_grouped_stream_resumes_mid_epoch_and_splits_over_ranks():
    examples, lengths = list(range(100)), _lengths(100)
    whole = micro_batches(examples, 6, seed=5, lengths=lengths)
    stream = [next(whole) for _ in range(40)]  # 17 a global batch an epoch: past two epochs
    resumed = micro_batches(examples, 6, seed=5, start=23, lengths=lengths)
    assert [next(resumed) for _ in range(17)] == stream[23:40]
    ranks = [micro_batches(examples, 3, seed=5, rank=r, world_size=2, lengths=lengths) for r in range(2)]
    assert [next(ranks[0]) + next(ranks[1]) for _ in range(40)] == stream


def test_group_by_length_is_on_by_default():
    assert TrainConfig().group_by_length is True


def test_grouped_steps_under_grad_accum_hold_the_examples_of_one_larger_batch():
    lengths = [(i * 37) % 23 + 1 for i in range(203)]
    examples = list(range(203))
    big = epoch_batches(examples, 8, seed=3, epoch=1, lengths=lengths)
    accum = epoch_batches(examples, 4, seed=3, epoch=1, lengths=lengths, accum=2)
    steps = [accum[i] + accum[i + 1] if i + 1 < len(accum) else accum[i] for i in range(0, len(accum), 2)]
    assert steps == big
    assert len(accum) == -(-203 // 4)  # as many micro-batches as without grouping


def test_a_rank_takes_its_slice_of_a_global_batch_and_nothing_past_its_end():
    assert [rank_share([0, 1, 2, 3, 4], rank, 2) for rank in range(3)] == [[0, 1], [2, 3], [4]]
    assert rank_share([0, 1], 1, 2) == []  # an epoch's last, short batch leaves this rank nothing
