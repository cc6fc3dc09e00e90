"""python -m fusion.deep.train as a user meets it: checkpoints that survive a stop, usage errors before any
training, exports that destroy nothing, a record of the data actually used, resumed runs that go on."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fusion.deep.train as training
from fusion.deep.train import main, train

REPO = Path(__file__).resolve().parents[1]
TINY = dict(batch=2, crop_px=32, log_every=1)


def tiny_images() -> list[np.ndarray]:
    return [np.random.default_rng(0).random((48, 48), dtype=np.float32)]


@pytest.fixture
def no_image_loading(monkeypatch):
    """The command's own loading replaced by one tiny image (the installed data takes seconds)."""
    loader = lambda *args, **kwargs: {"tiny": tiny_images()}  # noqa: E731
    monkeypatch.setattr(training, "load_training_images_by_source", loader, raising=False)
    monkeypatch.setattr(training, "load_training_images", lambda *a, **k: tiny_images())


def step_of(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["step"])


# 1. Work is kept: checkpoints every N steps, atomically, and on a stop; destinations checked first.

@pytest.mark.usefixtures("one_torch_thread")
def test_a_checkpoint_is_written_every_n_steps_and_at_the_end(tmp_path, monkeypatch):
    written = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda state, path: (written.append(state["step"]), real_save(state, path)))
    train(5, tmp_path / "ck.pt", images=tiny_images(), checkpoint_every=2, **TINY)
    assert written == [2, 4, 5] and step_of(tmp_path / "ck.pt") == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.json", "ck.pt"]  # no temporary file left


@pytest.mark.usefixtures("one_torch_thread")
def test_a_write_cut_short_leaves_the_earlier_checkpoint_whole(tmp_path, monkeypatch):
    out = tmp_path / "ck.pt"
    train(1, out, images=tiny_images(), **TINY)

    def killed_mid_write(state, path):
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError("killed mid-write")

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(OSError, match="killed mid-write"):
        train(1, out, resume=out, images=tiny_images(), **TINY)
    assert step_of(out) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.json", "ck.pt"]


