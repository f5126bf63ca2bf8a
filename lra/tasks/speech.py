"""Speech Commands v0.02 as raw waveforms: SC35 (all 35 words) and SC10 (ten of them).

Warden, "Speech Commands: A Dataset for Limited-Vocabulary Speech Recognition" (2018); raw
16 kHz audio classified from its 16,000 samples, as in the S4 paper (Gu et al., ICLR 2022).

    mkdir -p $LRA_DATA/speech_commands
    tar xzf speech_commands_v0.02.tar.gz -C $LRA_DATA/speech_commands   # it has no top folder
    lra data prepare sc35            # read once into the cache (`lra train` does it on first use)
    lra train task=sc35              # or task=sc10

The release holds one folder per word of `<speaker>_nohash_<n>.wav` clips (16 kHz, mono,
16-bit PCM, at most one second), `_background_noise_/`, and the official split as two lists
of `word/file.wav` paths, `validation_list.txt` and `testing_list.txt`; every other clip is
training data. docs/tasks.md describes the layout, the encoding and what is recorded.
"""
import hashlib
import io
import json
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lra.registry import register_task
from lra.tasks.base import DataError, Standardized, TaskData, find_file, progress

WORDS35 = ("backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward",
           "four", "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on",
           "one", "right", "seven", "sheila", "six", "stop", "three", "tree", "two", "up",
           "visual", "wow", "yes", "zero")
WORDS10 = ("down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes")
SAMPLE_RATE = 16000
LISTS = {"val": "validation_list.txt", "test": "testing_list.txt"}
ENCODING = "speech-v1: 16-bit PCM / 32768, zero-padded at the end to 16000 samples, d_input 1"


def read_wav(path):
    """The int16 samples of a 16 kHz mono 16-bit PCM wav file, and the sha256 of its bytes."""
    raw = Path(path).read_bytes()
    try:
        with wave.open(io.BytesIO(raw)) as w:
            shape = (w.getnchannels(), w.getsampwidth(), w.getframerate())
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as err:
        raise DataError(f"{path}: not a readable wav file: {err}") from None
    if shape != (1, 2, SAMPLE_RATE):
        raise DataError(f"{path}: expected mono 16-bit PCM at {SAMPLE_RATE} Hz, found "
                        f"{shape[0]} channel(s), {8 * shape[1]}-bit, {shape[2]} Hz")
    samples = np.frombuffer(frames, dtype="<i2")
    if len(samples) > SAMPLE_RATE:
        raise DataError(f"{path}: {len(samples)} samples; Speech Commands clips are at most "
                        f"{SAMPLE_RATE} (one second)")
    return samples, hashlib.sha256(raw).hexdigest()


def read_clips(root, names, threads):
    """int16 (N, 16000) clips (zero-padded at the end) of the files `names` under root, and their
    sha256s.

    File reads run in a thread pool: opening and reading release the GIL, and so does hashing.
    """
    clips = np.zeros((len(names), SAMPLE_RATE), dtype=np.int16)  # (N, 16000)

    def read(i):
        samples, sha = read_wav(root / names[i])
        clips[i, :len(samples)] = samples
        return sha

    with ThreadPoolExecutor(max(1, threads)) as pool:
        hashes = list(progress(pool.map(read, range(len(names))), len(names), "reading clips"))
    return clips, hashes


def read_list(path, words):
    """The `word/file.wav` lines of a split list, keeping the given words."""
    lines = path.read_text().split()
    return {line for line in lines if line.split("/", 1)[0] in words}


def _missing(root):
    return (f"Speech Commands data not found: no {LISTS['test']} (with {LISTS['val']} beside it "
            "and one folder of <speaker>_nohash_<n>.wav clips per word: yes/, no/, up/, ...) up "
            f"to 3 folders deep under the data root {root}. Download Speech Commands v0.02 "
            "(speech_commands_v0.02.tar.gz, 2.3 GB) from TensorFlow's download page "
            "(http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz, listed at "
            "https://www.tensorflow.org/datasets/catalog/speech_commands) and unpack it into a "
            f"folder under the data root; the archive has no top folder, so: mkdir -p "
            f"{root / 'speech_commands'} && tar xzf speech_commands_v0.02.tar.gz -C "
            f"{root / 'speech_commands'}. Or point LRA_DATA or data_dir= at the right root.")


class SpeechCommands(TaskData):
    """Speech Commands v0.02 clips of `words`, the class being the word's index in sorted order."""

    words = ()
    seq_len = SAMPLE_RATE
    input_kind = "continuous"
    d_input = 1

    def __init__(self, data_dir="data", seed=0, batch_size=16, num_workers=0, read_threads=16):
        super().__init__(data_dir, seed, batch_size, num_workers)
        self.read_threads = int(read_threads)

    def _files(self):
        """The release root and {split: sorted `word/file.wav` names} of the task's words."""
        data_root = Path(self.data_dir).resolve()
        listed = find_file(data_root, LISTS["test"])
        if listed is None:
            raise DataError(_missing(data_root))
        root = listed.parent
        if not (root / LISTS["val"]).is_file():
            raise DataError(f"found {listed} but no {LISTS['val']} beside it. "
                            + _missing(data_root))
        absent = [w for w in self.words if not (root / w).is_dir()]
        if absent:
            raise DataError(f"{root} has {LISTS['test']} but no folder for {', '.join(absent)}: "
                            "is the archive fully unpacked? " + _missing(data_root))
        on_disk = sorted(f"{w}/{p.name}" for w in self.words for p in (root / w).glob("*.wav"))
        held_out = {split: read_list(root / name, self.words) for split, name in LISTS.items()}
        for split, names in held_out.items():
            lost = sorted(names.difference(on_disk))
            if lost:
                raise DataError(f"{root / LISTS[split]} names {len(lost)} clips of these words "
                                f"that are not there, e.g. {lost[0]}: is the archive fully "
                                "unpacked?")
        names = {"train": [n for n in on_disk
                           if n not in held_out["val"] and n not in held_out["test"]],
                 "val": sorted(held_out["val"]), "test": sorted(held_out["test"])}
        return root, names

    def sources(self):
        root, names = self._files()
        return ([root / name for name in LISTS.values()]
                + [root / f for files in names.values() for f in files])

    def load(self):
        root, names = self._files()
        label = {word: i for i, word in enumerate(self.words)}
        recipe = {"encoding": ENCODING, "classes": list(self.words)}
        digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
        for name in LISTS.values():
            digest.update((root / name).read_bytes())
        splits = {}
        for split, files in names.items():
            clips, hashes = read_clips(root, files, self.read_threads)
            digest.update("".join(f"{f} {h}\n" for f, h in zip(files, hashes)).encode())
            targets = [label[f.split("/", 1)[0]] for f in files]
            splits[split] = Standardized(clips, targets, mean=0.0, std=32768.0)
        self.fingerprint = digest.hexdigest()
        self.protocol = {"source": "files", "root": str(root), **recipe,
                         "split": f"official: {LISTS['val']} and {LISTS['test']}; train is every "
                                  "other clip of these words (_background_noise_ unused)",
                         "shuffle_seed": self.seed,
                         "sizes": {split: len(ds) for split, ds in splits.items()}}
        return splits


@register_task("sc35")
class SC35(SpeechCommands):
    """All 35 words of Speech Commands v0.02."""

    name = "sc35"
    words = WORDS35
    num_classes = len(WORDS35)


@register_task("sc10")
class SC10(SpeechCommands):
    """The ten command words: yes no up down left right on off stop go."""

    name = "sc10"
    words = WORDS10
    num_classes = len(WORDS10)
