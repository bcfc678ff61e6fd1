"""MMKDLoss: terms equal the objectives on hand-picked inputs; zero weights skip work; weighted total."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mmkd.models.student import MMKDStudent
from mmkd.objectives import combined
from mmkd.objectives.combined import LossWeights, MMKDLoss
from mmkd.objectives.sentence import senta_loss
from mmkd.objectives.structure import cross_lingual_struca_loss, struca_reference
from mmkd.objectives.tlm import tlm_loss
from mmkd.objectives.word import xwcl_loss

D_S, D_T, VOCAB = 16, 8, 40
LP, LX, LY, LT = 9, 6, 5, 7  # TLM, x alone, y alone, teacher lengths


class TinyStudent(nn.Module):
    """MMKDStudent's interface on a one-layer transformer; records the input_ids of every forward pass."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed, self.segment = nn.Embedding(VOCAB, D_S), nn.Embedding(2, D_S)
        self.encoder = nn.TransformerEncoderLayer(D_S, nhead=2, dim_feedforward=32, dropout=0.0,
                                                  batch_first=True)
        self.lm_head = nn.Linear(D_S, VOCAB)
        self.heads = nn.Module()
        self.heads.word, self.heads.sentence = nn.Linear(D_S, D_T), nn.Linear(D_S, D_T)
        self.calls: list[torch.Tensor] = []

    def hidden_states(self, input_ids, attention_mask, token_type_ids=None):
        self.calls.append(input_ids)
        states = self.embed(input_ids)
        if token_type_ids is not None:
            states = states + self.segment(token_type_ids)
        return self.encoder(states, src_key_padding_mask=attention_mask == 0)

    def mlm_forward(self, input_ids, attention_mask, token_type_ids=None, rows=None):
        hidden = self.hidden_states(input_ids, attention_mask, token_type_ids)
        return self.lm_head(hidden if rows is None else hidden[rows]), hidden

    project_sentence = MMKDStudent.project_sentence  # P_s, as the real student applies it

    def passes(self, batch) -> set[str]:
        """Which inputs the recorded forward passes ran on."""
        keys = ("tlm_input_ids", "x_input_ids", "y_input_ids")
        return {key for call in self.calls for key in keys if call is batch[key]}