STOPPED_RUN = """
import os, signal, sys
import numpy as np, torch
import fusion.deep.train as training
torch.set_num_threads(1)
tiny = lambda *a, **k: [np.random.default_rng(0).random((48, 48), dtype=np.float32)]
training.load_training_images = tiny
training.load_training_images_by_source = lambda *a, **k: {"tiny": tiny()}
real_batch, calls = training.random_batch, []
def batch(*args):
    calls.append(1)
    if len(calls) == 3:  # the user stops it during the third step
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    return real_batch(*args)
training.random_batch = batch
sys.exit(training.main(sys.argv[2:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("signal_name, status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stopped_run_writes_its_checkpoint_and_says_how_to_resume(tmp_path, signal_name, status):
    out = tmp_path / "ck.pt"
    run = subprocess.run([sys.executable, "-c", STOPPED_RUN, signal_name, "--steps", "50", "--out", str(out),
                          "--batch", "2", "--crop-px", "32"], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == status, run.stderr
    assert "Traceback" not in run.stderr
    last_line = run.stderr.strip().splitlines()[-1]
    assert f"stopped by {signal_name} at step 3 of 50" in last_line and f"--resume {out}" in last_line
    # The command that goes on keeps the run's own options (it gave the defaults' 64 px crops and batch 8 instead).
    assert "--steps 47 " in last_line and "--batch 2 " in last_line and "--crop-px 32 " in last_line
    assert step_of(out) == 3 and json.loads(out.with_suffix(".json").read_text())["steps"] == 3


@pytest.mark.usefixtures("no_image_loading")
@pytest.mark.parametrize("where", ["below_a_file", "a_folder"])
def test_an_out_that_cannot_be_written_is_a_usage_error_before_training(tmp_path, monkeypatch, capsys, where):
    (tmp_path / "afile").touch()
    (tmp_path / "folder").mkdir()
    out = tmp_path / "afile" / "ck.pt" if where == "below_a_file" else tmp_path / "folder"
    monkeypatch.setattr(training, "random_batch", lambda *a: pytest.fail("trained before checking --out"))
    with pytest.raises(SystemExit) as stop:
        main(["--steps", "3", "--out", str(out)])
    assert stop.value.code == 2
    assert f"--out {out}" in capsys.readouterr().err.strip().splitlines()[-1]


# 2. The data used: from the repository's ../shared/data, and said in the record.

def test_shared_data_is_found_beside_the_repository():
    assert (training.REPO_ROOT / "pyproject.toml").is_file() and (training.REPO_ROOT / "fusion").is_dir()
    assert training.REPO_ROOT.parent / "shared" / "data" == training.SHARED_DATA


@pytest.mark.slow
def test_the_record_counts_the_images_of_each_source(tmp_path, monkeypatch, capsys):
    import tifffile

    stack = tmp_path / "data" / "tiny-stack"
    stack.mkdir(parents=True)
    for index in range(4):
        tifffile.imwrite(stack / f"slice_{index:02d}.tif", np.full((40, 40), 50 * index, np.uint8))
    monkeypatch.setattr(training, "SHARED_DATA", tmp_path / "data")
    monkeypatch.setattr(training, "SKIMAGE_IMAGES", ("camera",))
    by_source = training.load_training_images_by_source()
    assert {k: len(v) for k, v in by_source.items()} == {
        "scikit-image data": 1, "frames of ../shared/data/tiny-stack": 4, "synthetic textures": 3}
    record = train(1, tmp_path / "ck.pt", images=by_source, batch=1, crop_px=32, checkpoint_every=1)
    assert record["data"] == {"scikit-image data": 1, "frames of ../shared/data/tiny-stack": 4,
                              "synthetic textures": 3}
    assert json.loads((tmp_path / "ck.json").read_text())["data"] == record["data"]


def test_missing_shared_data_is_said_in_one_line_before_loading(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(training, "SHARED_DATA", tmp_path / "nowhere")
    training.announce_loading()
    out, err = capsys.readouterr()
    assert out.startswith("loading training images: up to 17 from scikit-image")
    assert err.strip() == f"note: {tmp_path / 'nowhere'} is missing or holds no stacks: training without " \
                          "frames of real stacks"


# 3. and 4. Exports: never over the checkpoint, a replaced file said, diverged weights refused.

@pytest.fixture
def checkpoint(tmp_path):
    out = tmp_path / "ck.pt"
    train(1, out, images=tiny_images(), **TINY)
    return out


@pytest.mark.usefixtures("one_torch_thread")
def test_export_onto_the_checkpoint_is_a_usage_error_and_keeps_it(checkpoint, capsys):
    before = checkpoint.read_bytes()
    with pytest.raises(SystemExit) as stop:
        main(["--steps", "0", "--out", str(checkpoint), "--export", str(checkpoint)])
    assert stop.value.code == 2 and "is the checkpoint --out" in capsys.readouterr().err
    assert checkpoint.read_bytes() == before


@pytest.mark.usefixtures("one_torch_thread")
def test_an_export_that_replaces_a_file_says_so(checkpoint, tmp_path, monkeypatch, capsys):
    import fusion.deep.checkpoints as checkpoints

    weights = tmp_path / "ums_unetpp.pt"
    assert main(["--steps", "0", "--out", str(checkpoint), "--export", str(weights)]) == 0
    assert capsys.readouterr().out.strip() == f"weights: {weights}"
    monkeypatch.setattr(checkpoints, "DEFAULT_WEIGHTS", weights)  # as if it were the shipped file
    assert main(["--steps", "0", "--out", str(checkpoint), "--export", str(weights)]) == 0
    said = capsys.readouterr().out.strip()
    assert said.startswith(f"weights: {weights} (replaced the shipped weights")
    assert "git checkout -- fusion/deep/weights/ums_unetpp.pt" in said


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("damage", ["running_var_past_float16", "infinite_weight", "nan_loss"])
def test_export_refuses_a_diverged_checkpoint(checkpoint, tmp_path, capsys, damage):
    state = torch.load(checkpoint, weights_only=True)
    if damage == "running_var_past_float16":
        state["model"]["encoder.x0_0.body.1.running_var"][0] = 2.7e8
    elif damage == "infinite_weight":
        state["model"]["encoder.x0_0.body.0.weight"].view(-1)[0] = float("inf")
    else:
        state["losses"]["total"] = float("nan")
    torch.save(state, checkpoint)
    weights = tmp_path / "w.pt"
    assert main(["--steps", "0", "--out", str(checkpoint), "--export", str(weights)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "diverged" in err and "lower --lr" in err
    if damage == "running_var_past_float16":
        assert "x0_0.body.1.running_var holds 2.7e+08" in err
    assert not weights.exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_a_loss_that_stops_being_finite_ends_training_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    real_loss, calls = training.reconstruction_loss, []

    def diverging(*args):
        calls.append(1)
        loss, terms = real_loss(*args)
        return (loss * np.nan, {**terms, "total": float("nan")}) if len(calls) == 4 else (loss, terms)

    monkeypatch.setattr(training, "reconstruction_loss", diverging)
    with pytest.raises(training.TrainingDivergedError, match="the loss became nan at step 4"):
        train(10, tmp_path / "ck.pt", images=tiny_images(), checkpoint_every=2, **TINY)
    assert step_of(tmp_path / "ck.pt") == 2


# 5. Usage errors, one line each, exit 2.

@pytest.mark.usefixtures("no_image_loading", "one_torch_thread")
@pytest.mark.parametrize("arguments, said", [
    (["--steps", "0", "--export", "{tmp}/w.pt"], "no such checkpoint"),
    (["--steps", "1", "--resume", "{tmp}/missing.pt"], "--resume {tmp}/missing.pt: no such checkpoint"),
    (["--steps", "1", "--resume", "{weights}"], "is an exported weights file, not a training checkpoint"),
    (["--steps", "1", "--crop-px", "2000"], "--crop-px 2000: larger than every training image; the largest crop "
                                            "they allow is 48 px"),
    (["--steps", "1", "--crop-px", "8"], "--crop-px 8: give 16 or more"),
    (["--steps", "1", "--batch", "0"], "--batch 0: give 1 or more"),
    (["--steps", "1", "--lr", "-1"], "--lr -1.0: give a learning rate above 0"),
    (["--steps", "-5", "--export", "{tmp}/w.pt"], "--steps -5: give 0 or more"),
    (["--steps", "1", "--checkpoint-every", "0"], "--checkpoint-every 0: give 1 or more"),
    (["--steps", "1", "--device", "gpu"], "--device gpu: give auto, cpu, mps, cuda or cuda:N"),
])
def test_bad_arguments_are_one_line_usage_errors(tmp_path, capsys, arguments, said):
    from fusion.deep.deep_measure import DEFAULT_WEIGHTS

    fill = lambda text: text.format(tmp=tmp_path, weights=DEFAULT_WEIGHTS)  # noqa: E731
    with pytest.raises(SystemExit) as stop:
        main([fill(a) for a in arguments] + ["--out", str(tmp_path / "ck.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("python -m fusion.deep.train: error: ") and fill(said) in err[-1]
    assert not (tmp_path / "w.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here")
@pytest.mark.usefixtures("no_image_loading")
def test_a_device_torch_cannot_use_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--steps", "1", "--device", "cuda:0", "--out", str(tmp_path / "ck.pt")])
    assert stop.value.code == 2 and "torch sees no CUDA GPU" in capsys.readouterr().err


@pytest.mark.usefixtures("no_image_loading", "one_torch_thread")
def test_seed_chooses_the_initial_weights(tmp_path):
    main(["--steps", "1", "--seed", "1", "--out", str(tmp_path / "a.pt"), "--batch", "2", "--crop-px", "32"])
    main(["--steps", "1", "--seed", "2", "--out", str(tmp_path / "b.pt"), "--batch", "2", "--crop-px", "32"])
    a, b = (torch.load(tmp_path / name, weights_only=True) for name in ("a.pt", "b.pt"))
    assert a["seed"] == 1 and b["seed"] == 2
    assert not torch.equal(a["model"]["encoder.x0_0.body.0.weight"], b["model"]["encoder.x0_0.body.0.weight"])


# 6. Progress says where the run is and how long it has left.

def test_progress_line_says_the_step_of_all_the_time_so_far_and_left():
    line = training.progress_line(50, 1500, 0, 130.0, {"total": 2.74061, "mse": 0.23903})
    assert line == "step 50 of 1500 (3%), 2 min 10 s so far, ~1 h 3 min left: total 2.7406, mse 0.2390"


@pytest.mark.usefixtures("one_torch_thread")
def test_training_prints_progress_with_its_total(tmp_path, capsys):
    train(2, tmp_path / "ck.pt", images=tiny_images(), **TINY)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("step 1 of 2 (50%), ") and " so far, ~" in lines[0]


# 7. A resumed run goes on with the crops the uninterrupted run would have used.

@pytest.mark.usefixtures("one_torch_thread")
def test_a_resumed_run_continues_the_crops_of_an_uninterrupted_one(tmp_path, monkeypatch):
    real_batch, batches = training.random_batch, []

    def recorded(*args):
        batches.append(real_batch(*args))
        return batches[-1]

    monkeypatch.setattr(training, "random_batch", recorded)
    train(4, tmp_path / "whole.pt", images=tiny_images(), **TINY)
    uninterrupted, batches[:] = list(batches), []
    train(2, tmp_path / "half.pt", images=tiny_images(), **TINY)
    train(2, tmp_path / "rest.pt", resume=tmp_path / "half.pt", images=tiny_images(), **TINY)
    assert len(batches) == 4 and all(torch.equal(a, b) for a, b in zip(batches[2:], uninterrupted[2:]))
    whole, rest = (torch.load(tmp_path / name, weights_only=True) for name in ("whole.pt", "rest.pt"))
    assert rest["step"] == 4 and [h["step"] for h in rest["history"]] == [1, 2, 3, 4]
    assert torch.allclose(whole["model"]["encoder.x0_0.body.0.weight"], rest["model"]["encoder.x0_0.body.0.weight"])


KILLED_AT_A_MOVE = """
import os, signal, sys
from pathlib import Path

