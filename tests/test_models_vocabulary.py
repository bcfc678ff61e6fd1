"""WordPiece training rules and the unknown-token rate, on small hand-written texts."""

from __future__ import annotations

import pytest

from mmkd.errors import MMKDError
from mmkd.models.vocabulary import SPECIAL_TOKENS, train_wordpiece, unknown_rate

TEXTS = [
    "Élan vital et école ouverte",
    "Ōsaka und Überraschung",
    "Écrire encore une école",
    "电脑打开文件",
    "Über alles, überall!",
] * 3


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(TEXTS, vocab_size=120)


def test_size_is_exact_when_the_text_allows_more_merges():
    assert len(train_wordpiece(TEXTS, vocab_size=70)) == 70


def test_special_ids(tokenizer):
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3, 4]
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id) == (0, 1)


def test_lower_cases_and_keeps_accents(tokenizer):
    tokens = tokenizer.tokenize("École ÜBER")
    assert "".join(token.removeprefix("##") for token in tokens) == "écoleüber"


def test_characters_seen_only_word_initially_can_continue_words(tokenizer):
    # "é", "ō" and "ü" start words in TEXTS; inside a word they need their "##" form.
    assert {"##é", "##ō", "##ü"} <= set(tokenizer.get_vocab())
    tokens = tokenizer.tokenize("aéō tü")
    assert "[UNK]" not in tokens and "".join(tokens).replace("##", "") == "aéōtü"


def test_cjk_ideographs_are_single_tokens_without_continuation_forms(tokenizer):
    assert tokenizer.tokenize("打开电脑") == ["打", "开", "电", "脑"]
    assert "##打" not in tokenizer.get_vocab()


def test_unknown_rate_counts_unknown_tokens(tokenizer):
    vocab = tokenizer.get_vocab()
    words = [token for token in vocab if len(token) > 1 and token.isalpha()][:5]
    assert len(words) == 5
    text = " ".join(words[:3]) + " λόγος " + " ".join(words[3:])  # Greek: never seen, one [UNK]
    assert tokenizer.tokenize(text) == [*words[:3], "[UNK]", *words[3:]]
    assert unknown_rate(tokenizer, [text, ""]) == pytest.approx(1 / 6)
    assert unknown_rate(tokenizer, []) == 0.0


def test_vocab_smaller_than_alphabet_is_refused():
    with pytest.raises(MMKDError, match="vocab size 20 is too small"):
        train_wordpiece(TEXTS, vocab_size=20)


def test_empty_text_is_refused():
    with pytest.raises(MMKDError, match="empty"):
        train_wordpiece([], vocab_size=100)
