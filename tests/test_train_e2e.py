"""mmkd.train end to end on a CPU: the deepspeed launcher with 2 ranks (ZeRO-2 and ZeRO-3, bf16), one
process without a launcher (fp32), resume, TensorBoard scalars, cached vs live teacher, the export.

Fixtures are built once per module: the tiny setup of tests/tiny_setup.py (a 180-pair synthetic corpus
in three languages, random 2-layer teacher and student, teacher caches of train and dev).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmkd.engine import free_port
from tiny_setup import build_tiny, scalars, subprocess_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TERMS = ("tlm", "xwcl", "senta", "struca_sent", "struca_tok")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, teacher_dir) -> Path:
    """The tiny setup (tests/tiny_setup.py) plus a ZeRO-3 variant of the CPU DeepSpeed config."""
    root = build_tiny(tmp_path_factory.mktemp("tiny"), teacher_dir)
    zero3 = json.loads((REPO / "ds_configs" / "cpu_bf16_zero2.json").read_text())
    zero3["zero_optimization"] = {"stage": 3}
    (root / "cpu_bf16_zero3.json").write_text(json.dumps(zero3))
    return root


def run_train(tiny: Path, name: str, overrides: list[str], ranks: int) -> Path:
    """Run the recipe with overrides into tiny/name: the deepspeed launcher with `--num_gpus 2`, or one plain
    process."""
    out = tiny / name
    args = ["mmkd.train", str(tiny / "recipe.yaml"), f"--output_dir={out}", *overrides]
    if ranks == 1:
        command = [sys.executable, "-m", *args]
    else:
        command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(ranks),  # `deepspeed`
                   "--master_port", str(free_port()), "--module", *args]
    result = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    return out


def run_config_text(out: Path) -> str:
    """The run/config TensorBoard text of a run (its first event)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard" / "mmkd"), size_guidance={"tensors": 0})
    events.Reload()
    (first, *_) = events.Tensors("run/config/text_summary")
    return first.tensor_proto.string_val[0].decode("utf-8")


@pytest.fixture(scope="module")
def zero2(tiny) -> Path:
    """2 ranks, ZeRO-2 bf16, cached teacher, 4 steps of 8 x 2 accumulation x 2 ranks = 32 pairs, export."""
    return run_train(tiny, "zero2", [f"--dev_teacher_cache={tiny / 'cache_dev'}"], ranks=2)


@pytest.fixture(scope="module")
def resumed(tiny) -> Path:
    """The zero2 run stopped by its time bound after step 1, then resumed with --resume to step 4; its
    dev evaluation runs the live teacher (no dev_teacher_cache), which does not touch training."""
    run_train(tiny, "resumed", ["--max_time_minutes=0.0001", "--export=false"], ranks=2)
    return run_train(tiny, "resumed", ["--resume", "--export=false"], ranks=2)


def test_two_ranks_zero2_logs_every_term_and_throughput(zero2):
    logged = scalars(zero2)
    steps = [1, 2, 3, 4]  # x axis: optimizer steps
    assert not any(tag.startswith("Train/") for tag in logged)  # one namespace: DeepSpeed's events moved to train/
    for tag in ["train/loss", *(f"train/{term}" for term in TERMS), "train/grad_norm", "train/samples_per_s",
                "train/tokens_per_s", "train/tflops", "train/mfu", "train/padding_efficiency", "train/lr"]:
        assert sorted(logged[tag]) == steps, tag
        assert all(torch.isfinite(torch.tensor(list(logged[tag].values())))), tag
    assert all(value > 0 for tag in ("train/samples_per_s", "train/tokens_per_s", "train/tflops", "train/mfu")
               for value in logged[tag].values())
    assert all(0 < value <= 1 for value in logged["train/padding_efficiency"].values())
    for step in steps:
        total = sum(logged[f"train/{term}"][step] for term in TERMS)  # every weight is 1
        assert logged["train/loss"][step] == pytest.approx(total, rel=1e-5)
    retrieval = [f"dev/retrieval/{lang}/{direction}" for lang in ("de", "es", "fr") for direction in ("x2y", "y2x")]
    for tag in ["dev/loss", *(f"dev/{term}" for term in TERMS), "dev/lang/de", "dev/lang/es", "dev/lang/fr",
                *retrieval, "dev/retrieval/mean"]:
        assert sorted(logged[tag]) == [2, 4], tag
    for step in (2, 4):
        mean = sum(logged[tag][step] for tag in retrieval) / len(retrieval)
        assert logged["dev/retrieval/mean"][step] == pytest.approx(mean, rel=1e-6)
    config_text = run_config_text(zero2)
    assert '"train_config"' in config_text and '"train_micro_batch_size_per_gpu": 8' in config_text
    # top-1 in a pool of all dev pairs of the language (de 12, es and fr 6): a multiple of 1/12 or 1/6
    for tag in retrieval:
        assert all(0 <= value <= 1 and abs(value * 12 - round(value * 12)) < 1e-5 for value in logged[tag].values())
    checkpoint = zero2 / "checkpoints" / "step4"
    assert (zero2 / "checkpoints" / "latest").read_text().strip() == "step4"
    assert {"rng_rank0.safetensors", "rng_rank1.safetensors", "mmkd_checkpoint.json"} <= {
        path.name for path in checkpoint.iterdir()}


