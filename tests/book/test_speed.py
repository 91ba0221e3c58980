"""optimlib.book.speed: Chapter 11's cost model, traffic counter and table (no timings)."""

from __future__ import annotations

import pytest
import torch

import optimlib
from optimlib.book import speed


def test_model_like_sizes_are_reproducible_and_in_range():
    sizes = speed.model_like_sizes(60, 1_000, 256_000, seed=0)
    assert sizes == speed.model_like_sizes(60, 1_000, 256_000, seed=0)
    assert sizes != speed.model_like_sizes(60, 1_000, 256_000, seed=1)
    assert len(sizes) == 60 and all(1_000 <= n <= 256_000 for n in sizes)
    # log-uniform: about as many below the geometric midpoint (16,000) as above it
    assert 20 <= sum(n < 16_000 for n in sizes) <= 40


@pytest.mark.parametrize(
    ("cls", "options", "states"),
    [
        (optimlib.SGD, {}, 0),
        (optimlib.SGD, {"momentum": 0.9}, 1),
        (optimlib.Adam, {}, 2),
        (optimlib.Adam, {"amsgrad": True}, 3),
    ],
)
def test_state_tensors_are_counted_without_the_step_counter(cls, options, states):
    param = torch.zeros(4, 3, requires_grad=True)
    param.grad = torch.ones(4, 3)
    optimizer = cls([param], lr=0.1, **options)
    optimizer.step()
    assert speed.state_tensors_per_parameter(optimizer) == states


def test_minimum_bytes_follow_reads_and_writes():
    assert speed.minimum_bytes_per_element(2) == 28  # Adam in float32
    assert speed.minimum_bytes_per_element(0) == 12
    assert speed.minimum_bytes_per_element(2, element_size=2) == 14


def test_traffic_counter_counts_reads_writes_and_new_tensors():
    a, b = torch.ones(100), torch.ones(100)
    moved, operations = speed.measure_traffic(lambda: a.add_(b), 100)
    assert moved == 12 and operations == [("add_", 12)]  # reads a, b; writes a
    moved, operations = speed.measure_traffic(lambda: a.sqrt(), 100)
    assert moved == 8 and operations == [("sqrt", 8)]  # reads a; writes a new tensor
    moved, _ = speed.measure_traffic(lambda: a.view(10, 10), 100)
    assert moved == 4  # a view reads its input and writes nothing


def test_interleaved_medians_calls_every_function_in_every_round():
    calls = {"a": 0, "b": 0}

    def counting(name):
        def fn():
            calls[name] += 1

        return fn

    medians = speed.interleaved_medians(
        {name: counting(name) for name in calls}, rounds=3, calls=4, device=torch.device("cpu")
    )
    assert set(medians) == {"a", "b"} and all(value >= 0 for value in medians.values())
    assert calls == {"a": 12, "b": 12}
    times = speed.interleaved_times(
        {name: counting(name) for name in calls}, rounds=5, calls=2, device=torch.device("cpu")
    )
    assert {name: len(values) for name, values in times.items()} == {"a": 5, "b": 5}
    assert calls == {"a": 22, "b": 22}


def test_fused_available_reflects_whether_the_constructor_refuses():
    class Refuses(torch.optim.SGD):
        def __init__(self, params, fused=None, **options):
            if fused:
                raise RuntimeError("no fused path")
            super().__init__(params, lr=0.1, **options)

    assert speed.fused_available(torch.optim.SGD, lr=0.1)
    assert not speed.fused_available(Refuses)
    assert not speed.fused_available(torch.optim.RMSprop, lr=0.1)


def test_the_copy_moves_the_bytes_it_is_asked_to():
    copy = speed.copy_moving(28 * 1_000, torch.device("cpu"))
    _, operations = speed.measure_traffic(copy, 1)
    target = copy()
    # one read of the source and one write of the target, float32 each
    assert 2 * target.numel() * target.element_size() == 28_000
    assert [name for name, _ in operations] == ["copy_"]


def test_the_in_place_kernel_moves_the_bytes_it_is_asked_to_and_keeps_its_values():
    add = speed.streaming_in_place(28 * 1_200, torch.device("cpu"))
    before = add().clone()
    moved, operations = speed.measure_traffic(add, 1)
    # reads a and b, writes a: 12 bytes an element, 28 * 1,200 bytes in all
    assert moved == 28 * 1_200 and [name for name, _ in operations] == ["add_"]
    assert torch.equal(add(), before)


KERNEL = """
cpp_fused_0 = async_compile.cpp_pybinding(...)
extern "C"  void  kernel(const float* in_ptr0, const float* in_ptr1, float* out_ptr0)
{
    for(int64_t x0=static_cast<int64_t>(0L); x0<static_cast<int64_t>(ks0); x0+=16)
    {
        auto tmp0 = at::vec::Vectorized<float>::loadu(out_ptr0 + static_cast<int64_t>(x0), 16);
        auto tmp1 = at::vec::Vectorized<float>::loadu(in_ptr1 + static_cast<int64_t>(x0), 16);
        auto tmp2 = in_ptr0[static_cast<int64_t>(0L)];
        tmp3.store(out_ptr0 + static_cast<int64_t>(x0), 16);
    }
}
"""


def test_kernel_arrays_counts_kernels_and_the_arrays_they_stream():
    assert speed.kernel_arrays(KERNEL) == (1, {"out_ptr0", "in_ptr1"}, {"out_ptr0"})
    assert speed.kernel_arrays(KERNEL + KERNEL)[0] == 2
    assert speed.kernel_arrays("") == (0, set(), set())


def test_rates_and_table():
    assert speed.gigabytes_per_second(28, 1_000_000, 0.001) == pytest.approx(28.0)
    text = speed.table([("Adam", 2, "28.0")], ("name", "k", "bytes"), (6, 2, 6))
    assert text.splitlines() == ["name    k  bytes", "----------------", "Adam    2   28.0"]
    with pytest.raises(ValueError, match="3 columns"):
        speed.table([("Adam", 2)], ("name", "k", "bytes"), (6, 2, 6))
