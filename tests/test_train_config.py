"""The train config loader: defaults, then the recipe file, then --key=value; typed; unknown keys refused."""

from __future__ import annotations

import json

import pytest

from mmkd import cli
from mmkd.ds_config import check_batch_sizes
from mmkd.engine import load_ds_config
from mmkd.errors import MMKDError
from mmkd.train_config import TrainConfig, load_train_config, save_train_config

REQUIRED = ["--corpus=c", "--student=s", "--teacher_cache=t"]


def test_file_then_overrides_in_that_order(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("corpus: corpus/\nstudent: student/\nteacher_cache: cache/\nmax_steps: 10\nalpha: 0.3\n")
    cfg = load_train_config(str(recipe), ["--max_steps=20", "--live-teacher", "--weights.tlm=0.5"])
    assert (cfg.corpus, cfg.max_steps, cfg.alpha, cfg.live_teacher) == ("corpus/", 20, 0.3, True)
    assert cfg.weights == {"tlm": 0.5, "xwcl": 1.0, "senta": 1.0, "struca_sent": 1.0, "struca_tok": 1.0}
    assert cfg.seed == TrainConfig().seed


def test_json_recipe_and_round_trip(tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"corpus": "c", "student": "s", "live_teacher": True, "max_time_minutes": 5}))
    cfg = load_train_config(str(recipe))
    assert cfg.max_time_minutes == 5.0 and isinstance(cfg.max_time_minutes, float)
    save_train_config(cfg, tmp_path / "saved.json")
    assert load_train_config(str(tmp_path / "saved.json")) == cfg


