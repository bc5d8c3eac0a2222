"""attnprobe's own Conformer attention encoder-decoder (the model of Schmitt et al., ICASSP 2025).

Module names are stable: the hook layer finds sites by them (``encoder.frontend``,
``encoder.blocks.3.self_attn.attention``, ``decoder.cross_attn``, ...).
"""

from .aed import AEDOutput, ConformerAED
from .attention import AdditiveAttention, AttentionMemory, RelativePositionSelfAttention
from .config import BLANK_INDEX, END_OF_SENTENCE_INDEX, FIRST_REAL_LABEL, ConformerAEDConfig
from .conformer import (
    ConformerBlock,
    ConformerEncoder,
    ConvolutionModule,
    FeedForward,
    SelfAttentionBranch,
    SinusoidalPositions,
)
from .decoder import DecoderOutput, DecoderState, LSTMDecoder
from .frontend import VGGFrontend

__all__ = [
    "BLANK_INDEX",
    "END_OF_SENTENCE_INDEX",
    "FIRST_REAL_LABEL",
    "AEDOutput",
    "AdditiveAttention",
    "AttentionMemory",
    "ConformerAED",
    "ConformerAEDConfig",
    "ConformerBlock",
    "ConformerEncoder",
    "ConvolutionModule",
    "DecoderOutput",
    "DecoderState",
    "FeedForward",
    "LSTMDecoder",
    "RelativePositionSelfAttention",
    "SelfAttentionBranch",
    "SinusoidalPositions",
    "VGGFrontend",
]
