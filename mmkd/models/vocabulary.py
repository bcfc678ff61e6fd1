"""The student's multilingual WordPiece vocabulary: training it, and measuring how often it fails.

Text handling (BertNormalizer + BertPreTokenizer, as in multilingual BERT): control characters
removed, whitespace unified, CJK ideographs split into one word each, words split at whitespace and
punctuation, then lower-cased. Accents are NOT stripped: in many languages they carry meaning
(French "où"/"ou", German "schön"/"schon", Basque, Vietnamese, Arabic harakat), and a multilingual
student has to tell such words apart; that the English teacher strips its own accents is irrelevant
to the student. The whole character alphabet of the training text is kept, each character both
word-initially ("é") and inside a word ("##é"), so a word is [UNK] only when it holds a character
the training text never had.

The result is a transformers `BertTokenizer` (the fast, tokenizers-backed class of transformers 5:
offsets mapping, [CLS] x [SEP] y [SEP] pairs with segment ids), which rebuilds exactly from its
saved vocab.txt and tokenizer_config.json.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer
from transformers import BertTokenizer, PreTrainedTokenizerBase

from mmkd.errors import MMKDError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4, in this order
CONTINUATION_PREFIX = "##"
DEFAULT_VOCAB_SIZE = 32000
DEFAULT_MAX_LENGTH = 512
RATE_BATCH = 1000  # texts tokenised per call when measuring the unknown-token rate


def wordpiece_backend() -> Tokenizer:
    """An untrained WordPiece tokenizer with the student's normalisation and pre-tokenisation."""
    backend = Tokenizer(WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return backend


def continues_words(backend: Tokenizer, characters: set[str]) -> set[str]:
    """The characters that can stand inside a word: those the pre-tokeniser does not split off
    (CJK ideographs and punctuation always form words of their own, so "##c" is useless for them)."""
    def inside_word(char: str) -> bool:
        text = backend.normalizer.normalize_str("x" + char)
        return len(backend.pre_tokenizer.pre_tokenize_str(text)) == 1
    return {char for char in characters if inside_word(char)}


def with_full_alphabet(backend: Tokenizer, trained: list[str], vocab_size: int) -> list[str]:
    """Vocabulary (tokens in id order) holding every character of `trained` word-initially ("c") and,
    where it can stand inside a word, as a continuation ("##c"). Missing forms replace the
    last-learned merges, so the size stays `vocab_size`."""
    prefix = CONTINUATION_PREFIX
    characters = {token for token in trained if len(token) == 1}
    characters |= {token[len(prefix):] for token in trained
                   if token.startswith(prefix) and len(token) == len(prefix) + 1}
    continued = {prefix + char for char in continues_words(backend, characters)}
    required = set(SPECIAL_TOKENS) | characters | continued
    if len(required) > vocab_size:
        raise MMKDError(f"vocab size {vocab_size} is too small: the training text has {len(characters)} "
                        f"characters, {len(required)} tokens with their ## forms and the specials")
    missing = sorted(required.difference(trained))
    merges = [token for token in trained if token not in required][:vocab_size - len(required)]
    kept = required.union(merges)
    return [token for token in trained if token in kept] + missing


def train_wordpiece(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE,
                    model_max_length: int = DEFAULT_MAX_LENGTH, progress: bool = False) -> BertTokenizer:
    """Train a lower-casing, accent-keeping WordPiece vocabulary of `vocab_size` tokens on `texts`
    (`progress`: the tokenizers trainer's own progress bars).
    Not reproducible bit for bit: the tokenizers trainer breaks ties between merges of equal count in
    hash-map order, which changes from process to process (huggingface/tokenizers#1794), so two
    trainings on the same texts share nearly every token but not every id (measured here: 31,991 of
    32,000 tokens on the main corpus). A student keeps the vocabulary it was built with (its
    tokenizer.json), and `mmkd pipeline` reuses a student already built."""
    backend = wordpiece_backend()
    trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                               continuing_subword_prefix=CONTINUATION_PREFIX, show_progress=progress)
    backend.train_from_iterator(texts, trainer)
    trained_ids = backend.get_vocab()
    trained = sorted(trained_ids, key=trained_ids.get)
    if len(trained) == len(SPECIAL_TOKENS):
        raise MMKDError("vocabulary training found no text: the training text is empty")
    vocab = {token: index for index, token in enumerate(with_full_alphabet(backend, trained, vocab_size))}
    return BertTokenizer(vocab=vocab, do_lower_case=True, strip_accents=False, tokenize_chinese_chars=True,
                         model_max_length=model_max_length)


def unknown_rate(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str]) -> float:
    """Fraction of the tokens produced for `texts` (specials excluded) that are the unknown token;
    0.0 when no token is produced."""
    unknown = total = 0
    for batch in batches(texts, RATE_BATCH):
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            total += len(ids)
            unknown += ids.count(tokenizer.unk_token_id)
    return unknown / total if total else 0.0


def batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    """Consecutive lists of `size` texts (the last one shorter)."""
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
