"""The batching rule per device (issue 9): padding only where the device gains from a batch."""

from cantata.models.speed.batching import batch_groups, padding_waste


def test_padding_waste_of_the_benchmark_workload():
    """bench/generation.py --requests 4: 30 s growing 10 % each -> 15 % padded frames."""
    assert abs(padding_waste([750, 825, 907, 998]) - 0.147) < 1e-3
    assert padding_waste([750, 750]) == 0


def test_cpu_batches_only_equal_lengths():
    assert batch_groups("cpu", [750, 825, 750, 998]) == [[3], [1], [0, 2]]


def test_cuda_batches_within_a_quarter_of_padding():
    assert batch_groups("cuda", [750, 825, 907, 998]) == [[3, 2, 1, 0]]
    assert batch_groups("cuda", [250, 1875, 1800]) == [[1, 2], [0]]
