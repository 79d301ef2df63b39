"""Training faults: a finished run retrained by accident, code planted in a checkpoint, damaged checkpoints,
a full disk, a resume hint that forgets --set, adapter files only their owner can read.

One tiny run (6 steps, a checkpoint every 2) is trained once per module, interrupted at step 4 and then
finished; every test works on its own copy. Add a damaged checkpoint as a row of CORRUPTIONS, a full-disk
case as a row of FULL_DISK.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shlex
import shutil
from pathlib import Path

import pytest

from tests.reliability.conftest import Outcome, assert_one_line_error, run_medkit
from tests.train.conftest import losses, qa_rows

STEPS = 6


def _recipe_text(base: Path, data: Path) -> str:
    import tomli_w

    return tomli_w.dumps(
        {
            "name": "tiny",
            "model": {"base": str(base)},
            "data": {
                "source": str(data),
                "format": "qa",
                "max_seq_len": 96,
                "split_ratios": [0.75, 0.25, 0.0],
            },
            "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
            "train": {
                "max_steps": STEPS,
                "batch_size": 4,
                "grad_accum": 2,
                "lr": 3e-3,
                "eval_every": 2,
                "save_every": 2,
                "log_every": 1,
                "warmup_ratio": 0.1,
            },
        }  # fmt: skip
    )


@pytest.fixture(scope="module")
def base_runs(tiny_model_dir, tmp_path_factory):
    """{'recipe': recipe.toml, 'interrupted': run stopped at step 4 (checkpoints 2 and 4), 'finished': same run
    resumed to the end}, trained under umask 022."""
    from medkit.train.loop import Interrupted
    from medkit.train.verb import train

    root = tmp_path_factory.mktemp("train-faults")
    data = root / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in qa_rows()))
    recipe = root / "tiny.toml"
    recipe.write_text(_recipe_text(tiny_model_dir("llama"), data))
    old_umask = os.umask(0o022)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MEDKIT_RUNS", str(root / "interrupted"))
            with pytest.raises(Interrupted):
                train(recipe, interrupt_at=4, console=_quiet())
            shutil.copytree(root / "interrupted", root / "finished")
            mp.setenv("MEDKIT_RUNS", str(root / "finished"))
            train(recipe, resume=True, console=_quiet())
    finally:
        os.umask(old_umask)
    return {
        "recipe": recipe,
        "interrupted": root / "interrupted" / "tiny",
        "finished": root / "finished" / "tiny",
    }


def _quiet():
    from rich.console import Console

    return Console(file=io.StringIO(), highlight=False, soft_wrap=True)


@pytest.fixture
def copy_run(base_runs, tmp_path, monkeypatch):
    """copy_run('interrupted' | 'finished') -> its copy at tmp_path/runs/tiny (MEDKIT_RUNS points there)."""
    monkeypatch.setenv("MEDKIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("MEDKIT_DEBUG", raising=False)

    def copy(kind: str) -> Path:
        dest = tmp_path / "runs" / "tiny"
        shutil.copytree(base_runs[kind], dest)
        return dest

    return copy


def cli(capsys, *args: str) -> Outcome:
    """`medkit ARGS` through the real entry point, in this process (so a test can patch a fault in)."""
    from medkit.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out = capsys.readouterr()
    return Outcome(done.value.code or 0, out.out, out.err)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _partials(run: Path) -> list[Path]:
    return [p for p in run.rglob("*") if p.name.endswith(".partial")]


# ---- 1. a finished run is not retrained without --force; --force also removes the stale export ----------
def test_finished_run_is_not_retrained_without_force(base_runs, copy_run, tmp_path, capsys):
    run = copy_run("finished")
    (run / "export" / "merged").mkdir(parents=True)
    (run / "export" / "tiny-q4_0.gguf").write_bytes(b"GGUF old weights")
    adapter = _md5(run / "adapter" / "adapter_model.safetensors")
    recipe = str(base_runs["recipe"])
    env = {"MEDKIT_RUNS": str(tmp_path / "runs")}

    out = run_medkit("train", recipe, "--set", "train.lr=0.002", env=env)
    assert_one_line_error(out, str(run), "finished run", "--force", "export/")
    assert _md5(run / "adapter" / "adapter_model.safetensors") == adapter  # nothing replaced
    assert (run / "export" / "tiny-q4_0.gguf").is_file()
    assert_one_line_error(cli(capsys, "train", recipe, "--resume"), "finished run", "nothing to resume")

    before = json.loads((run / "run.json").read_text())["recipe_fingerprint"]
    out = cli(capsys, "train", recipe, "--set", "train.lr=0.002", "--force")
    assert out.code == 0, out.stderr
    assert "removed" in out.stderr and str(run / "export") in out.stderr
    assert not (run / "export").exists()  # nothing made from the old adapter stays
    info = json.loads((run / "run.json").read_text())
    assert info["train"]["status"] == "finished" and info["recipe_fingerprint"] != before
    assert _md5(run / "adapter" / "adapter_model.safetensors") != adapter


# ---- 2. --resume never unpickles ---------------------------------------------------------------------
class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.mark.parametrize("layout", ["next-to-the-real-state", "old-pickled-format"])
def test_resume_runs_no_code_from_checkpoint_files(copy_run, base_runs, tmp_path, capsys, layout):
    import torch

    run = copy_run("interrupted")
    ck = run / "checkpoints" / "step-00000004"
    marker = tmp_path / "payload-ran"
    for name in ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng-rank0.pt"):
        torch.save(Payload(marker), ck / name)
    if layout == "old-pickled-format":  # what an older medkit wrote: only .pt files
        for p in ck.glob("*"):
            if p.name.startswith(("optimizer.", "scheduler.", "rng-rank0.")) and p.suffix != ".pt":
                p.unlink()
    probe = tmp_path / "probe-ran"  # the same payload does run when a .pt file is unpickled
    torch.save(Payload(probe), tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert probe.exists(), "the planted payload is not a working one"

    out = cli(capsys, "train", str(base_runs["recipe"]), "--resume")
    assert out.code == 0, out.stderr
    assert not marker.exists(), "resume ran code from a checkpoint file"
    if layout == "old-pickled-format":
        assert (
            "step-00000004" in out.stderr and "never loaded" in out.stderr and "step-00000002" in out.stderr
        )
    assert json.loads((run / "run.json").read_text())["train"]["status"] == "finished"


# ---- 3. a damaged checkpoint: say so, resume from the newest complete one ------------------------------
def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


CORRUPTIONS = {
    "truncated adapter": lambda ck: _truncate(ck / "adapter.safetensors"),
    "garbled state.json": lambda ck: (ck / "state.json").write_text('{"step": 4, "epo'),
    "state.json missing": lambda ck: (ck / "state.json").unlink(),
    "optimizer tensors missing": lambda ck: (ck / "optimizer.safetensors").unlink(),
    "truncated optimizer tensors": lambda ck: _truncate(ck / "optimizer.safetensors"),
    "empty scheduler.json": lambda ck: (ck / "scheduler.json").write_text(""),
    "rng state missing": lambda ck: (ck / "rng-rank0.json").unlink(),
    "recipe.toml missing": lambda ck: (ck / "recipe.toml").unlink(),
}


@pytest.mark.parametrize("fault", list(CORRUPTIONS))
def test_corrupt_checkpoint_is_skipped_with_a_note(copy_run, fault):
    from medkit.recipe import load_recipe
    from medkit.train.verb import check_run_dir

    run = copy_run("interrupted")
    CORRUPTIONS[fault](run / "checkpoints" / "step-00000004")
    notes: list[str] = []
    chosen = check_run_dir(load_recipe(run / "recipe.toml"), run, resume=True, force=False, warn=notes.append)
    assert chosen == run / "checkpoints" / "step-00000002"
    assert len(notes) == 1 and "\n" not in notes[0]
    assert "step-00000004" in notes[0] and "corrupt" in notes[0] and "resuming from step-00000002" in notes[0]


def test_resume_past_a_corrupt_checkpoint_repeats_the_same_losses(base_runs, copy_run, capsys):
    run = copy_run("interrupted")
    _truncate(run / "checkpoints" / "step-00000004" / "adapter.safetensors")
    out = cli(capsys, "train", str(base_runs["recipe"]), "--resume")
    assert out.code == 0, out.stderr
    assert "step-00000004" in out.stderr and "resuming from step-00000002" in out.stderr
    assert "Traceback" not in out.stderr
    a, b = losses(base_runs["finished"]), losses(run)
    assert sorted(b) == list(range(1, STEPS + 1))
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-5), step


def test_no_complete_checkpoint_is_one_line(base_runs, copy_run, tmp_path):
    run = copy_run("interrupted")
    _truncate(run / "checkpoints" / "step-00000004" / "adapter.safetensors")
    (run / "checkpoints" / "step-00000002" / "state.json").write_text("not json")
    out = run_medkit(
        "train", str(base_runs["recipe"]), "--resume", env={"MEDKIT_RUNS": str(tmp_path / "runs")}
    )
    assert_one_line_error(out, "no complete checkpoint", "step-00000004", "step-00000002", "--force")


# ---- 4. a full disk while saving: one line with the path and the space needed, nothing partial ----------
def _safetensors_full():
    from safetensors import SafetensorError

    return SafetensorError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    )


def _oserror_full():
    return OSError(errno.ENOSPC, "No space left on device")


FULL_DISK = [  # (a path written while the disk fills up, the error the writer raises, what the line names)
    (".step-00000004.partial", _safetensors_full, "step-00000004"),
    (".step-00000004.partial", _oserror_full, "step-00000004"),
    (".best.partial", _safetensors_full, "best"),
    (".adapter.partial", _safetensors_full, "adapter"),
    (".adapter.partial", _oserror_full, "adapter"),
]


@pytest.mark.parametrize("where,error,named", FULL_DISK, ids=[f"{w}-{e.__name__}" for w, e, _ in FULL_DISK])
def test_full_disk_while_training(base_runs, tmp_path, monkeypatch, capsys, where, error, named):
    import peft.peft_model
    import safetensors.torch

    real = safetensors.torch.save_file

    def save_file(tensors, filename, *args, **kwargs):
        if where in str(filename):
            Path(filename).write_bytes(b"\0" * 64)  # what a full disk leaves: a short file
            raise error()
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    monkeypatch.setattr(peft.peft_model, "safe_save_file", save_file)
    monkeypatch.setenv("MEDKIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("MEDKIT_DEBUG", raising=False)
    run = tmp_path / "runs" / "tiny"

    line = assert_one_line_error(
        cli(capsys, "train", str(base_runs["recipe"])), "disk full", named, "needs about"
    )
    assert _partials(run) == [], "a partial folder was left behind"
    assert json.loads((run / "run.json").read_text())["train"]["status"] == "failed"
    if named == "step-00000004":  # the previous checkpoint is intact and the line says how to go on
        assert (run / "checkpoints" / "step-00000002" / "state.json").is_file()
        assert "resume from step-00000002" in line and "--resume" in line
    if named == "adapter":
        assert not (run / "adapter").exists()


# ---- 5. the resume hint keeps the --set overrides ----------------------------------------------------
def test_resume_hint_keeps_set_overrides(base_runs, tmp_path, monkeypatch, capsys):
    from rich.console import Console

    from medkit.train.loop import Interrupted
    from medkit.train.verb import train

    monkeypatch.setenv("MEDKIT_RUNS", str(tmp_path / "runs"))
    console = Console(file=io.StringIO(), highlight=False, soft_wrap=True, width=400)
    sets = ("train.lr=0.002", "description=two words; it's quoted")
    with pytest.raises(Interrupted):
        train(base_runs["recipe"], overrides=sets, interrupt_at=2, console=console)
    hint = [x for x in console.file.getvalue().splitlines() if x.startswith("resume with: ")]
    assert len(hint) == 1
    argv = shlex.split(hint[0].removeprefix("resume with: "))
    assert argv[:3] == ["medkit", "train", str(base_runs["recipe"])] and argv[-1] == "--resume"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--set"] == list(sets)
    out = cli(capsys, *argv[1:])  # the hint, run as printed, resumes (a dropped lr would be refused)
    assert out.code == 0, out.stderr
    assert json.loads((tmp_path / "runs" / "tiny" / "run.json").read_text())["train"]["status"] == "finished"


# ---- 6. the adapter and checkpoint files get the modes a plain open() gives --------------------------
def test_run_files_respect_the_umask(base_runs):
    run = base_runs["finished"]
    files = [p for sub in ("adapter", "checkpoints") for p in (run / sub).rglob("*") if p.is_file()]
    assert any(p.name == "adapter_model.safetensors" for p in files)
    modes = {p.relative_to(run).as_posix(): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(0o644)}, modes  # trained under umask 022: not 0600
