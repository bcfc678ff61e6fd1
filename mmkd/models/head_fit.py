"""A least-squares start for the projection heads P_s and P_w, in place of a random linear map.

Fitted on English sentences x, so that before distillation P_s e^S(x) ~ e^T(x) (sentence embeddings,
size d_E) and P_w h^S_k ~ h^T_a (token states, size d_T: last-layer student states at tokens
span-matched to teacher tokens, see mmkd.data.span_matching). A random P_s makes the student's first
SentA steps learn the map rather than the encoder, and pulls every sentence towards the teacher's mean
embedding; the fitted map starts the student where its initialisation already is. Ridge regression
without intercept (the heads are linear maps), in float64.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from mmkd.data.span_matching import match_spans, token_spans
from mmkd.data.tokenization import encode_texts
from mmkd.errors import MMKDError
from mmkd.models.pooling import mean_pool
from mmkd.models.student import MMKDStudent
from mmkd.models.teacher import Teacher

FIT_SENTENCES = 2048  # English sentences the heads are fitted on (a seeded sample of the distinct ones)
RIDGE = 1e-3  # ridge penalty, relative to the mean variance of the inputs


@dataclass
class HeadFitReport:
    sentences: int  # English sentences fitted on
    tokens: int  # span-matched (student, teacher) token pairs fitted on
    sentence_cosine: float  # mean cos(P_s e^S(x), e^T(x)) over the sentences, after the fit
    token_cosine: float  # mean cos(P_w h^S_k, h^T_a) over the token pairs, after the fit


def ridge_fit(inputs: Tensor, targets: Tensor, ridge: float = RIDGE) -> Tensor:
    """weight (d_out, d_in) minimising |inputs W^T - targets|^2 + penalty |W|^2 (float64).

    inputs (N, d_in), targets (N, d_out); penalty = ridge x N x the mean square of the inputs.
    """
    x, y = inputs.double(), targets.double()
    gram = x.T @ x
    penalty = ridge * gram.diagonal().mean().clamp_min(1e-12)
    return torch.linalg.solve(gram + penalty * torch.eye(gram.shape[0], dtype=gram.dtype), x.T @ y).T


@torch.no_grad()
def fit_projection_heads(student: MMKDStudent, teacher: Teacher, english: Sequence[str],
                         max_length: int = 128, batch_size: int = 64, seed: int = 0,
                         progress: bool = False) -> HeadFitReport:
    """Set student.heads (P_s, P_w) by ridge regression on up to FIT_SENTENCES distinct sentences of
    `english`, sampled with `seed`; `progress` shows a bar over the encoding batches."""
    texts = list(dict.fromkeys(text for text in english if text.strip()))
    texts = random.Random(seed).sample(texts, min(FIT_SENTENCES, len(texts)))
    if len(texts) < 2:
        raise MMKDError(f"projection head fit: needs at least 2 distinct English sentences, got {len(texts)}")
    sentence_s, sentence_t, token_s, token_t = [], [], [], []
    with student.evaluating():
        for start in tqdm(range(0, len(texts), batch_size), desc="projection head fit", unit="batch",
                          disable=not progress, dynamic_ncols=True):
            batch = texts[start:start + batch_size]
            s_enc = encode_texts(student.tokenizer, batch, max_length=max_length)
            t_enc = encode_texts(teacher.tokenizer, batch, max_length=max_length)
            s_states = student.hidden_states(s_enc["input_ids"], s_enc["attention_mask"]).float()
            t_out = teacher.encode(t_enc["input_ids"], t_enc["attention_mask"], batch)
            sentence_s.append(mean_pool(s_states, s_enc["attention_mask"]))
            sentence_t.append(t_out.sentence_embedding)
            matches = match_spans(token_spans(s_enc, 0, student.tokenizer.all_special_ids),
                                  token_spans(t_enc, 0, teacher.tokenizer.all_special_ids))
            token_s.append(s_states[matches[:, 0], matches[:, 1]])
            token_t.append(t_out.token_states[matches[:, 0], matches[:, 2]])
    pairs = {"sentence": (torch.cat(sentence_s), torch.cat(sentence_t)),
             "word": (torch.cat(token_s), torch.cat(token_t))}
    if pairs["word"][0].shape[0] < 2:
        raise MMKDError("projection head fit: fewer than 2 student tokens match a teacher token by span")
    cosines = {}
    for name, (inputs, targets) in pairs.items():
        head = getattr(student.heads, name)
        head.weight.copy_(ridge_fit(inputs, targets).to(head.weight.dtype))
        cosines[name] = F.cosine_similarity(head(inputs.to(head.weight.dtype)), targets, dim=-1).mean().item()
    return HeadFitReport(sentences=len(texts), tokens=pairs["word"][0].shape[0],
                         sentence_cosine=cosines["sentence"], token_cosine=cosines["word"])