real_replace = os.replace


def replace(source, destination, *args, **kwargs):
    if str(destination) == sys.argv[3]:  # killed as this move begins: nothing after it runs, no cleanup either
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(source, destination, *args, **kwargs)


os.replace = replace
from fusion.deep.checkpoints import export_weights

export_weights(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def export_killed_at(checkpoint: Path, weights: Path, moving_onto: Path) -> None:
    """An export run in a process of its own, killed (SIGKILL) as it moves a file onto ``moving_onto``."""
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_A_MOVE, str(checkpoint), str(weights), str(moving_onto)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr


@pytest.mark.usefixtures("one_torch_thread")
def test_an_export_killed_between_moving_the_weights_and_their_record_leaves_weights_that_load(checkpoint, tmp_path):
    # The weights moved into place, then the record with their sha256: killed between the two, the new weights sat
    # beside the earlier record, and loading called them damaged.
    from fusion.deep.deep_measure import load_encoder, sha256_of, weights_record

    weights = tmp_path / "w.pt"
    assert main(["--steps", "0", "--out", str(checkpoint), "--export", str(weights)]) == 0
    earlier = sha256_of(weights)
    other = tmp_path / "other.pt"
    train(1, other, images=tiny_images(), seed=1, **TINY)
    export_killed_at(other, weights, weights_record(weights))
    assert sha256_of(weights) != earlier  # (the new weights are in place, their record not)
    load_encoder(weights, "cpu")  # no WeightsError: checked against the record written with them
    assert json.loads(weights_record(weights).read_text())["sha256"] == sha256_of(weights)
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".w")]  # (moved by the load)


