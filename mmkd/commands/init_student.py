"""`mmkd init-student`: train the student's vocabulary on a corpus and initialise the student."""

from __future__ import annotations

import argparse
from collections import defaultdict

from mmkd.models.parallel_embeddings import EMBEDDING_INITS
from mmkd.models.vocabulary import DEFAULT_VOCAB_SIZE

EXAMPLES = """examples:
  mmkd init-student --corpus runs/corpus --out runs/student
  mmkd init-student --corpus runs/corpus --out runs/student-mbert --source bert-base-multilingual-cased
  mmkd init-student --corpus runs/corpus --out runs/student-xlmr --source xlm-roberta-base --keep-vocab
"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Fill in the `init-student` parser (see mmkd/cli.py)."""
    parser.description = ("Train a WordPiece vocabulary on the corpus train split (both sides), copy the "
                          "source encoder's layers (BERT or RoBERTa family) into a BERT masked LM with that "
                          "vocabulary, initialise its word embeddings from the source's; or, with --keep-vocab, "
                          "keep the source masked LM (any family) with its own tokenizer. Then fit projection "
                          "heads to the teacher's size by least squares on English sentences of the train split.")
    parser.epilog = EXAMPLES
    parser.add_argument("--corpus", required=True, help="corpus directory (mmkd corpus output)")
    parser.add_argument("--out", required=True, help="new student directory (must not exist or be empty)")
    parser.add_argument("--source", default=None,
                        help="encoder (path or hub name) whose layers are copied (BERT, RoBERTa family), or "
                             "with --keep-vocab the student itself (any masked LM); default: the teacher")
    parser.add_argument("--teacher", default=None,
                        help="teacher (path or hub name) setting d_T; default: packaged all-MiniLM-L6-v2")
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE,
                        help=f"WordPiece vocabulary size (default {DEFAULT_VOCAB_SIZE})")
    parser.add_argument("--keep-vocab", action="store_true",
                        help="keep --source whole as the student, its own tokenizer and vocabulary (XLM-R, mBERT, "
                             "DistilBERT, MPNet, DeBERTa, ...), and only fit the projection heads")
    parser.add_argument("--embedding-init", choices=EMBEDDING_INITS, default="parallel",
                        help="word embeddings of tokens the source does not know: 'parallel' (default) fits them "
                             "on the train split's pairs so a translation's mean embedding matches its English "
                             "sentence's; 'subwords' keeps the mean of the source's sub-token rows")
    parser.add_argument("--seed", type=int, default=0, help="seed of the freshly initialised weights")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from mmkd.corpus.schema import load_corpus
    from mmkd.models.init_student import corpus_training_texts, init_student

    corpus = load_corpus(args.corpus)
    parallel = args.embedding_init == "parallel" and not args.keep_vocab
    report = init_student(corpus_training_texts(corpus), args.out, source=args.source, teacher=args.teacher,
                          vocab_size=args.vocab_size, seed=args.seed, english=list(corpus["train"]["src"]),
                          keep_vocab=args.keep_vocab, progress=True,
                          translations=list(corpus["train"]["tgt"]) if parallel else ())
    counts = report.embeddings
    if counts is None:
        print(f"vocabulary: the source's own, {report.vocab_size} tokens; its masked LM kept whole")
    else:
        print(f"vocabulary: {report.vocab_size} tokens, trained in {report.vocab_seconds:.1f} s")
        print(f"word embeddings: {counts.copied} copied from the source, {counts.averaged} averaged from its "
              f"sub-tokens, {counts.unknown} from its unknown token")
        fit = report.parallel_fit
        if fit is not None:
            print(f"word embeddings fitted on {fit.pairs} parallel pairs: {fit.fitted} tokens, {fit.iterations} "
                  f"conjugate-gradient iterations (relative residual {fit.relative_residual:.1e}); mean squared "
                  f"error of a sentence's mean embedding to its English's {fit.mse_before:.2e} -> {fit.mse_after:.2e}")
        print(f"MLM transform: {'copied from the source' if report.transform_from_source else 'initialised fresh'}")
    print(f"source: {report.source['name']} (weights sha256 {report.source['weights_sha256']})")
    fit = report.head_fit
    print(f"projection heads: P_w {report.d_student} -> {report.d_teacher}, P_s {report.d_student} -> "
          f"{report.d_sentence}, fitted on {fit.sentences} English "
          f"sentences and {fit.tokens} span-matched tokens: mean cosine to the teacher {fit.sentence_cosine:.3f} "
          f"(P_s, sentences), {fit.token_cosine:.3f} (P_w, tokens)")
    tokenizer = AutoTokenizer.from_pretrained(args.out)
    for side, rate in dev_unknown_rates(tokenizer, corpus["dev"]).items():
        print(f"unknown-token rate on dev, {side}: {rate:.4%}")
    print(f"student written to {args.out}")
    return 0


def dev_unknown_rates(tokenizer, dev) -> dict[str, float]:
    """Unknown-token rate of the dev split per language (tgt side) and on its distinct English side."""
    from mmkd.models.vocabulary import unknown_rate

    texts: dict[str, list[str]] = defaultdict(list)
    for lang, tgt in zip(dev["lang"], dev["tgt"]):
        texts[lang].append(tgt)
    rates = {lang: unknown_rate(tokenizer, texts[lang]) for lang in sorted(texts)}
    rates["English (src)"] = unknown_rate(tokenizer, dict.fromkeys(dev["src"]))
    return rates
