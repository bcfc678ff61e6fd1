"""scripts/ablation.sh: every config trains with the max_length its recipe and overrides resolve to, and
its evaluations encode at that length (training and evaluation are faked by MMKD_PYTHON: a script that
records each call and writes the export marker; the recipe is resolved by the real interpreter)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mmkd.errors import MMKDError
from tiny_setup import subprocess_env

REPO = Path(__file__).resolve().parents[1]
FAKE_PYTHON = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$CALLS"
if [[ "$1 $2 $3" == "-m mmkd train" ]]; then
  for arg in "$@"; do [[ $arg == --output_dir=* ]] && out=${arg#--output_dir=}; done
  mkdir -p "$out/export/hf" && touch "$out/export/hf/mmkd_student.json"
elif [[ "$1 $2" != "-m mmkd" && "$1" != scripts/ablation_table.py ]]; then
  exec "$REAL_PYTHON" "$@"
fi
"""


def ablation(tmp_path: Path, *extra: str, recipe_text: str = "max_length: 48\n",
             **env: str) -> tuple[subprocess.CompletedProcess, dict[str, set[str]]]:
    """Run scripts/ablation.sh for 3 steps with the recipe `recipe_text` and no out-of-domain set; the
    result and {"train": its --max_length= values, "eval": its --max-length values} over every call."""
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(recipe_text)
    calls = tmp_path / "calls.txt"
    calls.write_text("")
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "ablation.sh"), str(tmp_path / "run"), "3", *extra], cwd=REPO,
        env={**subprocess_env(), "MMKD_PYTHON": str(fake), "REAL_PYTHON": sys.executable, "CALLS": str(calls),
             "RECIPE": str(recipe), "OUT": str(tmp_path / "out"), "OOD": "none", **env},
        capture_output=True, text=True, timeout=300)
    lines = calls.read_text().splitlines()
    lengths = {"train": {length for line in lines if line.startswith("-m mmkd train")
                         for length in re.findall(r"--max_length=(\S+)", line)},
               "eval": {length for line in lines if line.startswith("-m mmkd eval")
                        for length in re.findall(r"--max-length (\S+)", line)}}
    return result, lengths


@pytest.mark.slow
def test_the_evaluations_encode_at_the_recipes_max_length_or_its_override(tmp_path):
    result, lengths = ablation(tmp_path)
    assert result.returncode == 0, result.stderr
    assert lengths == {"train": set(), "eval": {"48"}} and "max_length 48" in result.stdout
    result, lengths = ablation(tmp_path, "--max_length=40", OUT=str(tmp_path / "out_40"))  # a new OUT: no resume
    assert result.returncode == 0, result.stderr
    assert lengths == {"train": {"40"}, "eval": {"40"}}
    result, lengths = ablation(tmp_path, MAX_LENGTH="36", OUT=str(tmp_path / "out_36"))
    assert result.returncode == 0, result.stderr
    assert lengths == {"train": {"36"}, "eval": {"36"}}


@pytest.mark.slow
def test_an_override_no_recipe_key_takes_is_refused_before_any_training(tmp_path):
    result, _ = ablation(tmp_path, "--max_lenght=40")
    assert result.returncode != 0 and "scripts/ablation.sh: error:" in result.stderr
    assert "max_lenght" in result.stderr and "max_length" in result.stderr
    assert "mmkd train" not in (tmp_path / "calls.txt").read_text()


@pytest.mark.slow
def test_terms_the_recipe_leaves_out_are_added_back_one_at_a_time_and_the_others_removed(tmp_path):
    result, _ = ablation(tmp_path, recipe_text="max_length: 48\nweights: {tlm: 0.0, xwcl: 0.0}\n")
    assert result.returncode == 0, result.stderr
    trained = {}
    for line in (tmp_path / "calls.txt").read_text().splitlines():
        if line.startswith("-m mmkd train"):
            name = re.search(r"--output_dir=\S+/out/(\w+)/train", line).group(1)
            trained[name] = sorted(re.findall(r"--weights\.(\w+)=(\S+)", line))
    assert trained == {
        "sentence_only": [("struca_sent", "0"), ("struca_tok", "0"), ("tlm", "0"), ("xwcl", "0")],
        "full": [], "with_tlm": [("tlm", "0.1")], "with_xwcl": [("xwcl", "1.0")], "no_senta": [("senta", "0")],
        "no_struca_sent": [("struca_sent", "0")], "no_struca_tok": [("struca_tok", "0")],
        "struca_sent_cross_lingual": []}


