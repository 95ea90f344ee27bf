"""The batching rule per device (issue 9): padding only where the device gains from a batch (the
scheduler's side of it is tests/test_jobs.py::test_scheduler_pads_a_batch_only_as_far_as_the_device_gains_from_it)."""

from cantata.models.speed.batching import max_padding_waste, padding_waste


def test_padding_waste_of_the_benchmark_workload():
    """bench/generation.py --requests 4: 30 s growing 10 % each -> 15 % padded frames."""
    assert abs(padding_waste([750, 825, 907, 998]) - 0.147) < 1e-3
    assert padding_waste([750, 750]) == 0


def test_a_cpu_pads_nothing_and_a_gpu_up_to_a_quarter():
    assert max_padding_waste("cpu") == 0.0
    assert max_padding_waste("cuda:1") == 0.25
    assert padding_waste([750, 825, 907, 998]) <= max_padding_waste("cuda") < padding_waste([250, 1875])
