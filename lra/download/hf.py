"""`lra data download --source hf`: Text, Image and SC10 from the Hugging Face hub via `datasets`,
written in the layouts the loaders read and placed as the archives' folders are (built beside
their place, split sizes checked, a marker written, renamed whole).

- Text: `stanfordnlp/imdb` as `imdb/plain_text/{train,test}-00000-of-00001.parquet`, columns
  `text` and `label`: the hub's own layout, which the Text loader reads with the same examples
  (and so the same fingerprint) as aclImdb.
- Image, sCIFAR: `uoft-cs/cifar10` as `cifar-10-batches-py/`: five `data_batch_k` of 10,000
  training images in the hub's order and a `test_batch`, each a protocol-2 pickle of the dict the
  Toronto release holds (`b"data"`, uint8 (N, 3072), the red, green and blue planes row-major;
  `b"labels"`). The pixels and labels are the release's; the pickles' bytes are not, so the
  fingerprint (which hashes the files) differs from the Toronto archive's.
- SC10: `google/speech_commands` (config v0.02) as `speech_commands_hf/`: the ten words' clips
  as `<word>/<speaker_id>_nohash_<utterance_id>.wav` (the hub keeps each file's bytes, written
  unchanged after checking they are 16 kHz mono 16-bit PCM of at most 16,000 samples), the
  `_silence_` rows of train and validation (the release's `_background_noise_/` recordings) in
  `_background_noise_/`, and the two lists naming the validation and test clips. The hub's test
  split is not `testing_list.txt` but the separate 12-class test set archive: its ten words'
  clips are exactly `testing_list.txt`'s clips of those words, but of the other 25 words it holds
  only a sample renamed into `_unknown_`, so SC35's official test split cannot be rebuilt and
  --source hf refuses sc35. The clips are the archive's bytes; the lists are ours (the ten words
  only, sorted), so the fingerprint (which hashes both) differs from the archive's.
"""
import io
import os
import pickle
import shutil
import wave
from pathlib import Path

import numpy as np

from lra.download import place, placed
from lra.errors import UserError


def load_split(source, split, cache):
    """One split through datasets, its downloads and Arrow files kept in `cache`."""
    from datasets import load_dataset

    try:
        return load_dataset(source["repo"], source.get("config"), split=split, cache_dir=str(cache))
    except Exception as err:  # datasets raises many kinds: offline, unknown repo, bad files
        raise UserError(f"cannot load {source['repo']} ({split}) through datasets: {err}") from err


def check_columns(ds, source, columns):
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise UserError(f"{source['repo']} has no column {', '.join(missing)} (it has "
                        f"{', '.join(ds.column_names)})")


def write_text(splits, folder, source):
    """plain_text/<split>-00000-of-00001.parquet with the columns text and label."""
    (folder / "plain_text").mkdir()
    for split, ds in splits.items():
        check_columns(ds, source, ["text", "label"])
        ds.select_columns(["text", "label"]).to_parquet(
            str(folder / "plain_text" / f"{split}-00000-of-00001.parquet"))


def write_cifar(splits, folder, source):
    """The Toronto release's pickles from the hub's images (column img) and labels: training rows
    in five equal batches (10,000 each in the release), the test rows in one."""
    per = len(splits["train"]) // 5
    files = [(f"data_batch_{k + 1}", "train", k * per, per) for k in range(5)]
    for name, split, start, n in [*files, ("test_batch", "test", 0, len(splits["test"]))]:
        ds = splits[split]
        check_columns(ds, source, ["img", "label"])
        rows = ds[start:start + n]
        pixels = np.stack([np.asarray(im.convert("RGB"), np.uint8) for im in rows["img"]])
        batch = {b"batch_label": name.encode(), b"labels": [int(y) for y in rows["label"]],
                 b"data": pixels.transpose(0, 3, 1, 2).reshape(len(pixels), 3072),
                 b"filenames": [f"{split}_{start + i:05d}.png".encode() for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    names = splits["train"].features["label"].names
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in names], b"num_vis": 3072}, f, protocol=2)


SILENCE = "_silence_"  # the hub's label for the release's _background_noise_ recordings
SPEECH_RATE = 16000