@pytest.mark.usefixtures("one_torch_thread")
def test_an_export_killed_before_moving_the_weights_leaves_the_earlier_pair(checkpoint, tmp_path):
    from fusion.deep.deep_measure import load_encoder, sha256_of, weights_record

    weights = tmp_path / "w.pt"
    assert main(["--steps", "0", "--out", str(checkpoint), "--export", str(weights)]) == 0
    earlier = sha256_of(weights), weights_record(weights).read_text()
    other = tmp_path / "other.pt"
    train(1, other, images=tiny_images(), seed=1, **TINY)
    export_killed_at(other, weights, weights)
    assert (sha256_of(weights), weights_record(weights).read_text()) == earlier
    load_encoder(weights, "cpu")  # (its staged files, left by the kill, are not taken for the weights' record)
    assert main(["--steps", "0", "--out", str(other), "--export", str(weights)]) == 0
    load_encoder(weights, "cpu")
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("w")) == ["w.json", "w.pt"]
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".w")]


KILLED_WRITING_THE_RECORD = """
import os, signal, sys
from pathlib import Path
import numpy as np, torch
from fusion.deep.train import train
torch.set_num_threads(1)
out = Path(sys.argv[1])
real_replace = os.replace


def replace(source, destination, *args, **kwargs):
    if Path(destination) == out.with_suffix(".json"):  # the checkpoint is in place; killed as its record moves
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(source, destination, *args, **kwargs)


os.replace = replace
train(1, out, resume=out, images=[np.random.default_rng(0).random((48, 48), dtype=np.float32)], batch=2, crop_px=32)
"""


