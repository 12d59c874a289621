"""The connection's hand-written forward and backward equal autograd's on the plain formula."""

from __future__ import annotations

import pytest
import torch

from solo_cli.engine.modeling_solo import RMS_EPS, SoloConnection


def _reference(conn: SoloConnection, x: torch.Tensor, base: torch.Tensor | None, t: torch.Tensor | None) -> torch.Tensor:
    if conn.source_norm == "rms":
        x = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + RMS_EPS)
    delta = (x @ conn.A.t()) @ conn.B.t()
    delta = delta if t is None else delta * t
    return delta if base is None else base + delta


@pytest.mark.parametrize("gate", ["learned", "schedule", "zero-init"])
@pytest.mark.parametrize("norm", ["rms", "none"])
@pytest.mark.parametrize("with_base", [True, False])
def test_values_and_gradients_equal_autograds(gate, norm, with_base):
    torch.manual_seed(0)
    conn = SoloConnection(8, 3, gate, norm).double()
    torch.nn.init.normal_(conn.B)
    if gate == "schedule":
        conn.set_gate(0.7)  # folded into the matmul
    elif gate == "learned":
        conn.gate.data.fill_(0.7)
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True) * 30  # large, as residual streams are
    base = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True) if with_base else None
    t = None if conn.gate is None else conn.gate
    out, ref = conn(x, base), _reference(conn, x, base, t)
    torch.testing.assert_close(out, ref)
    wrt = [x, conn.A, conn.B] + ([conn.gate] if gate == "learned" else []) + ([base] if with_base else [])
    grad_out = torch.randn_like(out)
    for mine, theirs in zip(torch.autograd.grad(out, wrt, grad_out), torch.autograd.grad(ref, wrt, grad_out)):
        torch.testing.assert_close(mine, theirs)


def test_a_bfloat16_source_and_base_run_the_connection_in_float32():
    torch.manual_seed(0)
    conn = SoloConnection(8, 3, "schedule", "rms")
    conn.set_gate(1.0)
    x, base = torch.randn(2, 5, 8).bfloat16(), torch.randn(2, 5, 8).bfloat16()
    out = conn(x, base)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, base + _reference(conn, x.float(), None, None).bfloat16())