@pytest.mark.slow
def test_a_term_the_recipe_weighs_other_than_1_is_also_run_at_the_methods_weight_1(tmp_path):
    result, _ = ablation(tmp_path, recipe_text="max_length: 48\nweights: {tlm: 0.0, xwcl: 0.0, senta: 100.0}\n")
    assert result.returncode == 0, result.stderr
    calls = {re.search(r"--output_dir=\S+/out/(\w+)/train", line).group(1): line
             for line in (tmp_path / "calls.txt").read_text().splitlines() if line.startswith("-m mmkd train")}
    assert re.findall(r"--weights\.(\w+)=(\S+)", calls["senta_weight_1"]) == [("senta", "1.0")]
    assert not any(name.endswith("_weight_1") for name in calls if name != "senta_weight_1")
    assert "--weights.senta" not in calls["full"]  # full trains the recipe's 100


@pytest.mark.slow
def test_a_recipe_with_a_bank_is_also_run_without_it_and_the_monolingual_form_takes_none(tmp_path):
    recipe = "max_length: 48\nstruct_sent_mode: cross_lingual\nstruct_bank_size: 64\n"
    result, _ = ablation(tmp_path, recipe_text=recipe)
    assert result.returncode == 0, result.stderr
    calls = {re.search(r"--output_dir=\S+/out/(\w+)/train", line).group(1): line
             for line in (tmp_path / "calls.txt").read_text().splitlines() if line.startswith("-m mmkd train")}
    assert "--struct_bank_size=0" in calls["no_struct_bank"]
    assert "--struct_bank_size=0" in calls["struca_sent_monolingual"]
    assert "struct_bank_size" not in calls["full"]
    assert "struca_sent_cross_lingual" not in calls  # the recipe's form is `full`


@pytest.mark.slow
def test_a_subword_student_adds_full_from_it_and_only_that_config_changes_the_student(tmp_path):
    student = tmp_path / "students" / "subword_init"
    student.mkdir(parents=True)
    (student / "mmkd_student.json").write_text("{}")
    result, _ = ablation(tmp_path, SUBWORD_STUDENT=str(student))
    assert result.returncode == 0, result.stderr
    calls = {re.search(r"--output_dir=\S+/out/(\w+)/train", line).group(1): line
             for line in (tmp_path / "calls.txt").read_text().splitlines() if line.startswith("-m mmkd train")}
    students = {name: re.findall(r"--student=(\S+)", line) for name, line in calls.items()}
    assert students.pop("subword_embedding_init")[-1] == str(student)
    assert all(str(student) not in found for found in students.values())


def report(figures: dict[str, tuple[str, float, float]], mse_x: float | None = 0.0003) -> dict:
    """A retrieval.json of one model "m": {lang: (group, x2y, y2x)} as fractions, each with `mse_x`."""
    return {"models": {"m": {}}, "languages": {lang: {"group": group, "models": {"m": {
        "x2y": x2y, "y2x": y2x, "mse_x": mse_x}}} for lang, (group, x2y, y2x) in figures.items()}}


