"""The ``attnprobe`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _demo(_arguments: argparse.Namespace) -> int:
    import torch

    import attnprobe
    from attnprobe.models import ConformerAED, ConformerAEDConfig

    torch.manual_seed(0)
    model = ConformerAED(ConformerAEDConfig.tiny(vocab_size=32, blocks=4)).eval()
    features = torch.randn(2, 240, 80)
    feature_lengths = torch.tensor([240, 180])
    labels = torch.randint(2, 32, (2, 12))
    label_lengths = torch.tensor([12, 9])
    with attnprobe.trace(model) as t:
        model(features, feature_lengths, labels, label_lengths)
    print(t.summary())
    attention = t["encoder.3.self_attn"]
    print(f"\nencoder.3.self_attn attention {tuple(attention.attention.shape)} "
          f"(batch, heads, query_frames, key_frames); valid frames per sequence "
          f"{attention.lengths.tolist()}")
    cross = t["decoder.0.cross_attn"]
    print(f"decoder.0.cross_attn attention {tuple(cross.attention.shape)}; label positions "
          f"{cross.lengths.tolist()}, encoder frames {cross.key_lengths.tolist()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnprobe",
        description="Hooks, reversal probes and gradient alignment for transformer ASR models.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="trace an embedded model and show what was captured")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return int(arguments.run(arguments))