def clip_bytes(audio, where):
    """The bytes of an undecoded audio cell ({bytes, path}), checked to be a 16 kHz mono 16-bit
    PCM wav; returns them and the number of samples."""
    raw = audio.get("bytes")
    if raw is None and audio.get("path") and Path(audio["path"]).is_file():
        raw = Path(audio["path"]).read_bytes()
    if raw is None:
        raise UserError(f"{where}: the audio cell holds no bytes (path {audio.get('path')})")
    try:
        with wave.open(io.BytesIO(raw)) as w:
            shape, n = (w.getnchannels(), w.getsampwidth(), w.getframerate()), w.getnframes()
    except (wave.Error, EOFError) as err:
        raise UserError(f"{where}: not a readable wav file ({err}); the Speech Commands loader "
                        "reads 16 kHz mono 16-bit PCM wav") from None
    if shape != (1, 2, SPEECH_RATE):
        raise UserError(f"{where}: expected mono 16-bit PCM at {SPEECH_RATE} Hz, found "
                        f"{shape[0]} channel(s), {8 * shape[1]}-bit, {shape[2]} Hz")
    return raw, n


def write_speech(splits, folder, source):
    """The release's layout for the words `source["words"]`: one folder of clips per word,
    `_background_noise_/` from the `_silence_` rows of train and validation (the test split's
    are cut from them, not release files), validation_list.txt and testing_list.txt."""
    from datasets import Audio

    words, lists = set(source["words"]), {"validation": [], "test": []}
    for split, ds in splits.items():
        check_columns(ds, source, ["audio", "label", "speaker_id", "utterance_id"])
        labels = ds.features["label"].names
        rows = ds.select_columns(["audio", "label", "speaker_id", "utterance_id"])
        for i, row in enumerate(rows.cast_column("audio", Audio(decode=False))):
            word, where = labels[row["label"]], f"{source['repo']} {split} row {i}"
            if word == SILENCE and split != "test":
                name = Path(row["audio"].get("path") or f"noise_{split}_{i}.wav").name
                raw, _ = clip_bytes(row["audio"], f"{where} ({name})")
                (folder / "_background_noise_").mkdir(exist_ok=True)
                (folder / "_background_noise_" / name).write_bytes(raw)
            if word not in words:
                continue
            name = f"{word}/{row['speaker_id']}_nohash_{row['utterance_id']}.wav"
            raw, n = clip_bytes(row["audio"], f"{where} ({name})")
            if n > SPEECH_RATE:
                raise UserError(f"{where} ({name}): {n} samples; Speech Commands clips are at "
                                f"most {SPEECH_RATE} (one second)")
            if (folder / name).exists():
                raise UserError(f"{where}: {name} appears twice in {source['repo']}")
            (folder / word).mkdir(exist_ok=True)
            (folder / name).write_bytes(raw)
            if split in lists:
                lists[split].append(name)
    for split, file in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        (folder / file).write_text("".join(f"{name}\n" for name in sorted(lists[split])))


WRITERS = {"text": write_text, "image": write_cifar, "speech": write_speech}


def download_hf(tasks, root, manifest, say=print):
    """Place the hub's copy of each asked task's data under `root`; returns {name: folder}."""
    sources = {k: v for k, v in manifest["hf"].items() if k in WRITERS}
    names = [k for k, v in sources.items() if "all" in tasks or set(v["tasks"]) & set(tasks)]
    covered = {t for k in names for t in sources[k]["tasks"]}
    other = [t for t in tasks if t != "all" and t not in covered]
    if other:
        known = sorted(t for v in sources.values() for t in v["tasks"])
        why = "".join(f" {t}: {v['refused'][t]}." for v in sources.values()
                      for t in other if t in v.get("refused", {}))
        raise UserError(f"--source hf has no copy of {', '.join(other)}; it has "
                        f"{', '.join(known)}.{why} Download the others from their archives "
                        "(without --source).")
    done = {}
    for name in names:
        source = sources[name]
        final = root / source["place"]
        part = {"into": "", "folder": source["place"]}
        if placed(root, part) == final:
            say(f"{name}: already in {final}, nothing to do")
            done[name] = final
            continue
        cache = root / ".downloads" / "hf"
        splits = {split: load_split(source, split, cache) for split in source["rows"]}
        wrong = [f"{split} {len(ds):,} rows, expected {source['rows'][split]:,}"
                 for split, ds in splits.items() if len(ds) != source["rows"][split]]
        if wrong:
            raise UserError(f"{source['repo']} is not the expected release: {'; '.join(wrong)}")
        tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            WRITERS[name](splits, tmp, source)
            place(tmp, final, {"part": name, "archive": None, "origin": f"hf:{source['repo']}",
                               "verified": True})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        say(f"{name}: placed in {final} (from the hub's {source['repo']})")
        done[name] = final
    return done
