"""End to end on the command line: `cantata checkpoint make-tiny` -> `cantata generate` -> a file."""

from __future__ import annotations

import soundfile as sf

from cantata.cli import main
from cantata.models.checkpoint import CheckpointError, ensure_checkpoint
from cantata.models.variants import get_variant


def test_make_tiny_then_generate_writes_playable_files(tmp_path, capsys):
    root = tmp_path / "ckpt"
    assert main(["checkpoint", "make-tiny", str(root), "--variant", "xl-sft", "--shards", "2"]) == 0
    assert (root / "acestep-v15-xl-sft" / "model.safetensors.index.json").is_file()

    mp3 = tmp_path / "song.mp3"
    assert main(["generate", "lo-fi hip hop", "--lyrics", "[Verse]\nla la la la", "--duration", "12.5",
                 "--steps", "3", "--seed", "7", "--checkpoints", str(root), "--no-download", "-o", str(mp3)]) == 0
    info = sf.info(str(mp3))
    assert (info.samplerate, info.channels) == (48000, 2)
    assert abs(info.duration - 12.5) < 0.05
    assert "seed=7" in capsys.readouterr().out

    wav = tmp_path / "take.wav"
    assert main(["generate", "lo-fi hip hop", "--duration", "10", "--steps", "2", "--seed", "1", "--seed", "2",
                 "--sample-rate", "22050", "--channels", "1", "--checkpoints", str(root), "--no-download",
                 "-o", str(wav)]) == 0
    for i in (1, 2):
        info = sf.info(str(tmp_path / f"take-{i}.wav"))
        assert (info.samplerate, info.channels, round(info.duration, 2)) == (22050, 1, 10.0)


def test_generate_reports_a_missing_checkpoint(tmp_path, capsys):
    assert main(["generate", "x", "--checkpoints", str(tmp_path / "none"), "--no-download", "-o",
                 str(tmp_path / "a.mp3")]) == 2
    err = capsys.readouterr().err
    assert "acestep-v15-xl-sft/model.safetensors" in err and "huggingface-cli download" in err


def test_offline_instructions_name_the_files_and_repositories(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        ensure_checkpoint(tmp_path, get_variant("xl-sft"))
    except CheckpointError as exc:
        message = str(exc)
    else:
        raise AssertionError("a missing checkpoint must raise")
    for part in ("vae/config.json", "Qwen3-Embedding-0.6B/tokenizer.json", "acestep-v15-xl-sft/silence_latent.pt",
                 "ACE-Step/acestep-v15-xl-sft", "ACE-Step/Ace-Step1.5", str(tmp_path)):
        assert part in message, part