def lengths_mask(lengths: list[int], width: int) -> torch.Tensor:
    return (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()


def make_batch(seed: int, b: int = 3):
    """A hand-made batch with architecture.md's keys (fixed widths), and its TeacherOutputs."""
    gen = torch.Generator().manual_seed(seed)
    x_len, t_len = [LX - i % 2 for i in range(b)], [LT - i % 2 for i in range(b)]
    y_len = [LY - i % 3 for i in range(b)]
    tlm_len = [x + y - 1 for x, y in zip(x_len, y_len)]
    tlm_mask = lengths_mask(tlm_len, LP)
    labels = torch.full((b, LP), -100)
    picks = ((torch.arange(LP)[None, :] + torch.arange(b)[:, None]) % 2 == 0) & tlm_mask.bool()
    picks[:, 0] = False
    labels[picks] = torch.randint(5, VOCAB, (b, LP), generator=gen)[picks]
    teacher_mask = lengths_mask(t_len, LT)
    teacher_token_mask = teacher_mask.bool().clone()
    teacher_token_mask[:, 0] = False
    teacher_token_mask[torch.arange(b), torch.tensor(t_len) - 1] = False
    match_x, match_tlm_x, match_tlm_y = [], [], []
    for i in range(b):
        for s in range(1, x_len[i] - 1):  # x token s matches teacher token s (when that is a real token)
            if s < t_len[i] - 1:
                match_x.append((i, s, s))
                match_tlm_x.append((i, s, s))
        for s in range(x_len[i], tlm_len[i] - 1):  # y tokens aligned to teacher token 1 + (s mod 3)
            if s % 2 == 0:
                match_tlm_y.append((i, s, 1 + s % 3))
    batch = {
        "index": torch.arange(b),
        "lang": ["de"] * b,
        "tlm_input_ids": torch.randint(5, VOCAB, (b, LP), generator=gen) * tlm_mask,
        "tlm_attention_mask": tlm_mask,
        "tlm_token_type_ids": (torch.arange(LP)[None, :] >= torch.tensor(x_len)[:, None]).long() * tlm_mask,
        "tlm_labels": labels,
        "x_input_ids": torch.randint(5, VOCAB, (b, LX), generator=gen) * lengths_mask(x_len, LX),
        "x_attention_mask": lengths_mask(x_len, LX),
        "y_input_ids": torch.randint(5, VOCAB, (b, LY), generator=gen) * lengths_mask(y_len, LY),
        "y_attention_mask": lengths_mask(y_len, LY),
        "teacher_attention_mask": teacher_mask,
        "teacher_token_mask": teacher_token_mask,
        "match_x": torch.tensor(match_x),
        "match_tlm_x": torch.tensor(match_tlm_x),
        "match_tlm_y": torch.tensor(match_tlm_y),
    }
    teacher = SimpleNamespace(token_states=torch.randn(b, LT, D_T, generator=gen),
                              sentence_embedding=torch.randn(b, D_T, generator=gen),
                              attention_mask=teacher_mask)
    return batch, teacher


def xwcl_inputs(student: TinyStudent, batch, teacher, hidden_tlm: torch.Tensor) -> tuple:
    """Queries, candidates and positives of XWCL, selected position by position."""
    candidates, where = [], {}
    for b in range(len(batch["index"])):
        for t in range(LT):
            if batch["teacher_token_mask"][b, t]:
                where[b, t] = len(candidates)
                candidates.append(teacher.token_states[b, t])
    queries, positives = [], []
    for b, s, t in torch.cat([batch["match_tlm_x"], batch["match_tlm_y"]]).tolist():
        if batch["tlm_labels"][b, s] != -100:
            queries.append(student.heads.word(hidden_tlm[b, s]))
            positives.append(where[b, t])
    assert len(queries) >= 3
    return torch.stack(queries), torch.stack(candidates), torch.tensor(positives)


def expected_terms(student: TinyStudent, batch, teacher, tau_w: float, tau: float, form: str) -> dict:
    """Each term from the objective functions, on inputs selected here position by position."""
    logits, hidden_tlm = student.mlm_forward(batch["tlm_input_ids"], batch["tlm_attention_mask"],
                                             batch["tlm_token_type_ids"])

    def pooled(side: str) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = student.hidden_states(batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"])
        rows = [hidden[b, : int(n)].mean(dim=0) for b, n in enumerate(batch[f"{side}_attention_mask"].sum(1))]
        return hidden, torch.stack(rows)

    hidden_x, pooled_x = pooled("x")
    _, pooled_y = pooled("y")
    match = batch["match_x"].tolist()
    return {
        "tlm": tlm_loss(logits, batch["tlm_labels"]),
        "xwcl": xwcl_loss(*xwcl_inputs(student, batch, teacher, hidden_tlm), tau_w),
        "senta": senta_loss(student.heads.sentence(pooled_x), student.heads.sentence(pooled_y),
                            teacher.sentence_embedding),
        "struca_sent": struca_reference(pooled_y, teacher.sentence_embedding, tau=tau, form=form),
        "struca_tok": struca_reference(torch.stack([hidden_x[b, s] for b, s, _ in match]),
                                       torch.stack([teacher.token_states[b, t] for b, _, t in match]),
                                       tau=tau, form=form),
    }


WEIGHTS = LossWeights(tlm=0.5, xwcl=2.0, senta=1.5, struca_sent=0.25, struca_tok=3.0)
SENTENCE_STRUCTURE_ONLY = LossWeights(tlm=0, xwcl=0, senta=0, struca_sent=1.0, struca_tok=0)
TOKEN_STRUCTURE_ONLY = LossWeights(tlm=0, xwcl=0, senta=0, struca_sent=0, struca_tok=1.0)
WORD_ONLY = LossWeights(tlm=0, xwcl=1.0, senta=0, struca_sent=0, struca_tok=0)


@pytest.mark.parametrize("form, impl", [("kl", "chunked"), ("pearson", "reference")])
def test_terms_and_total_match_the_objectives(form, impl):
    student = TinyStudent().eval()
    batch, teacher = make_batch(seed=1)
    loss = MMKDLoss(WEIGHTS, tau_w=0.2, struct_tau=0.3, struct_form=form, struct_impl=impl)
    out = loss(student, batch, teacher)
    expected = expected_terms(student, batch, teacher, tau_w=0.2, tau=0.3, form=form)
    assert set(out.terms) == set(expected)
    for name, value in expected.items():
        assert out.terms[name].item() == pytest.approx(value.item(), rel=1e-5), name
    weighted = (0.5 * expected["tlm"] + 2.0 * expected["xwcl"] + 1.5 * expected["senta"]
                + 0.25 * expected["struca_sent"] + 3.0 * expected["struca_tok"])
    assert out.total.item() == pytest.approx(weighted.item(), rel=1e-6)
    params = [p for p in student.parameters() if p.requires_grad]
    got = torch.autograd.grad(out.total, params, allow_unused=True)
    want = torch.autograd.grad(weighted, params, allow_unused=True)
    for g, w in zip(got, want):
        if w is not None:
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("zero, skipped_passes", [
    (("tlm", "xwcl"), {"tlm_input_ids"}),
    (("senta", "struca_tok"), {"x_input_ids"}),
    (("senta", "struca_sent"), {"y_input_ids"}),
    (("xwcl", "struca_sent", "struca_tok"), set()),
    (("tlm", "xwcl", "senta", "struca_sent"), {"tlm_input_ids", "y_input_ids"}),
])
def test_zero_weights_skip_terms_and_passes(zero, skipped_passes, monkeypatch):
    weights = LossWeights(**dict.fromkeys(zero, 0.0))
    skipped = set(zero)
    functions = {"tlm": "tlm_loss", "xwcl": "xwcl_loss", "senta": "senta_loss"}
    for name in skipped & set(functions):  # a zero-weighted term's function is never called
        monkeypatch.setattr(combined, functions[name], lambda *a, **k: pytest.fail("computed a zero term"))
    student = TinyStudent().eval()
    batch, teacher = make_batch(seed=2)
    out = MMKDLoss(weights)(student, batch, teacher)
    assert set(out.terms) == set(combined.TERMS) - skipped
    assert student.passes(batch) == {"tlm_input_ids", "x_input_ids", "y_input_ids"} - skipped_passes
    assert len(student.calls) == 3 - len(skipped_passes)
    total = sum(getattr(weights, name) * value for name, value in out.terms.items())
    assert out.total.item() == pytest.approx(total.item(), rel=1e-6)


@pytest.mark.parametrize("bank_size", [0, 5])
def test_cross_lingual_sentence_structure_runs_the_x_pass_and_matches_its_function(bank_size):
    student = TinyStudent().eval()
    batch, teacher = make_batch(seed=3)
    bank = torch.randn(bank_size, teacher.sentence_embedding.shape[1]) if bank_size else None
    out = MMKDLoss(SENTENCE_STRUCTURE_ONLY, struct_tau=0.3, struct_sent_mode="cross_lingual",
                   struct_bank=bank)(student, batch, teacher)
    assert set(out.terms) == {"struca_sent"} and student.passes(batch) == {"x_input_ids", "y_input_ids"}
    def pooled_side(side: str) -> torch.Tensor:
        hidden = student.hidden_states(batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"])
        lengths = batch[f"{side}_attention_mask"].sum(1).tolist()
        return torch.stack([hidden[b, :n].mean(dim=0) for b, n in enumerate(lengths)])

    pooled = {side: pooled_side(side) for side in ("x", "y")}
    want = cross_lingual_struca_loss(student.heads.sentence(pooled["y"]), student.heads.sentence(pooled["x"]),
                                     teacher.sentence_embedding, tau=0.3, bank=bank)
    assert out.total.item() == pytest.approx(want.item(), rel=1e-5)


def test_detaching_x_keeps_the_value_and_leaves_only_the_translations_gradient():
    batch, teacher = make_batch(seed=4)

    def gradients(detach_x: bool, manual: bool = False) -> tuple[float, list[torch.Tensor]]:
        student = TinyStudent(seed=1).eval()
        if manual:
            pooled = {side: combined.mean_pool(student.hidden_states(batch[f"{side}_input_ids"],
                                                                     batch[f"{side}_attention_mask"]),
                                               batch[f"{side}_attention_mask"]) for side in ("x", "y")}
            value = cross_lingual_struca_loss(student.project_sentence(pooled["y"]),
                                              student.project_sentence(pooled["x"]).detach(),
                                              teacher.sentence_embedding, tau=0.3)
        else:
            value = MMKDLoss(SENTENCE_STRUCTURE_ONLY, struct_tau=0.3, struct_sent_mode="cross_lingual",
                             struct_sent_detach_x=detach_x)(student, batch, teacher).total
        value.backward()
        return value.item(), [p.grad.clone() for p in student.parameters() if p.grad is not None]

    attached, detached, manual = gradients(False), gradients(True), gradients(False, manual=True)
    assert detached[0] == pytest.approx(attached[0], rel=1e-6)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(detached[1], manual[1], strict=True))
    assert not all(torch.allclose(a, b, atol=1e-7) for a, b in zip(detached[1], attached[1], strict=True))
    with pytest.raises(ValueError, match="struct_sent_detach_x applies to cross_lingual"):
        MMKDLoss(struct_sent_detach_x=True)


def test_invalid_configuration_is_refused():
    with pytest.raises(ValueError, match="got xwcl < 0"):
        LossWeights(xwcl=-1.0)
    with pytest.raises(ValueError, match="every weight is 0"):
        LossWeights(0.0, 0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="'kl', 'pearson'"):
        MMKDLoss(struct_form="cos")
    with pytest.raises(ValueError, match="'reference', 'chunked', 'triton', 'auto'"):
        MMKDLoss(struct_impl="fused")


def test_match_outside_teacher_tokens_is_refused():
    student = TinyStudent().eval()
    batch, teacher = make_batch(seed=3)
    batch["tlm_labels"][0, 1] = 7
    batch["match_tlm_x"] = torch.tensor([[0, 1, 0]])  # teacher position 0 is [CLS]
    with pytest.raises(ValueError, match="teacher_token_mask"):
        MMKDLoss(WORD_ONLY)(student, batch, teacher)


def concat_batches(first: tuple, second: tuple) -> tuple:
    """The two ranks' batches as one batch of 2 B pairs (widths are fixed; match rows shift by B)."""
    (b0, t0), (b1, t1) = first, second
    n = len(b0["index"])
    batch = {}
    for key, value in b0.items():
        if key.startswith("match_"):
            batch[key] = torch.cat([value, b1[key] + torch.tensor([n, 0, 0])])
        elif isinstance(value, torch.Tensor):
            batch[key] = torch.cat([value, b1[key]])
        else:
            batch[key] = value + b1[key]
    teacher = SimpleNamespace(**{k: torch.cat([getattr(t0, k), getattr(t1, k)]) for k in vars(t0)})
    return batch, teacher


def averaged_gradients(student: TinyStudent, world: int) -> list[torch.Tensor]:
    """What data-parallel training does: each parameter's gradient averaged over the ranks."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in student.parameters()]
    for grad in grads:
        dist.all_reduce(grad)
        grad /= world
    return grads


def gathering_worker(rank: int, world: int, tmp: str, kind: str) -> None:
    """kind "sentence_word": gathered sentence StrucA (gradients) and XWCL negatives; "token": token StrucA."""
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        student = TinyStudent().eval()
        batch, teacher = make_batch(seed=10 + rank, b=2)
        if kind == "token":
            out = MMKDLoss(TOKEN_STRUCTURE_ONLY, gather_token_rows=True)(student, batch, teacher)
            out.total.backward()
            terms = out.terms
        else:
            sentence = MMKDLoss(SENTENCE_STRUCTURE_ONLY, gather_sentence_rows=True)(student, batch, teacher)
            sentence.total.backward()
            word = MMKDLoss(WORD_ONLY, gather_negatives=True)(student, batch, teacher)
            terms = {**sentence.terms, **word.terms}
        torch.save((terms, averaged_gradients(student, world)), f"{tmp}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gathering_across_two_ranks_equals_the_global_batch(tmp_path):
    mp.spawn(gathering_worker, args=(2, str(tmp_path), "sentence_word"), nprocs=2, join=True)
    batches = [make_batch(seed=10 + rank, b=2) for rank in range(2)]
    batch, teacher = concat_batches(*batches)
    student = TinyStudent().eval()
    global_out = MMKDLoss(SENTENCE_STRUCTURE_ONLY)(student, batch, teacher)
    global_out.total.backward()
    global_grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in student.parameters()]
    inputs = [xwcl_inputs(student, b, t, student.mlm_forward(b["tlm_input_ids"], b["tlm_attention_mask"],
                                                             b["tlm_token_type_ids"])[1]) for b, t in batches]
    all_candidates = torch.cat([candidates for _, candidates, _ in inputs])
    offsets = [0, len(inputs[0][1])]
    for rank in range(2):
        terms, _ = torch.load(tmp_path / f"{rank}.pt")
        assert terms["struca_sent"].item() == pytest.approx(global_out.terms["struca_sent"].item(), rel=1e-5)
        queries, candidates, positives = inputs[rank]
        expected = xwcl_loss(queries, all_candidates, positives + offsets[rank])  # every rank's negatives
        assert terms["xwcl"].item() == pytest.approx(expected.item(), rel=1e-5)
        local_only = xwcl_loss(queries, candidates, positives)
        assert terms["xwcl"].item() != pytest.approx(local_only.item(), rel=1e-3)
    rank_grads = torch.load(tmp_path / "0.pt")[1]
    for got, want in zip(rank_grads, global_grads):  # the averaged gradient is the global loss's gradient
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_gathered_token_structure_equals_the_global_batch_and_differs_from_per_rank(tmp_path):
    mp.spawn(gathering_worker, args=(2, str(tmp_path), "token"), nprocs=2, join=True)
    batches = [make_batch(seed=10 + rank, b=2) for rank in range(2)]
    student = TinyStudent().eval()
    global_out = MMKDLoss(TOKEN_STRUCTURE_ONLY)(student, *concat_batches(*batches))
    global_out.total.backward()
    global_grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in student.parameters()]
    for rank in range(2):
        terms, grads = torch.load(tmp_path / f"{rank}.pt")
        assert terms["struca_tok"].item() == pytest.approx(global_out.terms["struca_tok"].item(), rel=1e-5)
        per_rank = MMKDLoss(TOKEN_STRUCTURE_ONLY)(TinyStudent().eval(), *batches[rank])
        assert terms["struca_tok"].item() != pytest.approx(per_rank.terms["struca_tok"].item(), rel=1e-3)
        for got, want in zip(grads, global_grads):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