@pytest.fixture(scope="module")
def table():
    """scripts/ablation_table.py as a module."""
    spec = importlib.util.spec_from_file_location("ablation_table", REPO / "scripts" / "ablation_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_summary_gives_each_configs_means_in_domain_and_out_of_domain_when_every_run_has_one(tmp_path, table):
    test = report({"de": ("high", 0.9, 0.8), "eu": ("low", 0.5, 0.7), "xh": ("low", 0.6, 0.4)})
    foreign = report({"de": ("high", 0.9, 0.8)}, mse_x=None)
    assert table.english_drift(test) == "3.0" and table.english_drift(foreign) == ""
    ood = report({"de": ("high", 0.4, 0.6), "eu": ("low", 0.2, 0.3)})
    for run, evaluations in (("full", {"eval": test, "eval_ood": ood}), ("no_senta", {"eval": test})):
        for evaluation, content in evaluations.items():
            (tmp_path / run / evaluation).mkdir(parents=True)
            (tmp_path / run / evaluation / "retrieval.json").write_text(json.dumps(content))
    rows = table.summary_table([tmp_path / "full"]).splitlines()
    assert rows[0] == ("| config | test mean | test high | test low | OOD mean | OOD high | OOD low "
                       "| test mse_x (1e-4) |")
    assert rows[2] == ("| full | 66.7 / 63.3 | 90.0 / 80.0 | 55.0 / 55.0 | 30.0 / 45.0 | 40.0 / 60.0 | 20.0 / 30.0 "
                       "| 3.0 |")
    rows = table.summary_table([tmp_path / "full", tmp_path / "no_senta"]).splitlines()
    assert "OOD" not in rows[0] and rows[3] == "| no_senta | 66.7 / 63.3 | 90.0 / 80.0 | 55.0 / 55.0 | 3.0 |"
    with pytest.raises(MMKDError, match="missing/eval: cannot read a retrieval report"):
        table.summary_table([tmp_path / "no_senta", tmp_path / "missing"])
    assert table.main(["--summary", str(tmp_path / "missing")]) == 1


@pytest.mark.parametrize("argv, code, says", [
    (["--help"], 0, "usage: scripts/ablation_table.py"),
    ([], 2, "the following arguments are required: runs"),
    (["--summary", "--eval", "eval_ood", "out/full"], 2, "not allowed with argument"),
])
def test_the_table_scripts_arguments(table, capsys, argv, code, says):
    with pytest.raises(SystemExit) as stop:
        table.main(argv)
    assert stop.value.code == code
    captured = capsys.readouterr()
    assert says in captured.out + captured.err


@pytest.mark.slow
def test_a_stopped_ablation_run_again_keeps_what_is_done_and_resumes_the_rest(tmp_path):
    out = tmp_path / "out"
    done = {"full/eval/retrieval.json": "{}", "sentence_only/train/export/hf/mmkd_student.json": "{}",
            "no_senta/train/checkpoints/global_step200/manifest.json": "{}", "with_tlm/train/train_config.json": "{}"}
    for path, text in done.items():
        (out / path).parent.mkdir(parents=True)
        (out / path).write_text(text)
    result, _ = ablation(tmp_path, recipe_text="max_length: 48\nweights: {tlm: 0.0}\n")
    assert result.returncode == 0, result.stderr
    assert "== full: trained and evaluated in" in result.stdout
    trained = {re.search(r"--output_dir=\S+/out/(\w+)/train", line).group(1): line
               for line in (tmp_path / "calls.txt").read_text().splitlines() if line.startswith("-m mmkd train")}
    evaluated = {re.search(r"--out \S+/out/(\w+)/eval", line).group(1)
                 for line in (tmp_path / "calls.txt").read_text().splitlines() if line.startswith("-m mmkd eval")}
    assert "full" not in trained and "full" not in evaluated
    assert "sentence_only" not in trained and "sentence_only" in evaluated
    assert trained["no_senta"].endswith("--resume") and trained["with_tlm"].endswith("--overwrite")
    assert not trained["no_struca_sent"].endswith(("--resume", "--overwrite"))


@pytest.mark.slow
def test_a_subword_student_that_is_not_a_student_is_refused_before_any_training(tmp_path):
    result, _ = ablation(tmp_path, SUBWORD_STUDENT=str(tmp_path / "no_such_student"))
    assert result.returncode == 2 and "SUBWORD_STUDENT" in result.stderr and "no_such_student" in result.stderr
    assert "mmkd train" not in (tmp_path / "calls.txt").read_text()


@pytest.mark.slow
def test_removing_the_term_that_leaves_senta_alone_is_not_run_twice(tmp_path):
    result, _ = ablation(tmp_path, recipe_text="max_length: 48\nweights: {tlm: 0.0, xwcl: 0.0, struca_tok: 0.0}\n")
    assert result.returncode == 0, result.stderr
    trained = {re.search(r"--output_dir=\S+/out/(\w+)/train", line).group(1)
               for line in (tmp_path / "calls.txt").read_text().splitlines() if line.startswith("-m mmkd train")}
    assert {"sentence_only", "full", "no_senta", "with_struca_tok"} <= trained
    assert "no_struca_sent" not in trained  # SentA alone: sentence_only
