"""Batched vector-Jacobian products equal one backward per cotangent, and fail loudly off-path."""

from __future__ import annotations

import pytest
import torch

from attnprobe.errors import GradientUnavailableError
from attnprobe.vjp import batched_vjp


def test_batched_equals_a_loop_and_chunks_do_not_matter() -> None:
    torch.manual_seed(0)
    inputs = torch.randn(3, 5, requires_grad=True)
    output = (inputs @ torch.randn(5, 4)).tanh()
    cotangents = torch.randn(6, 3, 4)
    expected = torch.stack([torch.autograd.grad(output, inputs, c, retain_graph=True)[0]
                            for c in cotangents])
    (all_at_once,) = batched_vjp(output, inputs, cotangents, retain_graph=True)
    (chunked,) = batched_vjp(output, inputs, cotangents, chunk_size=4)
    assert torch.allclose(all_at_once, expected, atol=1e-6)
    assert torch.allclose(chunked, expected, atol=1e-6)


def test_a_tensor_off_the_path_is_an_error_not_zeros() -> None:
    inputs = torch.randn(4, 2, requires_grad=True)
    output = inputs * 2
    copy_after_the_fact = inputs.detach().t().requires_grad_(True)
    with pytest.raises(GradientUnavailableError, match="not on the autograd path"):
        batched_vjp(output, copy_after_the_fact, torch.randn(2, 4, 2))


def test_inference_mode_is_refused() -> None:
    with torch.inference_mode():
        output = torch.ones(2)
    with torch.inference_mode(), pytest.raises(GradientUnavailableError, match="inference_mode"):
        batched_vjp(output, torch.ones(2), torch.ones(1, 2))


def test_the_chunk_search_gives_the_same_gradients_as_fixed_chunks() -> None:
    torch.manual_seed(1)
    inputs = torch.randn(2, 6, 3, requires_grad=True)
    output = torch.nn.functional.layer_norm(inputs @ torch.randn(3, 5), (5,)).relu()
    cotangents = torch.randn(11, 2, 6, 5)
    (searched,) = batched_vjp(output, inputs, cotangents, retain_graph=True, max_chunk_size=4)
    (fixed,) = batched_vjp(output, inputs, cotangents, chunk_size=3)
    assert searched.shape == (11, 2, 6, 3)
    assert torch.allclose(searched, fixed, atol=1e-6)
