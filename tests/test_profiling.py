"""`mmkd profile` (mmkd/profiling.py) and scripts/bench_step.py on the tiny setup (tests/tiny_setup.py),
each run as a child process (a DeepSpeed process group stays out of the test process), plus the
pieces that need no engine: phase ranges, span unions, argument parsing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mmkd.cli import without_local_rank
from mmkd.ds_config import check_batch_sizes
from mmkd.engine import load_ds_config
from mmkd.phases import phase
from mmkd.profiling import FORWARD_PARTS, STEP_PHASES, parse_options, span_union_ms
from tiny_setup import build_tiny, subprocess_env

REPO = Path(__file__).resolve().parents[1]
TOLERANCE_MS = 1.0  # range edges vs. the loop's clock


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, teacher_dir) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"), teacher_dir)


@pytest.fixture(scope="module")
def profiled(tiny) -> tuple[Path, str]:
    """(report directory, stdout) of `mmkd profile` on the tiny recipe: 2 steps after 1 warm-up; the
    options sit between the overrides."""
    report = tiny / "profile"
    command = [str(Path(sys.executable).with_name("mmkd")), "profile", str(tiny / "recipe.yaml"), "--steps", "2",
               f"--output_dir={tiny / 'unused'}", "--warmup", "1", "--report", str(report), "--log_interval=5"]
    result = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    return report, result.stdout


def test_profile_writes_the_report_files_and_a_summary_line(profiled, tiny):
    report, stdout = profiled
    assert {path.name for path in report.iterdir()} == {"report.md", "report.json", "flops_profiler.txt",
                                                         "torch_ops.txt"}
    assert "DeepSpeed Flops Profiler" in (report / "flops_profiler.txt").read_text()
    assert "mmkd/forward" in (report / "torch_ops.txt").read_text()
    assert f"report {report / 'report.md'}" in stdout and "SUMMARY: 2 steps," in stdout
    assert not (tiny / "unused").exists()  # no tensorboard or checkpoint written into the recipe's output_dir


def test_every_phase_has_a_time_and_the_parts_fit_the_total(profiled):
    data = json.loads((profiled[0] / "report.json").read_text())
    phases, forward = data["phases_ms"], data["forward_ms"]
    assert set(phases) == {*STEP_PHASES, "other"} and set(forward) == {*FORWARD_PARTS, "forward_other"}
    assert all(phases[name] >= 0 for name in STEP_PHASES)
    assert all(forward[name] > 0 for name in FORWARD_PARTS)  # every weight is 1: each term ran, in its range
    assert data["communication_ms"] >= 0
    assert sum(phases[name] for name in STEP_PHASES) <= data["step_ms"] + TOLERANCE_MS
    assert sum(forward[name] for name in FORWARD_PARTS) <= phases["forward"] + TOLERANCE_MS
    assert data["communication_ms"] <= phases["backward"] + phases["step"] + TOLERANCE_MS
    assert phases["forward"] > 0 and phases["backward"] > 0 and phases["step"] > 0


def test_profile_reports_throughput_and_deepspeeds_own_figures(profiled):
    data = json.loads((profiled[0] / "report.json").read_text())
    assert (data["steps"], data["warmup"], data["teacher"], data["samples_per_step"]) == (2, 1, "cached", 16)
    assert all(data[key] > 0 for key in ("samples_per_s", "tokens_per_s", "tflops", "mfu", "peak_tflops"))
    # the throughput meter and the step clock time the same loop
    assert data["samples_per_s"] == pytest.approx(data["samples_per_step"] / (data["step_ms"] / 1e3), rel=0.05)
    assert set(data["deepspeed_timers_ms"]) == {"fwd", "bwd", "bwd_inner", "bwd_allreduce", "step"}
    assert data["deepspeed_timers_ms"]["fwd"] > 0 and data["deepspeed_timers_ms"]["bwd"] > 0
    assert data["flops_profiler"]["fwd_flops_last_micro_batch"] > 0
    markdown = (profiled[0] / "report.md").read_text()
    for label in ("data: sampling", "teacher: cache read", "student forward", "loss tlm", "loss xwcl", "loss senta",
                  "loss struca_sent", "loss struca_tok", "backward", "optimizer step", "communication",
                  "**total**", "samples/s", "MFU"):
        assert label in markdown, label


def test_bench_step_help():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_step.py"), "--help"],
                            capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert result.returncode == 0 and "--teacher-cache" in result.stdout and "plain PyTorch" in result.stdout


def markdown_rows(lines: list[str], header: str) -> list[list[str]]:
    """The cells of the rows of the markdown table whose header line starts with `header`."""
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("| "):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_bench_step_prints_before_after_and_paper_shapes_on_the_tiny_setup(tmp_path):
    rows = tmp_path / "rows.json"
    command = [sys.executable, str(REPO / "scripts" / "bench_step.py"), "--steps", "1", "--warmup", "0",
               "--json", str(rows)]
    result = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    lines = result.stdout.splitlines()
    runs = markdown_rows(lines, "| run | teacher | precision | step ms (median) | samples/s | GFLOP/step |")
    assert [row[0][:3] for row in runs] == ["(a)", "(b)", "(c)", "(d)"]
    assert [row[1] for row in runs] == ["cached", "cached", "live", "cached"]
    assert [row[2] for row in runs] == ["fp32"] * 4  # the main recipe trains in fp32 (cpu_fp32_zero2_micro64)
    assert all(float(row[3]) > 0 and float(row[4]) > 0 for row in runs)
    assert float(runs[0][5]) > float(runs[1][5])  # before: the MLM head on every position
    assert any(line.startswith("before / after: step time ") for line in lines)
    paper = markdown_rows(lines, "| MLM head | FlopCounterMode (meta) | mmkd.flops |")
    assert len(paper) == 2 and all(row[1] == row[2] for row in paper)  # counted = FlopCounterMode
    assert float(paper[0][1]) > float(paper[1][1])
    saved = json.loads(rows.read_text())
    assert [row["run"] for row in saved["runs"]] == [row[0] for row in runs]
    name = yaml.safe_load((REPO / "recipes" / "cpu_main.yaml").read_text())["ds_config"]
    micro, accumulation = check_batch_sizes(load_ds_config(name), name, world_size=1)
    pairs = micro * accumulation
    for row in saved["runs"]:  # samples/s is the recipe's pairs per step over the median step time
        assert row["samples_per_s"] == pytest.approx(pairs / (row["step_ms_median"] / 1e3))
    assert saved["paper_shapes"]["student_parameters"] > 178e6


def test_phase_is_a_profiler_range_only_while_profiling():
    with phase("outside"):
        pass
    with torch.profiler.profile() as profiler:
        with phase("inside"):
            torch.ones(2).sum()
    names = {event.name for event in profiler.events()}
    assert "mmkd/inside" in names and "mmkd/outside" not in names


def test_span_union_counts_overlaps_once():
    assert span_union_ms([(30.0, 40.0), (0.0, 10.0), (5.0, 20.0), (6.0, 7.0)]) == pytest.approx(0.030)
    assert span_union_ms([]) == 0.0


def test_profile_options_go_anywhere_among_the_overrides():
    launched = ["--local_rank=0", "r.yaml", "--max_steps=3", "--steps", "4", "--live_teacher", "--report", "out"]
    recipe, options, overrides = parse_options(without_local_rank(launched))  # as `mmkd profile` gets them
    assert (recipe, options.steps, options.warmup, options.report) == ("r.yaml", 4, 2, "out")
    assert overrides == ["--max_steps=3", "--live_teacher"]
