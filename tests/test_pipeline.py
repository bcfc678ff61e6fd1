"""`mmkd pipeline`: runs each stage's subcommand in order (the last evaluates, its table printed at the
end), skips complete stages, resumes training, and stops at a failing stage keeping what was done
(stages are faked: each writes its done-marker)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mmkd import checkpoint_dir, cli
from mmkd.teacher_cache.identity import FORMAT_VERSION

MARKERS = {  # first argv word -> the file that marks the stage complete, relative to --out
    "corpus": "corpus/report.json",
    "init-student": "student/mmkd_student.json",
    "train": "train/export/sentence_transformers",
    "eval": "eval/retrieval.json",
}
FAKE_TABLE = "| lang | teacher x→y % |\n"


@pytest.fixture
def fake_stages(monkeypatch, tmp_path):
    """Replace the subcommands with fakes that record their argv and write their done-markers."""
    calls: list[list[str]] = []
    real_main = cli.main
    failing: set[str] = set()

    def fake_main(argv):
        if argv[0] == "pipeline":
            return real_main(argv)
        calls.append(list(argv))
        if argv[0] in failing:
            return 2
        out = tmp_path / "run"
        if argv[0] == "cache-teacher":
            marker = Path(argv[argv.index("--out") + 1]) / "manifest.json"
        elif argv[0] == "eval":
            marker = Path(argv[argv.index("--out") + 1]) / "retrieval.json"
        elif argv[0] == "train":
            marker = out / MARKERS["train"]
        else:
            marker = out / MARKERS[argv[0]]
        marker.parent.mkdir(parents=True, exist_ok=True)
        if argv[0] == "train":
            marker.mkdir()
        elif argv[0] == "cache-teacher":  # a manifest of the format this version reads, with its max_length
            marker.write_text(json.dumps({"format": FORMAT_VERSION,
                                          "max_length": int(argv[argv.index("--max-length") + 1])}))
        else:
            marker.write_text("{}")
        if argv[0] == "eval":
            (marker.parent / "retrieval.md").write_text(FAKE_TABLE)
        return 0

    monkeypatch.setattr(cli, "main", fake_main)
    return calls, failing, tmp_path / "run"


def test_runs_every_stage_in_order_then_skips_them(fake_stages, capsys):
    calls, _, out = fake_stages
    argv = ["pipeline", "--out", str(out), "--langs", "eu,xh", "--train-steps", "7", "--train-minutes", "2",
            "--baseline", str(out.parent / "no_benchmark_table.md")]  # not the repository's runs/
    assert cli.main(argv) == 0
    assert [argv[0] for argv in calls] == ["corpus", "init-student", "cache-teacher", "cache-teacher", "train", "eval",
                                           "eval"]
    assert calls[0][calls[0].index("--langs") + 1] == "eu,xh"
    assert [argv[argv.index("--split") + 1] for argv in calls[2:4]] == ["train", "dev"]
    train = calls[4]
    assert "--max_steps=7" in train and "--max_time_minutes=2.0" in train and "--resume" not in train
    assert f"--teacher_cache={out / 'teacher_cache_train'}" in train
    assert not any(arg.startswith("--max_length=") for arg in train)  # the recipe's own
    assert {argv[argv.index("--max-length") + 1] for argv in calls if "--max-length" in argv} == {"64"}
    evaluate = calls[5]
    assert evaluate[:2] == ["eval", "retrieval"] and evaluate[evaluate.index("--out") + 1] == str(out / "eval")
    assert evaluate[evaluate.index("--models") + 1] == (
        f"teacher,student_before={out / 'student'},student_after={out / 'train' / 'export' / 'hf'}")
    out_of_domain = calls[6]
    assert out_of_domain[out_of_domain.index("--out-of-domain") + 1] == "package:django"
    assert out_of_domain[out_of_domain.index("--out") + 1] == str(out / "eval_out_of_domain")
    assert "--out-of-domain" not in evaluate
    printed = capsys.readouterr().out
    assert "tensorboard --logdir" in printed and printed.count(FAKE_TABLE) == 2
    assert str(out / "eval" / "retrieval.png") in printed and "out-of-domain set (package:django)" in printed
    assert "bench_vs_mse" not in printed  # no cached benchmark table to print
    calls.clear()
    assert cli.main(["pipeline", "--out", str(out)]) == 0
    assert calls == []


def test_teacher_and_student_reach_every_stage_that_takes_them(fake_stages):
    calls, _, out = fake_stages
    assert cli.main(["pipeline", "--out", str(out), "--teacher", "T", "--student", "S"]) == 0
    init, cache_train, cache_dev, train, evaluate, out_of_domain = calls[1:]
    assert init[init.index("--source") + 1] == "S" and "--keep-vocab" in init
    for argv in (init, cache_train, cache_dev, evaluate, out_of_domain):
        assert argv[argv.index("--teacher") + 1] == "T"
    assert "--teacher=T" in train


def max_lengths(calls: list[list[str]]) -> dict[str, list[str]]:
    """{subcommand: the --max-length (cache-teacher, eval) or --max_length= (train) of each of its calls}."""
    lengths: dict[str, list[str]] = {}
    for argv in calls:
        given = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--max-length"]
        given += [arg.split("=", 1)[1] for arg in argv if arg.startswith("--max_length=")]
        lengths.setdefault(argv[0], []).extend(given)
    return lengths


def test_the_recipes_max_length_reaches_the_caches_and_evaluations(fake_stages, tmp_path):
    calls, _, out = fake_stages
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("max_length: 48\n")
    assert cli.main(["pipeline", "--out", str(out), "--recipe", str(recipe), "--out-of-domain", "none"]) == 0
    assert max_lengths(calls) == {"corpus": [], "init-student": [], "cache-teacher": ["48", "48"], "train": [],
                                  "eval": ["48"]}
    assert json.loads((out / "teacher_cache_train" / "manifest.json").read_text())["max_length"] == 48


def test_an_explicit_max_length_overrides_the_recipe_and_rebuilds_caches_of_another(fake_stages):
    calls, _, out = fake_stages
    assert cli.main(["pipeline", "--out", str(out), "--out-of-domain", "none"]) == 0  # cpu_main: 64
    calls.clear()
    assert cli.main(["pipeline", "--out", str(out), "--out-of-domain", "none", "--max-length", "32"]) == 0
    assert [argv[0] for argv in calls] == ["cache-teacher", "cache-teacher"]  # training and its evaluation done
    assert max_lengths(calls)["cache-teacher"] == ["32", "32"]
    shutil.rmtree(out / "train")
    (out / "eval" / "retrieval.json").unlink()
    calls.clear()
    assert cli.main(["pipeline", "--out", str(out), "--out-of-domain", "none", "--max-length", "32"]) == 0
    assert max_lengths(calls) == {"train": ["32"], "eval": ["32"]}


def test_a_bad_recipe_is_refused_before_any_stage_runs(fake_stages, capsys, tmp_path):
    calls, _, out = fake_stages
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("max_lenght: 48\n")
    assert cli.main(["pipeline", "--out", str(out), "--recipe", str(recipe)]) == 2
    assert "max_lenght" in capsys.readouterr().err and calls == []


def test_the_vocabulary_size_is_init_students_unless_given_and_never_with_a_student(fake_stages, capsys):
    calls, _, out = fake_stages
    assert cli.main(["pipeline", "--out", str(out), "--out-of-domain", "none"]) == 0
    assert calls[1][0] == "init-student" and "--vocab-size" not in calls[1]
    (out / MARKERS["init-student"]).unlink()
    calls.clear()
    assert cli.main(["pipeline", "--out", str(out), "--out-of-domain", "none", "--vocab-size", "8000"]) == 0
    assert [argv[0] for argv in calls] == ["init-student"] and calls[0][calls[0].index("--vocab-size") + 1] == "8000"
    calls.clear()
    assert cli.main(["pipeline", "--out", str(out), "--student", "S", "--vocab-size", "8000"]) == 2
    assert "--student S keeps its own vocabulary: drop --vocab-size" in capsys.readouterr().err and calls == []


def test_a_failing_stage_stops_and_a_rerun_resumes_training(fake_stages, capsys):
    calls, failing, out = fake_stages
    failing.add("train")
    assert cli.main(["pipeline", "--out", str(out)]) == 2
    assert "train failed (exit 2)" in capsys.readouterr().out
    checkpoints = out / "train" / "checkpoints"
    checkpoint_dir.staging_dir(checkpoints, "step5").mkdir(parents=True)
    checkpoint_dir.publish(checkpoints, "step5", {"step": 5})
    failing.clear()
    calls.clear()
    assert cli.main(["pipeline", "--out", str(out)]) == 0
    assert [argv[0] for argv in calls] == ["train", "eval", "eval"] and "--resume" in calls[0]


def test_corpus_sources_are_imported_instead_of_the_built_in_corpus(fake_stages):
    calls, _, out = fake_stages
    argv = ["pipeline", "--out", str(out), "--corpus", "data/train.tsv", "data/test.tsv",
            "--import-args=--lang de --on-error skip", "--seed", "3"]
    assert cli.main(argv) == 0
    assert calls[0] == ["corpus", "import", "data/train.tsv", "data/test.tsv", "--lang", "de", "--on-error", "skip",
                        "--seed", "3", "--out", str(out / "corpus")]
    assert all(f"--corpus={out / 'corpus'}" in argv or str(out / "corpus") in argv for argv in calls[1:])


def test_an_existing_corpus_directory_is_used_as_it_is(fake_stages, tmp_path):
    from mmkd.corpus.schema import make_corpus, save_corpus

    calls, _, out = fake_stages
    corpus = tmp_path / "my-corpus"
    save_corpus(make_corpus({"train": [{"src": "Open the file", "tgt": "Datei öffnen", "lang": "de",
                                        "alignment": None}]}), {}, corpus)
    assert cli.main(["pipeline", "--out", str(out), "--corpus", str(corpus)]) == 0
    assert [argv[0] for argv in calls] == ["init-student", "cache-teacher", "cache-teacher", "train", "eval", "eval"]
    assert calls[0][calls[0].index("--corpus") + 1] == str(corpus)
    assert f"--corpus={corpus}" in calls[3] and calls[4][calls[4].index("--corpus") + 1] == str(corpus)


@pytest.mark.parametrize("extra, message", [
    (["--corpus", "data/pairs.tsv", "--langs", "de"], "--langs chooses the languages of the built-in corpus"),
    (["--import-args=--lang de"], "--import-args needs --corpus"),
])
def test_corpus_options_that_conflict_are_refused(fake_stages, capsys, extra, message):
    calls, _, out = fake_stages
    assert cli.main(["pipeline", "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err and calls == []


def test_a_training_run_stopped_before_its_first_complete_checkpoint_starts_over(fake_stages):
    calls, failing, out = fake_stages
    failing.add("train")
    assert cli.main(["pipeline", "--out", str(out)]) == 2
    checkpoint_dir.staging_dir(out / "train" / "checkpoints", "step5").mkdir(parents=True)  # killed in its save
    failing.clear()
    calls.clear()
    assert cli.main(["pipeline", "--out", str(out)]) == 0
    assert calls[0][0] == "train" and "--overwrite" in calls[0] and "--resume" not in calls[0]


def test_no_out_of_domain_stage_on_request_and_the_cached_benchmark_table_is_printed(fake_stages, capsys, tmp_path):
    calls, _, out = fake_stages
    table = tmp_path / "bench" / "table.md"
    table.parent.mkdir()
    table.write_text("| model | pairs |\n| mse | 12800 |\n")
    assert cli.main(["pipeline", "--out", str(out), "--out-of-domain", "none", "--baseline", str(table)]) == 0
    assert [argv[0] for argv in calls][-1:] == ["eval"] and all("--out-of-domain" not in argv for argv in calls)
    printed = capsys.readouterr().out
    assert "| mse | 12800 |" in printed and f"cached run of scripts/bench_vs_mse.py ({table}" in printed
