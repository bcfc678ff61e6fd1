"""Downstream evaluation (mmkd eval xnli | pawsx | xquad): the official file formats are parsed right,
each task runs end to end on tiny fixtures, SQuAD F1/EM match the official definition, and missing or
malformed data gets a clear error."""

from __future__ import annotations

import json

import pytest
import torch

from mmkd import cli
from mmkd.errors import MMKDError
from mmkd.evaluation.downstream.data import load_task_data
from mmkd.evaluation.downstream.finetune import mixed_precision
from mmkd.evaluation.downstream.qa_processing import best_answers, qa_eval_features, qa_train_features
from mmkd.evaluation.downstream.squad_metric import f1_score, normalize_answer, squad_scores
from mmkd.evaluation.downstream.tasks import TASKS

MNLI_HEADER = ["gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
               "sentence2_parse", "sentence1", "sentence2", "promptID", "pairID", "genre",
               "label1", "label2", "label3", "label4", "label5"]
XNLI_HEADER = ["language", "gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
               "sentence2_parse", "sentence1", "sentence2", "promptID", "pairID", "genre", "label1", "label2",
               "label3", "label4", "label5", "sentence1_tokenized", "sentence2_tokenized", "match"]
NLI_ROWS = [("entailment", 'the cat sleeps "here"', "a cat sleeps"), ("neutral", "the dog runs", "the dog runs fast"),
            ("contradiction", "the bird sings", "the bird is silent"), ("-", "the tree grows", "nothing")]
CONTEXT = "The red house stands by the old tree. A small bird lives in the tree since 1990."
QUESTIONS = [("Where does the bird live?", "in the tree"), ("What color is the house?", "red"),
             ("Since when?", "1990")]


def write_tsv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(map(str, row)) for row in [header, *rows]) + "\n", encoding="utf-8")


def nli_row(header, values):
    row = dict.fromkeys(header, "x")
    row.update(values)
    return [row[column] for column in header]


def write_xnli(root):
    write_tsv(root / "multinli_1.0/multinli_1.0_train.txt", MNLI_HEADER,
              [nli_row(MNLI_HEADER, {"gold_label": g, "sentence1": a, "sentence2": b}) for g, a, b in NLI_ROWS * 3])
    write_tsv(root / "XNLI-1.0/xnli.test.tsv", XNLI_HEADER,
              [nli_row(XNLI_HEADER, {"language": lang, "gold_label": g, "sentence1": f"{lang} {a}", "sentence2": b})
               for lang in TASKS["xnli"].languages for g, a, b in NLI_ROWS])


def write_pawsx(root):
    header = ["id", "sentence1", "sentence2", "label"]
    rows = [[i, f"the cat sees the dog {i}", f"the dog sees the cat {i}", i % 2] for i in range(8)]
    write_tsv(root / "x-final/en/train.tsv", header, rows)
    for lang in TASKS["pawsx"].languages:
        write_tsv(root / f"x-final/{lang}/test_2k.tsv", header, rows[:3])


def squad_json(prefix):
    start = lambda answer: CONTEXT.index(answer)  # noqa: E731
    qas = [{"id": f"{prefix}-{i}", "question": q, "answers": [{"text": a, "answer_start": start(a)}]}
           for i, (q, a) in enumerate(QUESTIONS)]
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": qas}]}]}


