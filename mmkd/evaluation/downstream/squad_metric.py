"""SQuAD v1.1 exact match and F1, as the official evaluate-v1.1.py script defines them.

Answers are normalised (lower case, punctuation, the articles a/an/the and extra white space removed);
F1 is over the bag of normalised tokens; each prediction scores its best gold answer.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence

PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and articles, collapse white space (official order)."""
    text = "".join(char for char in text.lower() if char not in PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token-level F1 between the normalised prediction and gold answer."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Mapping[str, str], golds: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """{"f1", "exact_match"} in percent over the questions of `golds` (a missing prediction scores 0)."""
    if not golds:
        return {"f1": 0.0, "exact_match": 0.0}
    f1 = exact = 0.0
    for qid, answers in golds.items():
        prediction = predictions.get(qid)
        if prediction is None:
            continue
        f1 += max(f1_score(prediction, answer) for answer in answers)
        exact += max(exact_match_score(prediction, answer) for answer in answers)
    return {"f1": 100.0 * f1 / len(golds), "exact_match": 100.0 * exact / len(golds)}
