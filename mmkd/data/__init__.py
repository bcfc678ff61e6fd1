"""Batching: token columns (a split tokenised once), span matching, TLM masking, the MMKD collator and
the language sampler."""

from mmkd.data.collate import MMKDCollator
from mmkd.data.masking import mask_tokens
from mmkd.data.sampling import LanguageSampler, language_probabilities
from mmkd.data.span_matching import match_aligned, match_spans, token_spans
from mmkd.data.token_columns import TokenColumns

__all__ = ["LanguageSampler", "MMKDCollator", "TokenColumns", "language_probabilities", "mask_tokens",
           "match_aligned", "match_spans", "token_spans"]