def write_squad(root):
    root.mkdir(parents=True, exist_ok=True)
    (root / "train-v1.1.json").write_text(json.dumps(squad_json("train"), indent=1), encoding="utf-8")
    for lang in TASKS["xquad"].languages:
        (root / f"xquad.{lang}.json").write_text(json.dumps(squad_json(lang)), encoding="utf-8")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("downstream_data")
    write_xnli(root)
    write_pawsx(root)
    write_squad(root)
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2-layer BERT masked LM (hidden 32) with a WordPiece vocabulary of the fixture texts: a student dir."""
    from transformers import BertConfig, BertForMaskedLM

    from mmkd.models.vocabulary import train_wordpiece

    root = tmp_path_factory.mktemp("tiny_model")
    texts = [CONTEXT, *(q for q, _ in QUESTIONS), *(a + " " + b for _, a, b in NLI_ROWS), "the cat sees the dog"]
    tokenizer = train_wordpiece(texts, vocab_size=150, model_max_length=512)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=512)).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def test_official_nli_files_are_parsed_by_column_and_label(data_dir):
    data = load_task_data(TASKS["xnli"], ("de", "sw"), data_dir)
    assert data.train[:3] == [{"text_a": 'the cat sleeps "here"', "text_b": "a cat sleeps", "label": 0},
                              {"text_a": "the dog runs", "text_b": "the dog runs fast", "label": 1},
                              {"text_a": "the bird sings", "text_b": "the bird is silent", "label": 2}]
    assert len(data.train) == 9  # the "-" rows (no gold label) are left out
    assert [e["text_a"] for e in data.test["sw"]] == ['sw the cat sleeps "here"', "sw the dog runs",
                                                      "sw the bird sings"]
    assert [e["label"] for e in data.test["de"]] == [0, 1, 2]
    limited = load_task_data(TASKS["xnli"], ("de",), data_dir, max_train=2, max_eval=1)
    assert len(limited.train) == 2 and len(limited.test["de"]) == 1


def test_pawsx_and_squad_files_are_parsed(data_dir):
    paws = load_task_data(TASKS["pawsx"], ("ko",), data_dir)
    assert paws.train[1] == {"text_a": "the cat sees the dog 1", "text_b": "the dog sees the cat 1", "label": 1}
    assert len(paws.train) == 8 and len(paws.test["ko"]) == 3
    qa = load_task_data(TASKS["xquad"], ("th",), data_dir)
    assert qa.test["th"][0] == {"id": "th-0", "question": "Where does the bird live?", "context": CONTEXT,
                                "answers": {"text": ["in the tree"], "answer_start": [CONTEXT.index("in the tree")]}}


@pytest.mark.parametrize("task", ["xnli", "pawsx", "xquad"])
def test_each_task_runs_end_to_end_and_reports_every_language(task, data_dir, tiny_model, tmp_path, capsys):
    assert cli.main(["eval", task, "--model", str(tiny_model), "--data-dir", str(data_dir), "--out", str(tmp_path),
                     "--epochs", "1", "--seed", "3"]) == 0
    results = json.loads((tmp_path / f"{task}.json").read_text())
    spec = TASKS[task]
    assert list(results["languages"]) == list(spec.languages)
    for lang, scores in results["languages"].items():
        assert scores["examples"] == 3, lang
        for metric in spec.metrics:
            assert 0.0 <= scores[metric] <= 100.0, (lang, metric)
    assert set(results["average"]) == set(spec.metrics)
    assert results["settings"]["learning_rate"] == spec.learning_rate and results["settings"]["epochs"] == 1
    assert "| " + " | ".join(spec.languages) + " | avg |" in (tmp_path / f"{task}.md").read_text()
    printed = capsys.readouterr()
    assert "written:" in printed.out
    assert f"{task} epoch 1/1" in printed.err and "mean_loss=" in printed.err  # the epoch's progress bar


def test_mixed_precision_is_bf16_or_fp16_on_a_gpu_and_fp32_elsewhere(monkeypatch):
    assert mixed_precision(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert mixed_precision(torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert mixed_precision(torch.device("cuda")) == torch.float16


def test_languages_option_selects_and_checks_languages(data_dir, tiny_model, tmp_path, capsys):
    assert cli.main(["eval", "pawsx", "--model", str(tiny_model), "--data-dir", str(data_dir), "--out", str(tmp_path),
                     "--epochs", "1", "--languages", "ja,en", "--max-train-examples", "4",
                     "--max-eval-examples", "2"]) == 0
    results = json.loads((tmp_path / "pawsx.json").read_text())
    assert list(results["languages"]) == ["ja", "en"] and results["train_examples"] == 4
    assert all(scores["examples"] == 2 for scores in results["languages"].values())
    assert cli.main(["eval", "pawsx", "--model", str(tiny_model), "--data-dir", str(data_dir), "--out", str(tmp_path),
                     "--languages", "sw"]) == 2
    assert "pawsx has no language sw" in capsys.readouterr().err


def test_long_context_windows_locate_the_answer_and_recover_it(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    context = " ".join(["the red house stands by the old tree ."] * 6 + ["a small bird lives in 1990 ."])
    example = {"id": "q", "question": "since when?", "context": context,
               "answers": {"text": ["1990"], "answer_start": [context.index("1990")]}}
    features = qa_train_features(tokenizer, [example], max_length=24, doc_stride=8)
    assert len(features) > 2  # the context is cut into several overlapping windows
    labelled = [f for f in features if f["start_positions"] > 0]
    assert labelled and all(f["start_positions"] == 0 for f in features if f not in labelled)
    for feature in labelled:
        span = feature["input_ids"][feature["start_positions"]: feature["end_positions"] + 1]
        assert tokenizer.decode(span).replace(" ", "") == "1990"
    eval_features, example_of, offsets = qa_eval_features(tokenizer, [example], max_length=24, doc_stride=8)
    assert example_of == [0] * len(eval_features)
    window = features.index(labelled[-1])
    starts = [torch.zeros(len(f["input_ids"])) for f in eval_features]
    ends = [torch.zeros(len(f["input_ids"])) for f in eval_features]
    starts[window][labelled[-1]["start_positions"]] = ends[window][labelled[-1]["end_positions"]] = 10.0
    assert best_answers([example], example_of, offsets, starts, ends) == {"q": "1990"}


def test_squad_f1_and_exact_match_follow_the_official_definition():
    assert normalize_answer("The  Eiffel-Tower, an icon!") == "eiffeltower icon"
    assert f1_score("the cat sat", "a cat sat down") == pytest.approx(2 * (2 / 2) * (2 / 3) / (2 / 2 + 2 / 3))
    assert f1_score("the", "a") == 0.0  # only articles: nothing left in common
    scores = squad_scores({"q1": "Paris.", "q2": "in the tree", "q3": "dog"},
                          {"q1": ["paris"], "q2": ["tree", "in the tree"], "q3": ["cat"], "q4": ["x"]})
    # q1 exact after normalisation; q2 takes its best gold answer; q3 wrong; q4 has no prediction
    assert scores == {"f1": pytest.approx(50.0), "exact_match": pytest.approx(50.0)}
    partial = squad_scores({"q": "old red house"}, {"q": ["the red house", "house"]})
    assert partial["f1"] == pytest.approx(100 * 0.8) and partial["exact_match"] == 0.0


def test_missing_data_names_the_files_and_the_hub_datasets(tmp_path):
    with pytest.raises(MMKDError) as err:
        load_task_data(TASKS["xquad"], ("de", "zh"), tmp_path)
    message = str(err.value)
    for name in ("train-v1.1.json", "xquad.de.json", "xquad.zh.json", "squad", "xquad (configs xquad.<lang>)"):
        assert name in message
    with pytest.raises(MMKDError) as err:
        load_task_data(TASKS["pawsx"], ("fr",), None)  # the hub is offline in the tests
    assert "paws-x" in str(err.value) and "x-final/fr/test_2k.tsv" in str(err.value)


@pytest.mark.parametrize("task, relative, text, expected", [
    ("pawsx", "x-final/en/train.tsv", "id\tsentence1\tsentence2\tlabel\n1\ta\tb\t1\n2\ta\tb\n", ":3: 3 tab-separated"),
    ("pawsx", "x-final/en/train.tsv", "id\tsentence1\tsentence2\tlabel\n1\ta\tb\tyes\n", ":2: label 'yes'"),
    ("pawsx", "x-final/en/train.tsv", "id\ts1\ts2\tlabel\n", ":1: header has no column sentence1"),
    ("xnli", "multinli_1.0/multinli_1.0_train.txt", "gold_label\tsentence1\tsentence2\nmaybe\ta\tb\n",
     ":2: gold_label 'maybe'"),
    ("xquad", "train-v1.1.json", '{"data": [\n  {"title": "t",,}\n]}', ":2: invalid JSON"),
])
def test_malformed_local_file_names_file_and_line(task, relative, text, expected, data_dir, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_dir, root)
    (root / relative).write_text(text, encoding="utf-8")
    with pytest.raises(MMKDError) as err:
        load_task_data(TASKS[task], ("en",), root)
    assert str(root / relative) + expected in str(err.value)
