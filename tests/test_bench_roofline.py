"""The roofline benchmark's accounting (bench/roofline.py): its floors are only as good as the
FLOPs and bytes it charges and the calls it replays, so those are checked here on the CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench.roofline import OpRecorder, TensorSpec, kind, memory_bytes, replay, tensor_op_flops


def _tensor_flops(recorder: OpRecorder) -> int:
    return sum(tensor_op_flops(op, list(args), out)[0] * count
               for (op, args, _, out), count in recorder.calls.items() if kind(op) != "memory")


def test_fused_step_flops_equal_the_flop_counters_on_the_unfused_step(r1111_pair):
    """The fused conv + ReLU ops (no formula in torch's FlopCounterMode) are charged exactly the
    FLOPs the counter finds in the same step run with eager ops."""
    from bench.grid_train import make_cells
    from core.engine.fused import FusedStitches

    sender, receiver = r1111_pair
    images = torch.randn(8, 1, 28, 28)
    labels = torch.arange(8) % 10

    def step(fuse_relu: bool):
        fused = FusedStitches(make_cells(sender, receiver), torch.device("cpu"), fuse_relu=fuse_relu)
        active = fused._in_group_order(fused.cells)
        optimizer = torch.optim.SGD([p for c in active for p in c.stitch.parameters()], lr=0.01)
        return lambda: fused._train_step(images, labels, active, optimizer)

    fused_step, eager_step = step(True), step(False)  # engines built (and probed) outside the counting
    with OpRecorder() as recorder:
        fused_step()
    fused_ops = {op.split(".")[1] for op, *_ in recorder.calls}
    assert "_convolution_pointwise" in fused_ops, "the step should use oneDNN's fused convolution"
    with FlopCounterMode(display=False) as counter:
        eager_step()
    assert _tensor_flops(recorder) == counter.get_total_flops() > 0


def test_memory_bytes_count_broadcast_operands_once_and_views_as_free():
    x, bias = torch.randn(4, 8, 5, 5), torch.randn(8, 1, 1)
    with OpRecorder() as recorder:
        y = x + bias.expand(8, 5, 5)
        y.view(4, -1)
    (add_key,) = [k for k in recorder.calls if k[0] == "aten.add.Tensor"]
    (view_key,) = [k for k in recorder.calls if k[0] == "aten.view.default"]
    assert memory_bytes(add_key[0], *add_key[1:], is_view=False) == (2 * 800 + 8) * 4
    assert memory_bytes(view_key[0], *view_key[1:], is_view=True) == 0
    assert TensorSpec((3, 4), (0, 1), torch.bfloat16, "cpu").distinct_bytes() == 8


def test_a_replayed_convolution_has_the_recorded_shape_and_layout_and_flops():
    x = torch.randn(2, 6, 9, 9).contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 3, 3, 3)  # groups=2: C_in / groups = 3
    with OpRecorder() as recorder:
        out = F.conv2d(x, w, stride=2, padding=1, groups=2)
    (key,) = [k for k in recorder.calls if kind(k[0]) == "conv"]
    again = replay(recorder.ops[key], key[1], key[2])()
    assert again.shape == out.shape and again.stride() == out.stride()
    flops, place = tensor_op_flops(key[0], list(key[1]), key[3])
    assert place == (4, 5, 5) and flops == 2 * 2 * 25 * 4 * 3 * 9


def test_matrix_products_and_solves_are_charged_their_arithmetic():
    a, b, batch = torch.randn(6, 5), torch.randn(5, 4), torch.randn(3, 6, 5)
    spd = torch.eye(7, dtype=torch.float64) * 2
    with OpRecorder() as recorder:
        a @ b
        torch.addmm(torch.zeros(6, 4), a, b)
        torch.bmm(batch, b.expand(3, 5, 4))
        torch.linalg.solve(spd, torch.ones(7, 2, dtype=torch.float64))
    flops = {k[0]: tensor_op_flops(k[0], list(k[1]), k[3]) for k in recorder.calls if kind(k[0]) != "memory"}
    assert flops["aten.mm.default"] == (2 * 6 * 5 * 4, ("matmul",))
    assert flops["aten.addmm.default"] == (2 * 6 * 5 * 4, ("matmul",))
    assert flops["aten.bmm.default"] == (3 * 2 * 6 * 5 * 4, ("matmul",))
    assert flops["aten._linalg_solve_ex.default"] == (2 * 7**3 // 3 + 2 * 7 * 7 * 2, ("solve",))
