"""Speech Commands tasks (sc10, sc35): the v0.02 folder layout, wav reading, the official split,
batches."""
import re

import numpy as np
import pytest
import torch
from helpers import assert_eval_loaders_keep_every_example, loaded, task_from_yaml
from writers import speech_clip, write_speech_release, write_wav

from lra.tasks.base import DataError
from lra.tasks.speech import SC10, SC35, WORDS10, WORDS35


def speech(cls, root, **options):
    return loaded(cls, root, **{"batch_size": 4, "read_threads": 4, **options})


def test_class_lists_are_sorted_and_nested():
    assert list(WORDS35) == sorted(WORDS35) and len(set(WORDS35)) == 35
    ten = "yes no up down left right on off stop go".split()
    assert list(WORDS10) == sorted(WORDS10) == sorted(ten)
    assert set(WORDS10) <= set(WORDS35)
    assert (SC10.num_classes, SC35.num_classes) == (10, 35)
    for cls in (SC10, SC35):
        assert (cls.seq_len, cls.input_kind, cls.d_input, cls.dual) == \
            (16000, "continuous", 1, False)


@pytest.mark.parametrize("where", ["speech_commands", "SpeechCommands/speech_commands_v0.02"])
def test_sc35_reads_the_release_with_the_official_split(tmp_path, where):
    clips = write_speech_release(tmp_path, where)
    data = speech(SC35, tmp_path)
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [35, 35, 35]
    for split, k in (("train", 0), ("val", 1), ("test", 2)):
        ds = data.splits[split]
        assert ds.targets.tolist() == list(range(35))  # sorted words, one clip of each
        for word in ("backward", "zero"):
            i = WORDS35.index(word)
            samples = clips[speech_clip(word, k)]
            x = ds[i]["inputs"]
            assert x.dtype == np.float32 and x.shape == (16000, 1)
            np.testing.assert_array_equal(x[:len(samples), 0], samples / 32768)
    assert data.protocol["classes"] == list(WORDS35)
    assert data.protocol["root"] == str(tmp_path / where)
    assert len(data.fingerprint) == 64 and data.majority_rate == pytest.approx(1 / 35)


def test_sc10_keeps_the_ten_words(tmp_path):
    clips = write_speech_release(tmp_path)
    data = speech(SC10, tmp_path)
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [10, 10, 10]
    x = data.splits["val"][WORDS10.index("yes")]["inputs"][:, 0]
    np.testing.assert_array_equal(x, clips[speech_clip("yes", 1)] / 32768)
    assert data.protocol["classes"] == list(WORDS10)
    assert data.fingerprint != speech(SC35, tmp_path).fingerprint


def test_short_clips_are_zero_padded_and_scaled(tmp_path):
    write_speech_release(tmp_path, words=WORDS10)
    write_wav(tmp_path / "speech_commands" / speech_clip("go", 0), [-32768, 32767, 1])
    x = speech(SC10, tmp_path).splits["train"][WORDS10.index("go")]["inputs"][:, 0]
    assert x[:3].tolist() == [-1.0, 32767 / 32768, 1 / 32768]
    assert not x[3:].any() and len(x) == 16000


def test_the_lists_decide_the_split(tmp_path):
    write_speech_release(tmp_path, words=WORDS10)
    folder = tmp_path / "speech_commands"
    moved = speech_clip("up", 0)
    testing = folder / "testing_list.txt"
    testing.write_text(testing.read_text() + moved + "\n")
    data = speech(SC10, tmp_path)
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [9, 10, 11]
    assert WORDS10.index("up") not in data.splits["train"].targets.tolist()
    assert data.splits["test"].targets.tolist().count(WORDS10.index("up")) == 2


def test_reading_threads_and_seed_change_nothing(tmp_path):
    write_speech_release(tmp_path, words=WORDS10)
    a, b = speech(SC10, tmp_path, read_threads=1), speech(SC10, tmp_path, read_threads=8)
    c = speech(SC10, tmp_path, seed=3)
    assert a.fingerprint == b.fingerprint == c.fingerprint
    for split in ("train", "val", "test"):
        assert np.array_equal(a.splits[split].inputs, b.splits[split].inputs)

    write_wav(tmp_path / "speech_commands" / speech_clip("stop", 2), np.zeros(16000))
    assert speech(SC10, tmp_path).fingerprint != a.fingerprint


def test_eval_loaders_keep_every_example_in_order(tmp_path):
    write_speech_release(tmp_path, words=WORDS10)
    data = speech(SC10, tmp_path)
    assert (len(data.splits["val"]), len(data.splits["test"])) == (10, 10)
    assert_eval_loaders_keep_every_example(data, 4)
    batch = next(iter(data.train_dataloader()))
    assert batch["inputs"].dtype == torch.float32 and batch["inputs"].shape == (4, 16000, 1)
    assert batch["mask"].all() and batch["inputs"].abs().max() <= 1


def test_missing_data_says_what_where_and_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        SC35(data_dir=str(tmp_path / "nowhere")).setup()
    message = str(err.value)
    for part in ("testing_list.txt", "validation_list.txt", "_nohash_",
                 str((tmp_path / "nowhere").resolve()), "speech_commands_v0.02.tar.gz",
                 "download.tensorflow.org", "LRA_DATA"):
        assert part in message


def test_partial_release_is_reported(tmp_path):
    write_speech_release(tmp_path, words=WORDS10)
    with pytest.raises(DataError, match="no folder for backward, bed, bird"):
        SC35(data_dir=str(tmp_path)).setup()
    (tmp_path / "speech_commands" / speech_clip("no", 1)).unlink()
    with pytest.raises(DataError, match="validation_list.txt names 1 clips .* e.g. no/"):
        SC10(data_dir=str(tmp_path)).setup()


@pytest.mark.parametrize("kwargs, why", [
    ({"channels": 2}, "2 channel(s), 16-bit, 16000 Hz"),
    ({"rate": 8000}, "1 channel(s), 16-bit, 8000 Hz"),
    ({"width": 1}, "1 channel(s), 8-bit"),
])
def test_wrong_wav_format_names_the_file(tmp_path, kwargs, why):
    write_speech_release(tmp_path, words=WORDS10)
    path = tmp_path / "speech_commands" / speech_clip("left", 0)
    samples = np.zeros(100, np.int16)
    if kwargs.get("width") == 1:
        samples = np.zeros(50, np.int16)  # 100 one-byte frames
    write_wav(path, samples, **kwargs)
    with pytest.raises(DataError, match=f"{speech_clip('left', 0)}: .*{re.escape(why)}"):
        SC10(data_dir=str(tmp_path)).setup()


def test_overlong_or_broken_wav_names_the_file(tmp_path):
    write_speech_release(tmp_path, words=WORDS10)
    path = tmp_path / "speech_commands" / speech_clip("on", 0)
    write_wav(path, np.zeros(16001))
    with pytest.raises(DataError, match="nohash_0.wav: 16001 samples"):
        SC10(data_dir=str(tmp_path)).setup()
    path.write_bytes(b"RIFF")
    with pytest.raises(DataError, match="nohash_0.wav: not a readable wav file"):
        SC10(data_dir=str(tmp_path)).setup()


def test_yaml_options_build_the_modules():
    for name, cls in (("sc10", SC10), ("sc35", SC35)):
        task_from_yaml(name, cls)