def test_unknown_key_in_the_file_names_file_key_and_close_match(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("corpus: c\nstudent: s\nmax_step: 3\n")
    with pytest.raises(MMKDError, match=r"recipe\.yaml.*'max_step'.*did you mean max_steps"):
        load_train_config(str(recipe))


def test_unknown_override_is_refused_with_close_match():
    with pytest.raises(MMKDError, match=r"'--eval_intervall=5'.*'eval_intervall'.*eval_interval"):
        load_train_config(None, [*REQUIRED, "--eval_intervall=5"])


@pytest.mark.parametrize("key", ["lr", "train_micro_batch_size_per_gpu", "zero_stage", "fp16"])
def test_deepspeed_owned_keys_point_to_the_ds_config(key):
    with pytest.raises(MMKDError, match=rf"'{key}' is set in the DeepSpeed JSON"):
        load_train_config(None, [*REQUIRED, f"--{key}=1"])


@pytest.mark.parametrize(("override", "message"), [
    ("--max_steps=ten", r"max_steps must be int, got 'ten'"),
    ("--max_steps=1.5", r"max_steps must be int"),
    ("--live_teacher=maybe", r"live_teacher must be bool"),
    ("--seed", r"seed needs a value"),
    ("--weights.sent=1", r"unknown objective in weights: \['sent'\]"),
])
def test_override_types_are_checked(override, message):
    with pytest.raises(MMKDError, match=message):
        load_train_config(None, [*REQUIRED, override])


def test_file_types_are_checked(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("corpus: c\nstudent: s\nlive_teacher: true\nmax_steps: true\n")
    with pytest.raises(MMKDError, match=r"recipe\.yaml: max_steps must be int, got bool"):
        load_train_config(str(recipe))


def test_optional_path_takes_none():
    cfg = load_train_config(None, [*REQUIRED, "--teacher=none"])
    assert cfg.teacher is None


@pytest.mark.parametrize(("overrides", "message"), [
    (["--corpus=c", "--student=s"], r"teacher_cache=None"),
    ([*REQUIRED, "--struct_form=cosine"], r"struct_form='cosine'"),
    ([*REQUIRED, "--struct_bank_size=-1"], r"struct_bank_size=-1 \(>= 0"),
    ([*REQUIRED, "--struct_sent_detach_x=true"], r"struct_sent_detach_x=True \(it applies to struct_sent_mode"),
    ([*REQUIRED, "--struct_bank_size=64"], r"struct_bank_size=64 .*needs struct_sent_mode=cross_lingual"),
    ([*REQUIRED, "--struct_bank_size=64", "--struct_sent_mode=cross_lingual", "--live_teacher"],
     r"struct_bank_size=64 .*a teacher_cache"),
    ([*REQUIRED, "--weights.tlm=0", "--weights.xwcl=0", "--weights.senta=0", "--weights.struca_sent=0",
      "--weights.struca_tok=0"], r"at least one > 0"),
])
def test_values_no_run_can_use_are_refused(overrides, message):
    with pytest.raises(MMKDError, match=message):
        load_train_config(None, overrides)


def test_missing_recipe_file_is_named(tmp_path):
    with pytest.raises(MMKDError, match=r"nothere\.yaml: train config file not found"):
        load_train_config(str(tmp_path / "nothere.yaml"))


@pytest.mark.parametrize(("override", "message"), [
    ("--tau_w=0", r"tau_w=0\.0 \(a temperature must be finite and > 0\)"),
    ("--tau_w=-0.05", r"tau_w=-0\.05 \(a temperature"),
    ("--struct_tau=0", r"struct_tau=0\.0 \(a temperature"),
    ("--struct_tau=inf", r"struct_tau=inf \(a temperature"),
    ("--weights.tlm=inf", r"weights=\{'tlm': inf.*\(weights must be finite and >= 0"),
    ("--weights.senta=-1", r"weights=.*'senta': -1\.0.*\(weights must be finite and >= 0"),
    ("--max_skipped_steps=0", r"max_skipped_steps=0 \(must be >= 1\)"),
])
def test_values_that_can_only_fail_at_a_step_are_refused_when_read(override, message):
    with pytest.raises(MMKDError, match=rf"train config: bad value: {message}"):
        load_train_config(None, [*REQUIRED, override])


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("corpus: c\nstudent: s\nmax_steps: [10\nseed: 3\n")
    with pytest.raises(MMKDError, match=rf"^{recipe}: line 4, column 5: not valid YAML: expected ',' or ']', "
                                        "but got ':'; fix the file$"):
        load_train_config(str(recipe))


def test_key_value_as_two_words_and_as_one():
    cfg = load_train_config(None, ["--corpus", "c", "--student=s", "--teacher_cache", "t", "--resume", "--max_steps",
                                   "7", "--export", "false", "--live-teacher"])
    assert (cfg.corpus, cfg.student, cfg.teacher_cache, cfg.max_steps) == ("c", "s", "t", 7)
    assert (cfg.resume, cfg.export, cfg.live_teacher) == (True, False, True)
    with pytest.raises(MMKDError, match=r"'stray'"):
        load_train_config(None, [*REQUIRED, "--resume", "stray"])


@pytest.mark.parametrize("override", ["--weights={tlm: 0.1, senta: 2}", '--weights={"tlm": 0.1, "senta": 2}'])
def test_weights_as_one_mapping(override):
    cfg = load_train_config(None, [*REQUIRED, override])
    assert cfg.weights == {"tlm": 0.1, "xwcl": 1.0, "senta": 2.0, "struca_sent": 1.0, "struca_tok": 1.0}


def test_ds_overrides_are_recorded_and_applied_to_the_deepspeed_json(tmp_path):
    cfg = load_train_config(None, [*REQUIRED, "--ds.train_micro_batch_size_per_gpu=4", "--ds.optimizer.params.lr",
                                   "5e-5", "--ds.bf16.enabled=false"])
    assert cfg.ds == {"train_micro_batch_size_per_gpu": 4, "optimizer.params.lr": 5e-5, "bf16.enabled": False}
    save_train_config(cfg, tmp_path / "saved.json")
    assert load_train_config(str(tmp_path / "saved.json")).ds == cfg.ds
    config = load_ds_config(cfg.ds_config, cfg.ds)
    assert config["optimizer"]["params"]["lr"] == 5e-5 and config["bf16"] == {"enabled": False}
    assert check_batch_sizes(config, cfg.ds_config, world_size=1) == (4, 2)  # resolved by DeepSpeedConfig
    assert load_ds_config(cfg.ds_config)["train_micro_batch_size_per_gpu"] == 8  # the file is untouched


def test_ds_override_of_a_missing_key_names_it_with_close_matches():
    with pytest.raises(MMKDError, match=r"ds\.zero_optimisation\.stage: no key 'zero_optimisation'.*zero_optimization"):
        load_ds_config("cpu_bf16_zero2", {"zero_optimisation.stage": 3})


def test_help_lists_every_config_key_with_its_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    for key, default in TrainConfig().to_dict().items():
        assert f"--{key} " in out and f"(default {default!r})" in out
    assert "steps between dev evaluations" in out  # the comment beside the field
