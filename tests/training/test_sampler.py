"""The sampler: a resumable, rank-split order of micro-batches, and the number of steps it makes."""

from solo_cli.training.config import TrainConfig
from solo_cli.training.sampler import epoch_batches, epoch_order, micro_batches, total_steps


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
    assert total_steps(cfg, 10) == 5  # 3 micro-batches an epoch, 9 in all, 2 a step
    assert total_steps(cfg, 10, world_size=2) == 3  # 2 global micro-batches an epoch
    assert total_steps(TrainConfig(max_steps=7), 10) == 7
