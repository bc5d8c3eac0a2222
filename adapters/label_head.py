"""Teacher-forced label log-probabilities from a decoder's hidden states, with a backward pass that
skips the output projection.

``log p(a_s) = log_softmax(h_s W^T + b)[a_s]`` has the gradient
``d log p(a_s) / d h_s = W[a_s] - softmax(h_s W^T + b) W``. Autograd would get there through the
``(labels, vocabulary)`` logits: in the batched backward of gradient alignment, one cotangent per
label times every label position times the vocabulary (51864 for Whisper) times the model width,
which dominated the cost of aligning Whisper. :func:`label_log_probs_from_hidden` computes that
direction once, without autograd, and returns the exact log-probabilities carrying exactly that
gradient, so the backward is one multiplication per label.
"""

from __future__ import annotations

import torch
from torch import nn


def label_log_probs_from_hidden(hidden: torch.Tensor, projection: nn.Module,
                                labels: torch.Tensor) -> torch.Tensor:
    """``(batch, labels)`` ``log p(labels | hidden)`` through ``projection`` (the output embedding).

    Args:
        hidden: ``(batch, labels, width)`` decoder outputs at the positions predicting each label.
        projection: the output projection, a linear layer ``width -> vocabulary``; its parameters
            get no gradient.
        labels: ``(batch, labels)`` label ids (any valid id at padded positions).

    Returns:
        The log-probabilities, differentiable with respect to ``hidden`` (first order).
    """
    weight = projection.weight
    bias = getattr(projection, "bias", None)
    with torch.no_grad():
        logits = nn.functional.linear(hidden.detach().to(weight.dtype), weight, bias).float()
        log_probs = logits.log_softmax(-1)
        picked = log_probs.gather(-1, labels[..., None]).squeeze(-1)
        # d log p(a_s) / d h_s: the label's embedding minus the expected embedding.
        direction = weight[labels].float() - log_probs.exp() @ weight.float()
    linear = (hidden.float() * direction).sum(-1)
    # Value: exactly ``picked``; gradient with respect to ``hidden``: exactly ``direction``.
    return picked + (linear - linear.detach())
