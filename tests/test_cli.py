"""The `mmkd` command: every subcommand is listed and documented; user errors are one line, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mmkd import cli


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for name, (_, help_line) in cli.COMMANDS.items():
        assert name in printed and help_line.split()[0] in printed


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_subcommand_has_its_own_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"usage: mmkd {name}") and "--" in printed


def test_unknown_subcommand_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["distill"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'distill'" in capsys.readouterr().err


def test_user_error_is_one_line_naming_the_path(tmp_path, capsys):
    missing = tmp_path / "no-such-corpus"
    assert cli.main(["corpus", "stats", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmkd corpus: error:") and str(missing) in err and "Traceback" not in err


def test_launcher_local_rank_before_the_subcommand_is_accepted(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--local_rank=1", "train", "--help"])
    assert exit_info.value.code == 0


def test_the_launchers_local_rank_is_dropped_wherever_it_comes():
    assert cli.without_local_rank(["--local_rank=1", "r.yaml", "--max_steps=2"]) == ["r.yaml", "--max_steps=2"]
    assert cli.without_local_rank(["train", "--local-rank=0", "--max_steps=2"]) == ["train", "--max_steps=2"]


def test_module_entry_points_run_the_cli_under_the_launcher(tmp_path, capsys):
    """`deepspeed --module mmkd.train|mmkd.profiling|mmkd.teacher_cache` passes --local_rank=N first; each
    entry point is `mmkd <command>`: one error line, exit code 2."""
    from mmkd import profiling, train

    missing = tmp_path / "missing.yaml"
    assert train.main(["--local_rank=0", str(missing)]) == 2
    assert profiling.main(["--local_rank=1", str(missing), "--report", str(tmp_path / "report")]) == 2
    assert cli.main(["cache-teacher", "--local_rank=0", "--out", str(tmp_path / "cache")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in errors] == ["mmkd train", "mmkd profile", "mmkd cache-teacher"]
    assert all(": error: " in line for line in errors) and str(missing) in errors[0] and str(missing) in errors[1]


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from mmkd import cli; cli.build_parser(['--help']); "
            "print(sorted({'torch', 'transformers', 'datasets'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