@pytest.mark.usefixtures("one_torch_thread")
def test_a_run_killed_between_its_checkpoint_and_its_record_exports_no_record_of_another_checkpoint(
        checkpoint, tmp_path, capsys):
    """The checkpoint is written, then its record: a run killed between the two left a step-2 checkpoint beside the
    step-1 record, and --export shipped the weights with that record, which nothing noticed. The record carries the
    checkpoint's sha256: the export says the record is not the checkpoint's and ships what the checkpoint holds."""
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITING_THE_RECORD, str(checkpoint)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert step_of(checkpoint) == 2 and json.loads(checkpoint.with_suffix(".json").read_text())["steps"] == 1
    weights = tmp_path / "w.pt"
    assert main(["--steps", "0", "--out", str(checkpoint), "--export", str(weights)]) == 0
    said = capsys.readouterr().err
    assert f"note: {checkpoint}: its record ck.json describes another checkpoint (step 1;" in said
    exported = json.loads(weights.with_suffix(".json").read_text())
    assert exported["steps"] == 2 and exported["record"].startswith("made from the checkpoint")


@pytest.mark.usefixtures("one_torch_thread")
def test_a_checkpoints_own_record_is_exported_whole(checkpoint, tmp_path, capsys):
    weights = tmp_path / "w.pt"
    assert main(["--steps", "0", "--out", str(checkpoint), "--export", str(weights)]) == 0
    assert "note:" not in capsys.readouterr().err
    exported = json.loads(weights.with_suffix(".json").read_text())
    assert exported["steps"] == 1 and exported["command"].startswith("python -m fusion.deep.train")


# The training's times and a batch's time left, said by one helper (fusion.durations) in two precisions: each as it
# was said before there was one.
DURATIONS = [  # seconds, the training's words, a batch's time left
    (0, "0 s", "1 s"), (0.6, "1 s", "1 s"), (45, "45 s", "45 s"), (59.6, "1 min 0 s", "60 s"),
    (89.6, "1 min 30 s", "90 s"), (90, "1 min 30 s", "2 min"), (130, "2 min 10 s", "2 min"),
    (3599, "59 min 59 s", "60 min"), (3900, "1 h 5 min", "65 min"), (5400, "1 h 30 min", "2 h"),
    (172805, "48 h 0 min", "48 h"),
]


