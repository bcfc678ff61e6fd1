"""The small student tokenizer the data tests share (the `student_tokenizer` fixture of conftest.py).

A WordPiece trained here on a few sentences: lowercase, accents kept, CJK characters split, BERT
[CLS]/[SEP] template for single texts and pairs. Training merges until no pair is left, so every
training word is one token. Which intermediate pieces end up in the vocabulary depends on how the
trainer breaks ties (it varies between runs), so tests use only training words, or a training word
plus one letter (greedy WordPiece then gives [word, ##letter] whatever the ties).
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TRAINING_SENTENCES = [
    "The café serves naïve coffee.",
    "Das Café ist naïv und schön.",
    "東京は日本の首都です。",
    "The house is big, and the garden is small!",
    "Das Haus ist groß, und der Garten ist klein!",
    "Where is the station? It is near the river.",
    "Wo ist der Bahnhof? Er ist nahe am Fluss.",
    "The tokenizer splits words into pieces.",
    "Words split into pieces.",
]


def build_student_tokenizer() -> PreTrainedTokenizerFast:
    """WordPiece trained to completion on TRAINING_SENTENCES (every training word is one token)."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=5000, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(TRAINING_SENTENCES, trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )
