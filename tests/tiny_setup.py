"""A tiny but complete training setup, built in seconds: the fixture of the training tests.

`build_tiny(root, teacher_dir)` writes under `root`: a 180-pair synthetic corpus in three languages
(`corpus/`), a random 2-layer teacher (hidden 32) with the all-MiniLM-L6-v2 tokenizer (`teacher/`), a
2-layer student (hidden 48) with a 200-token WordPiece vocabulary trained on the corpus (`student/`),
the teacher caches of train and dev (`cache_train/`, `cache_dev/`, max_length 32) and `recipe.yaml`
(4 steps on ds_configs/cpu_bf16_zero2.json, logging every step, no progress bar).
`subprocess_env()` is the environment to run training on it in a child process; `scalars(out)` reads
back a run's TensorBoard scalars.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
WORDS = {
    "de": {"the": "die", "red": "rote", "small": "kleine", "old": "alte", "cat": "katze", "dog": "hund",
           "house": "haus", "sees": "sieht", "likes": "mag", "finds": "findet", "tree": "baum", "bird": "vogel"},
    "fr": {"the": "le", "red": "rouge", "small": "petit", "old": "vieux", "cat": "chat", "dog": "chien",
           "house": "maison", "sees": "voit", "likes": "aime", "finds": "trouve", "tree": "arbre", "bird": "oiseau"},
    "es": {"the": "el", "red": "rojo", "small": "pequeño", "old": "viejo", "cat": "gato", "dog": "perro",
           "house": "casa", "sees": "ve", "likes": "quiere", "finds": "encuentra", "tree": "árbol",
           "bird": "pájaro"},
}


def synthetic_pairs() -> list[dict]:
    """180 word-by-word translations of "the <adj> <noun> <verb> the <noun>"; two in three aligned."""
    nouns = ["cat", "dog", "house", "tree", "bird"]
    sentences = [f"the {adj} {noun} {verb} the {other}" for adj in ("red", "small", "old") for noun in nouns
                 for verb in ("sees", "likes", "finds") for other in nouns if other != noun]
    rows = []
    for i, src in enumerate(sentences):
        lang = ("de", "fr", "es", "de")[i % 4]
        rows.append({"src": src, "tgt": " ".join(WORDS[lang][word] for word in src.split()), "lang": lang,
                     "alignment": [[j, j] for j in range(6)] if i % 3 else None})
    return rows


def build_tiny(root: Path, teacher_dir: str) -> Path:
    """Corpus, teacher, student, teacher caches and recipe under `root` (see the module docstring)."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel

    from mmkd.corpus.schema import load_corpus, make_corpus, save_corpus
    from mmkd.models.student import load_student
    from mmkd.models.teacher import load_teacher
    from mmkd.models.vocabulary import train_wordpiece
    from mmkd.teacher_cache import build_teacher_cache

    rows = synthetic_pairs()
    save_corpus(make_corpus({"train": rows[:140], "dev": rows[140:164], "test": rows[164:]}), {}, root / "corpus")
    torch.manual_seed(0)
    teacher_tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    BertModel(BertConfig(vocab_size=teacher_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
              ).save_pretrained(root / "teacher")
    teacher_tokenizer.save_pretrained(root / "teacher")
    student_tokenizer = train_wordpiece([r["src"] for r in rows] + [r["tgt"] for r in rows], vocab_size=200,
                                        model_max_length=64)
    BertForMaskedLM(BertConfig(vocab_size=len(student_tokenizer), hidden_size=48, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=96, max_position_embeddings=64)
                    ).save_pretrained(root / "student_init")
    student_tokenizer.save_pretrained(root / "student_init")
    load_student(root / "student_init", teacher_hidden_size=32).save(root / "student")
    corpus, teacher = load_corpus(root / "corpus"), load_teacher(str(root / "teacher"))
    for split in ("train", "dev"):
        build_teacher_cache(teacher, corpus[split], root / f"cache_{split}", max_length=32, split=split,
                            corpus_path=str(root / "corpus"))
    (root / "recipe.yaml").write_text("\n".join([
        f"corpus: {root / 'corpus'}", f"student: {root / 'student'}", f"teacher: {root / 'teacher'}",
        f"teacher_cache: {root / 'cache_train'}", "ds_config: ds_configs/cpu_bf16_zero2.json",
        "max_length: 32", "max_steps: 4", "log_interval: 1", "eval_interval: 2", "eval_batches: 1",
        "progress_bar: false", "",
    ]))
    return root


def subprocess_env() -> dict[str, str]:
    """This environment without a launcher's rank variables, one thread per process, offline."""
    env = {key: value for key, value in os.environ.items() if key not in LAUNCHER_ENV}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1")
    return env


def scalars(out: Path) -> dict[str, dict[int, float]]:
    """Every TensorBoard scalar of a run: {tag: {optimizer step: value}} (all event files of the run)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard" / "mmkd"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {event.step: event.value for event in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def st_teacher(plain: Path, out: Path, kind: str) -> Path:
    """A sentence-transformers teacher over the tiny plain teacher `plain` (BERT, hidden 32), saved to
    `out`: "dense_normalize" (mean Pooling, Dense 32 -> 32 tanh, Normalize: the LaBSE layout),
    "dense_resize" (mean Pooling, Dense 32 -> 24 tanh, Normalize: the distiluse layout, a sentence
    embedding smaller than the token states), "lasttoken" (last-token Pooling) or "prompt" (mean
    Pooling, default prompt "query: ")."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    transformer = Transformer(str(plain))
    size = transformer.get_embedding_dimension()
    modules = {
        "dense_normalize": [Pooling(size, pooling_mode="mean"), Dense(size, size), Normalize()],
        "dense_resize": [Pooling(size, pooling_mode="mean"), Dense(size, 24), Normalize()],
        "lasttoken": [Pooling(size, pooling_mode="lasttoken")],
        "prompt": [Pooling(size, pooling_mode="mean")],
    }[kind]
    torch.manual_seed(1)
    prompts = {"prompts": {"query": "query: "}, "default_prompt_name": "query"} if kind == "prompt" else {}
    SentenceTransformer(modules=[transformer, *modules], device="cpu", **prompts).save(str(out))
    return out