@pytest.mark.parametrize(("seconds", "exact", "rough"), DURATIONS)
def test_times_are_said_by_one_helper_in_two_precisions(seconds, exact, rough):
    from fusion.durations import duration_words

    assert duration_words(seconds) == exact
    assert duration_words(seconds, rough=True) == rough
    line = training.progress_line(1, 2, 0, seconds, {})  # (as much left as done)
    assert f", {exact} so far, ~{exact} left: " in line


def test_a_batchs_time_left_is_said_roughly(capsys, monkeypatch):
    from fusion.batch import StackOutcome
    from fusion.batch_progress import ProgressLines

    outcomes: dict = {}
    lines = ProgressLines(4, outcomes)
    monkeypatch.setattr(lines, "started", lines.started - 100)  # (the first stack took 100 s)
    outcomes[0] = StackOutcome("/s0.tif", "s0", "done")
    lines._say()
    assert capsys.readouterr().err == "refuse: 1 of 4 stacks, 0 failed, ~5 min left\n"  # (300 s)


def _as_written_by_an_older_version(checkpoint: Path, **changes) -> None:
    """The checkpoint's record as an older version wrote it: no sha256 (with ``changes``)."""
    path = checkpoint.with_suffix(".json")
    record = json.loads(path.read_text())
    del record["checkpoint_sha256"]
    path.write_text(json.dumps({**record, **changes}))


@pytest.mark.usefixtures("one_torch_thread")
def test_an_older_versions_record_of_another_step_is_not_taken_for_the_checkpoints(checkpoint, tmp_path, capsys):
    """A record written before records had a sha256 was taken as it was: a step-3 record beside a step-1 checkpoint
    (a run killed between the two, on the first run after upgrading) was exported as the checkpoint's own. Without
    a sha256, its step must be the checkpoint's."""
    _as_written_by_an_older_version(checkpoint, steps=3)
    weights = tmp_path / "w.pt"
    assert main(["--steps", "0", "--out", str(checkpoint), "--export", str(weights)]) == 0
    said = capsys.readouterr().err
    assert (f"note: {checkpoint}: its record ck.json describes another checkpoint (step 3, where this one is at "
            f"step 1; written by an older version, it has no sha256)") in said
    exported = json.loads(weights.with_suffix(".json").read_text())
    assert exported["steps"] == 1 and exported["record"].startswith("made from the checkpoint")


@pytest.mark.usefixtures("one_torch_thread")
def test_an_older_versions_record_of_the_checkpoints_step_is_its_own(checkpoint, tmp_path, capsys):
    _as_written_by_an_older_version(checkpoint)
    weights = tmp_path / "w.pt"
    assert main(["--steps", "0", "--out", str(checkpoint), "--export", str(weights)]) == 0
    assert "note:" not in capsys.readouterr().err
    exported = json.loads(weights.with_suffix(".json").read_text())
    assert exported["steps"] == 1 and exported["command"].startswith("python -m fusion.deep.train")


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize(("text", "said"), [
    ("[1, 2]", "is JSON but not a record: a list, where a record is an object ({...})"),
    ('"ck"', "is JSON but not a record: a string, where a record is an object ({...})"),
    ("{not json", "is not readable JSON")])
def test_a_record_that_is_not_an_object_says_what_it_is(checkpoint, tmp_path, capsys, text, said):
    """A record that was valid JSON but a list was said to be "not readable JSON"."""
    checkpoint.with_suffix(".json").write_text(text)
    weights = tmp_path / "w.pt"
    assert main(["--steps", "0", "--out", str(checkpoint), "--export", str(weights)]) == 0
    assert f"note: {checkpoint}: its record ck.json {said}: a run stopped" in capsys.readouterr().err
    assert json.loads(weights.with_suffix(".json").read_text())["steps"] == 1
