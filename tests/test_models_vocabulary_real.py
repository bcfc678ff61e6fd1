"""Acceptance: a 32k vocabulary trained on the built-in corpus's train split leaves under 0.1% of the
tokens of held-out (test split) text unknown, in every built-in language and on the English side."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from mmkd.models.init_student import corpus_training_texts
from mmkd.models.vocabulary import train_wordpiece, unknown_rate

LANGS = ("de", "fr", "zh_CN", "ar", "eu", "xh")
LOCALE_DIR = Path("/usr/share/locale")
MAX_UNKNOWN_RATE = 0.001

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def held_out_and_tokenizer():
    """(test-split texts by language, English side under "en"), and the vocabulary trained on train."""
    missing = [lang for lang in LANGS if not any((LOCALE_DIR / lang / "LC_MESSAGES").glob("*.mo"))]
    if missing:
        pytest.skip(f"no gettext catalogs for {missing} in {LOCALE_DIR}")
    from mmkd.corpus.builtin import build_builtin_corpus

    corpus, _ = build_builtin_corpus(langs=LANGS)
    held_out = defaultdict(list)
    for lang, tgt in zip(corpus["test"]["lang"], corpus["test"]["tgt"]):
        held_out[lang].append(tgt)
    held_out["en"] = list(dict.fromkeys(corpus["test"]["src"]))
    return held_out, train_wordpiece(corpus_training_texts(corpus))


@pytest.mark.parametrize("lang", (*LANGS, "en"))
def test_held_out_unknown_rate(held_out_and_tokenizer, lang):
    held_out, tokenizer = held_out_and_tokenizer
    assert held_out[lang], f"no {lang} text in the test split"
    assert unknown_rate(tokenizer, held_out[lang]) < MAX_UNKNOWN_RATE
