"""SQuAD-style question answering features and answers (the transformers run_qa.py approach).

A context longer than `max_length` is cut into windows that overlap by `doc_stride` tokens
(`return_overflowing_tokens`); offset mappings locate the answer's tokens in each window (training)
and turn the best start/end logits back into a span of the context (evaluation). The question comes
first, the context second, as every right-padding tokenizer expects.
"""

from __future__ import annotations

from torch import Tensor
from transformers import PreTrainedTokenizerBase

N_BEST = 20  # start and end candidates tried per window
MAX_ANSWER_TOKENS = 30


def encode_windows(tokenizer: PreTrainedTokenizerBase, examples: list[dict], max_length: int, doc_stride: int):
    """The tokenizer's windows of (question, context) pairs, with offsets and the example of each window."""
    return tokenizer([example["question"].lstrip() for example in examples],
                     [example["context"] for example in examples], truncation="only_second",
                     max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                     return_offsets_mapping=True)


def model_inputs(encoding, index: int) -> dict[str, list[int]]:
    return {key: encoding[key][index] for key in ("input_ids", "token_type_ids", "attention_mask") if key in encoding}


def qa_train_features(tokenizer: PreTrainedTokenizerBase, examples: list[dict], max_length: int,
                      doc_stride: int) -> list[dict]:
    """One feature per window, labelled with the first answer's token span (the [CLS] position, 0,
    for a window that does not hold the whole answer)."""
    encoding = encode_windows(tokenizer, examples, max_length, doc_stride)
    features = []
    for i, offsets in enumerate(encoding["offset_mapping"]):
        answers = examples[encoding["overflow_to_sample_mapping"][i]]["answers"]
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        context = [t for t, sequence in enumerate(encoding.sequence_ids(i)) if sequence == 1]
        start = end = 0
        if context and offsets[context[0]][0] <= start_char and offsets[context[-1]][1] >= end_char:
            start = next(t for t in context if offsets[t][1] > start_char)
            end = next(t for t in reversed(context) if offsets[t][0] < end_char)
        features.append({**model_inputs(encoding, i), "start_positions": start, "end_positions": end})
    return features


def qa_eval_features(tokenizer: PreTrainedTokenizerBase, examples: list[dict], max_length: int,
                     doc_stride: int) -> tuple[list[dict], list[int], list[list[tuple[int, int] | None]]]:
    """Model inputs of each window, the example it belongs to, and its offsets (None off the context)."""
    encoding = encode_windows(tokenizer, examples, max_length, doc_stride)
    offsets = [[tuple(span) if sequence == 1 else None for span, sequence in zip(spans, encoding.sequence_ids(i))]
               for i, spans in enumerate(encoding["offset_mapping"])]
    features = [model_inputs(encoding, i) for i in range(len(offsets))]
    return features, list(encoding["overflow_to_sample_mapping"]), offsets


def best_answers(examples: list[dict], example_of: list[int], offsets: list[list[tuple[int, int] | None]],
                 start_logits: list[Tensor], end_logits: list[Tensor]) -> dict[str, str]:
    """Question id -> the context span with the highest start + end logit over all its windows
    (spans inside the context, end not before start, at most MAX_ANSWER_TOKENS tokens); "" if none."""
    best: dict[int, tuple[float, str]] = {}
    for window, example_index in enumerate(example_of):
        spans, starts, ends = offsets[window], start_logits[window], end_logits[window]
        top_starts = starts[: len(spans)].topk(min(N_BEST, len(spans))).indices.tolist()
        top_ends = ends[: len(spans)].topk(min(N_BEST, len(spans))).indices.tolist()
        for start in top_starts:
            for end in top_ends:
                if spans[start] is None or spans[end] is None or not 0 <= end - start < MAX_ANSWER_TOKENS:
                    continue
                score = float(starts[start] + ends[end])
                if example_index not in best or score > best[example_index][0]:
                    context = examples[example_index]["context"]
                    best[example_index] = (score, context[spans[start][0]: spans[end][1]])
    return {example["id"]: best[i][1] if i in best else "" for i, example in enumerate(examples)}
