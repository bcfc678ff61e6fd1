"""Translation retrieval (mmkd.evaluation.retrieval, `mmkd eval retrieval`): the metric on hand-made
embeddings, the MSE, the pool, the resource groups, and the command's files on the tiny setup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from mmkd import cli
from mmkd.evaluation.retrieval import (
    comparison_table,
    evaluate_split,
    group_languages,
    group_means,
    mean_squared_distance,
    parse_models,
    pool_rows,
    read_report,
    retrieval_scores,
    top1_accuracy,
)
from tiny_setup import build_tiny, st_teacher


def test_identity_embeddings_retrieve_every_pair():
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    assert retrieval_scores(x, x) == {"x2y": 1.0, "y2x": 1.0}


def test_a_permutation_finds_only_its_fixed_points():
    x = torch.eye(4)
    y = x[[0, 2, 1, 3]]  # rows 1 and 2 swapped: y_1 is x_2's translation
    assert retrieval_scores(x, y) == {"x2y": 0.5, "y2x": 0.5}


def test_a_tie_with_another_candidate_is_a_miss():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 1.0], [2.0, 2.0]])  # same direction: equal cosine to every query
    assert retrieval_scores(x, y) == {"x2y": 0.0, "y2x": 0.0}


def test_directions_differ_when_ranks_are_not_symmetric():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [1.0, 0.3]])
    # x_0 -> y_0 (1 > 0.96), x_1 -> y_1 (0.29 > 0); y_0 -> x_0 (1 > 0), y_1 -> x_0 (0.96 > 0.29): a miss
    assert retrieval_scores(x, y) == {"x2y": 1.0, "y2x": 0.5}
    assert top1_accuracy(x[:1], y[:1]) == 1.0  # a pool of one


def test_mean_squared_distance_by_hand():
    embeddings = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    targets = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert mean_squared_distance(embeddings, targets) == pytest.approx((1 + 4 + 4 + 9) / 4)


def test_pool_takes_the_first_rows_of_a_seeded_shuffle_skipping_duplicates():
    langs = ["a"] * 10 + ["b"] * 3
    texts = [(f"x{i}", f"y{i}") for i in range(13)]
    texts[11] = ("x10", "other")  # b's row 11 repeats row 10's x
    rows = pool_rows(langs, texts, pool=4, seed=3)
    assert len(rows["a"]) == 4 and set(rows["a"]) <= set(range(10))
    assert sorted(rows["b"]) in ([10, 12], [11, 12])  # fewer than the pool: all but the duplicate
    assert rows == pool_rows(langs, texts, pool=4, seed=3)
    assert rows["a"] != pool_rows(langs, texts, pool=4, seed=4)["a"]


def test_evaluate_split_reports_each_language_with_its_pool_size():
    vectors = {f"x{i}": torch.eye(6)[i] for i in range(6)} | {f"y{i}": torch.eye(6)[i] for i in range(6)}
    vectors["y5"] = torch.eye(6)[4]  # in b, y5 ties with y4: both directions miss it
    split = Dataset.from_dict({"src": [f"x{i}" for i in range(6)], "tgt": [f"y{i}" for i in range(6)],
                               "lang": ["a", "a", "a", "b", "b", "b"]})

    def lookup(texts):
        return torch.stack([vectors[text] for text in texts])

    zero = lambda texts: torch.zeros(len(texts), 6)  # noqa: E731  a second model: every candidate ties
    results = evaluate_split(split, {"teacher": lookup, "zero": zero}, lookup, pool=2, seed=0)
    assert {lang: r["pool"] for lang, r in results.items()} == {"a": 2, "b": 2}
    assert results["a"]["models"]["teacher"] == {"x2y": 1.0, "y2x": 1.0, "mse": 0.0, "mse_x": 0.0}
    assert results["a"]["models"]["zero"] == {"x2y": 0.0, "y2x": 0.0, "mse": pytest.approx(1 / 6),
                                              "mse_x": pytest.approx(1 / 6)}
    full = evaluate_split(split, {"teacher": lookup}, lookup, pool=1000, seed=0)
    assert full["b"]["pool"] == 3
    assert full["b"]["models"]["teacher"]["x2y"] == pytest.approx(1 / 3)  # x3 only: x4 and x5 tie
    assert full["b"]["models"]["teacher"]["mse"] == pytest.approx(2 / 6 / 3)  # y5 is 2/6 from x5
    assert full["b"]["models"]["teacher"]["mse_x"] == 0.0  # the teacher's own x


def test_languages_group_by_train_pairs():
    train = {"ar": 2763, "de": 26402, "eu": 5485, "fr": 31829, "xh": 911, "zh_CN": 23619}
    groups = group_languages(train, sorted(train), below=10_000)
    assert groups == {"high": ["de", "fr", "zh_CN"], "low": ["ar", "eu", "xh"]}
    per_language = {lang: {"m": {"x2y": value, "y2x": 1.0}} for lang, value in zip(sorted(train), range(6))}
    means = group_means(per_language, groups)
    assert means["high"]["models"]["m"] == {"x2y": (1 + 3 + 5) / 3, "y2x": 1.0}
    assert means["low"]["models"]["m"]["x2y"] == (0 + 2 + 4) / 3
    assert group_means(per_language, {"high": [], "low": ["ar"]})["high"] == {"languages": [], "models": {}}


def test_models_are_parsed_with_optional_labels():
    assert parse_models("teacher,before=a/b,c/d") == {"teacher": "teacher", "before": "a/b", "c/d": "c/d"}
    with pytest.raises(Exception, match="repeated label"):
        parse_models("x=a,x=b")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, teacher_dir) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"), teacher_dir)


def eval_args(tiny: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "retrieval", "--corpus", str(tiny / "corpus"), "--teacher", str(tiny / "teacher"),
            "--out", str(out), "--max-length", "32", "--low-resource-below", "40", *extra]


def test_command_writes_json_markdown_and_png(tiny, tmp_path, capsys):
    out = tmp_path / "eval"
    models = f"teacher,before={tiny / 'student'}"
    assert cli.main(eval_args(tiny, out, "--models", models, "--pool", "5")) == 0
    report = read_report(out)
    assert report["split"] == "test" and report["models"] == {"teacher": "teacher", "before": str(tiny / "student")}
    assert list(report["languages"]) == ["de", "es", "fr"]
    # train pairs of the tiny corpus: de 70, es 35, fr 35
    assert {lang: (r["train_pairs"], r["group"]) for lang, r in report["languages"].items()} == {
        "de": (70, "high"), "es": (35, "low"), "fr": (35, "low")}
    # test pairs: de 8, es 4, fr 4; a smaller language uses all its pairs
    assert {lang: r["pool"] for lang, r in report["languages"].items()} == {"de": 5, "es": 4, "fr": 4}
    for result in report["languages"].values():
        for label in ("teacher", "before"):
            figures = result["models"][label]
            assert set(figures) == {"x2y", "y2x", "mse", "mse_x"} and 0 <= figures["x2y"] <= 1
            assert figures["mse"] >= 0 and figures["mse_x"] >= 0
    low = report["groups"]["low"]["models"]["before"]["x2y"]
    assert low == pytest.approx(sum(report["languages"][lang]["models"]["before"]["x2y"] for lang in ("es", "fr")) / 2)
    table = (out / "retrieval.md").read_text()
    assert "before x→y %" in table and "low-resource mean (< 40 train pairs): es, fr" in table
    printed = capsys.readouterr()
    assert table in printed.out
    assert "retrieval: teacher" in printed.err and "retrieval: before" in printed.err  # progress bars
    assert (out / "retrieval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one row per report, e.g. configs of an ablation
    rows = comparison_table({"a": report, "b": report}, model="teacher").splitlines()
    assert rows[0].startswith("| config | de x→y | de y→x") and rows[0].endswith("low mean y→x |")
    assert [row.split(" | ")[0] for row in rows[2:]] == ["| a", "| b"]
    header, cells = rows[0].strip("| ").split(" | "), rows[2].strip("| ").split(" | ")
    mean_x2y = sum(r["models"]["teacher"]["x2y"] for r in report["languages"].values()) / len(report["languages"])
    assert float(cells[header.index("all mean x→y")]) == pytest.approx(100 * mean_x2y, abs=0.05)


def test_the_teacher_on_both_sides_has_a_pool_of_all_test_pairs(tiny, tmp_path):
    out = tmp_path / "eval"
    assert cli.main(eval_args(tiny, out, "--models", "teacher")) == 0
    report = json.loads((out / "retrieval.json").read_text())
    assert sum(r["pool"] for r in report["languages"].values()) == 16  # the tiny test split, all distinct


def test_any_hugging_face_or_sentence_transformers_model_is_evaluated(tiny, tmp_path):
    st_dir = st_teacher(tiny / "teacher", tmp_path / "st", "dense_normalize")
    out = tmp_path / "eval"
    models = f"teacher,hf={tiny / 'teacher'},st={st_dir}"
    assert cli.main(eval_args(tiny, out, "--models", models)) == 0
    report = read_report(out)
    for result in report["languages"].values():
        teacher, plain, st = (result["models"][label] for label in ("teacher", "hf", "st"))
        # the plain HF directory is the tiny teacher itself, mean-pooled by sentence-transformers
        assert (plain["x2y"], plain["y2x"]) == (teacher["x2y"], teacher["y2x"])
        assert plain["mse"] is None and st["mse"] is None and st["mse_x"] is None and 0 <= st["x2y"] <= 1
    assert report["groups"]["low"]["models"]["st"]["mse"] is None
    assert "| – |" in (out / "retrieval.md").read_text()


def test_missing_model_path_split_or_student_files_are_named(tiny, tmp_path, capsys):
    missing = tmp_path / "no-such-student"
    assert cli.main(eval_args(tiny, tmp_path / "e1", "--models", f"teacher,{missing}")) == 2
    assert f"model {missing}: no such directory" in capsys.readouterr().err
    assert cli.main(eval_args(tiny, tmp_path / "e2", "--models", "teacher", "--split", "valid")) == 2
    assert f"{tiny / 'corpus'}: no split 'valid'" in capsys.readouterr().err
    (tmp_path / "not-a-model").mkdir()
    assert cli.main(eval_args(tiny, tmp_path / "e3", "--models", str(tmp_path / "not-a-model"))) == 2
    assert "not a Hugging Face model directory" in capsys.readouterr().err
    assert not (tmp_path / "e1").exists()