def test_resume_after_a_stop_continues_exactly(zero2, resumed):
    """Same train losses, gradient norms and lr, bit for bit (float32 as logged), for steps 2 to 4."""
    full, continued = scalars(zero2), scalars(resumed)
    assert sorted(continued["train/loss"]) == [1, 2, 3, 4]
    for tag in ["train/loss", *(f"train/{term}" for term in TERMS), "train/grad_norm", "train/lr"]:
        after_first = {s: v for s, v in continued[tag].items() if s > 1}
        assert after_first == {s: v for s, v in full[tag].items() if s > 1}, tag


def test_cached_and_live_teacher_give_the_same_dev_loss(zero2, resumed):
    """zero2 evaluates with the cached (float16) teacher, resumed with the live one, on the same weights."""
    cached, live = scalars(zero2), scalars(resumed)
    for tag in ["dev/loss", *(f"dev/{term}" for term in TERMS)]:
        for step in (2, 4):
            assert live[tag][step] == pytest.approx(cached[tag][step], rel=5e-4, abs=1e-6), (tag, step)


def test_export_loads_with_transformers_and_sentence_transformers(tiny, zero2):
    """The exported fp32 weights give the embeddings the engine gave (it computes in bf16: ~1e-2): the
    HF masked LM's encoder its mean-pooled states, the sentence-transformers model P_s of them."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from mmkd.models.pooling import mean_pool
    from mmkd.models.student import load_student

    export = zero2 / "export"
    check = json.loads((export / "embedding_check.json").read_text())
    encoder, sentence = (torch.tensor(check["embeddings"][name]) for name in ("encoder", "sentence"))
    assert encoder.shape == (8, 48) and sentence.shape == (8, 32)
    by_st = SentenceTransformer(str(export / "sentence_transformers"), device="cpu").encode(
        check["texts"], convert_to_tensor=True)
    tokenizer = AutoTokenizer.from_pretrained(export / "hf")
    model = AutoModelForMaskedLM.from_pretrained(export / "hf").base_model
    encoded = tokenizer(check["texts"], padding=True, return_tensors="pt")
    with torch.no_grad():
        by_hf = mean_pool(model(**encoded).last_hidden_state, encoded["attention_mask"])
    for embeddings, reference in ((by_st, sentence), (by_hf, encoder)):
        torch.testing.assert_close(embeddings, reference, atol=3e-2, rtol=3e-2)
        assert torch.nn.functional.cosine_similarity(embeddings, reference).min() > 0.999
    trained, initial = load_student(export / "hf"), load_student(tiny / "student")
    assert trained.d_teacher == 32
    assert not torch.equal(trained.heads.word.weight, initial.heads.word.weight)
    assert not torch.equal(trained.mlm.bert.embeddings.word_embeddings.weight,
                           initial.mlm.bert.embeddings.word_embeddings.weight)


def wait_until_gone(marker: str, seconds: float = 120.0) -> None:
    """Wait until no process has `marker` in its command line (a killed run's ranks have exited)."""
    deadline = time.monotonic() + seconds
    while subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, f"processes of {marker} still running after {seconds} s"
        time.sleep(0.5)


def test_a_rank_killed_writing_its_shard_then_resumed_ends_as_the_uninterrupted_run(tiny, zero2):
    """zero2 with a checkpoint every step; rank 1 is killed -9 halfway through writing its optimizer
    shard of step2 (tests/kill_at.py; the launcher then stops rank 0): step2 never appears, and
    --resume continues from step1 to the losses, gradient norms and lr of zero2, bit for bit."""
    out = tiny / "rank_killed"
    overrides = [f"--dev_teacher_cache={tiny / 'cache_dev'}", "--save_interval=1", "--export=false"]
    command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(free_port()),
               str(REPO / "tests" / "kill_at.py"), "optimizer-file", "step2", str(tiny / "recipe.yaml"),
               f"--output_dir={out}", *overrides]
    killed = subprocess.run(command, cwd=REPO, env={**subprocess_env(), "KILL_RANK": "1", "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=900)
    assert killed.returncode != 0, killed.stdout[-3000:]
    wait_until_gone(str(out))  # the launcher exits before the surviving rank it stops has: it is not the resume
    assert sorted(path.name for path in (out / "checkpoints").glob("step*")) == ["step1", "step2.partial"]
    run_train(tiny, "rank_killed", ["--resume", *overrides], ranks=2)
    assert sorted(path.name for path in (out / "checkpoints").glob("step*")) == ["step2", "step3", "step4"]
    full, continued = scalars(zero2), scalars(out)
    for tag in ["train/loss", *(f"train/{term}" for term in TERMS), "train/grad_norm", "train/lr"]:
        assert continued[tag] == full[tag], tag


def test_two_ranks_zero3_with_live_teacher_trains_and_exports(tiny, zero2):
    out = run_train(tiny, "zero3", [f"--ds_config={tiny / 'cpu_bf16_zero3.json'}", "--live_teacher",
                                    "--max_steps=2"], ranks=2)
    logged, reference = scalars(out), scalars(zero2)
    assert sorted(logged["train/loss"]) == [1, 2]
    # step 1 runs the initial weights on the same batches as zero2: only the teacher's float16 cache differs
    for tag in ["train/loss", *(f"train/{term}" for term in TERMS)]:
        assert logged[tag][1] == pytest.approx(reference[tag][1], rel=5e-3, abs=1e-3), tag
    check = json.loads((out / "export" / "embedding_check.json").read_text())
    assert max(check["max_abs_difference"].values()) < 3e-2


def test_one_process_without_launcher_fp32(tiny):
    out = run_train(tiny, "single", ["--ds_config=ds_configs/cpu_fp32_zero2.json", "--max_steps=2",
                                     f"--dev_teacher_cache={tiny / 'cache_dev'}"], ranks=1)
    logged = scalars(out)
    assert sorted(logged["train/loss"]) == [1, 2]  # optimizer steps (8 x 2 accumulation x 1 rank pairs each)
    assert sorted(logged["dev/loss"]) == [2]
    check = json.loads((out / "export" / "embedding_check.json").read_text())
    assert check["engine_dtype"] == "torch.float32"
    assert max(check["max_abs_difference"].values()) < 1e-5


def test_fp16_on_a_cpu_is_refused_up_front(tiny, capsys):
    from mmkd.train import main

    assert main([str(tiny / "recipe.yaml"), f"--ds_config={REPO / 'ds_configs' / 'gpu_fp16_zero1.json'}",
                 f"--output_dir={tiny / 'fp16_refused'}"]) == 2
    assert "fp16 needs a GPU; use cpu_bf16_zero2 (bf16)" in capsys.readouterr().err


def test_config_typo_is_refused_naming_the_key(tiny, capsys):
    from mmkd.cli import main

    assert main(["train", str(tiny / "recipe.yaml"), "--eval_intervall=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown train config key 'eval_intervall'" in err and "eval_interval" in err
