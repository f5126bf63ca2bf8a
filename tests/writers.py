"""Small copies of the real releases, written in their own formats, for the data tests: CIFAR-10's
python pickles, ListOps' TSV files, Pathfinder's image folders and metadata, Speech Commands'
wav folders, IMDb (aclImdb's folders and Hugging Face's parquet) and the AAN pairs of Retrieval.
Each `write_*_release(root)` lays its tree out under root where the loader looks first."""
import io
import pickle
import wave

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from lra.tasks.image import CLASSES
from lra.tasks.speech import WORDS35

# --- CIFAR-10 ------------------------------------------------------------------------------

CIFAR_PER_BATCH = 20  # images per file: 100 training images, 20 test images


def write_cifar_batch(path, data, labels, name):
    """One file as the CIFAR-10 python version has it: a protocol-2 pickle of a dict with bytes
    keys."""
    batch = {b"batch_label": name.encode(), b"labels": [int(y) for y in labels], b"data": data,
             b"filenames": [f"image_{i:05d}.png".encode() for i in range(len(data))]}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def write_cifar_release(root, where="cifar-10-batches-py", seed=0):
    """A small cifar-10-batches-py/ under root; returns {file name: (data, labels)}."""
    folder = root / where
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written = {}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        data = rng.integers(0, 256, (CIFAR_PER_BATCH, 3072), dtype=np.uint8)  # (N, R | G | B)
        labels = (np.arange(CIFAR_PER_BATCH) + i) % 10
        write_cifar_batch(folder / name, data, labels, name)
        written[name] = (data, labels)
    meta = {b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return written


# --- ListOps -------------------------------------------------------------------------------

LISTOPS_TRAIN = ["( ( ( [MAX 2 ) 9 ) ] )\t9", "( ( ( ( [SM 7 ) 8 ) 9 ) ] )\t4",
                 "( ( ( [MIN 3 ) 1 ) ] )\t1"]


def write_listops_split(folder, split, rows):
    """basic_<split>.tsv: a Source<TAB>Target header, then the rows, each line ended by CRLF."""
    folder.mkdir(parents=True, exist_ok=True)
    text = "Source\tTarget\r\n" + "".join(f"{row}\r\n" for row in rows)
    (folder / f"basic_{split}.tsv").write_bytes(text.encode())


def write_listops_release(root, where="lra_release/lra_release/listops-1000", train_rows=None):
    """Three training rows (or `train_rows`), one validation row, three test rows; returns the
    folder."""
    folder = root / where
    write_listops_split(folder, "train", train_rows or LISTOPS_TRAIN)
    write_listops_split(folder, "val", ["( ( ( [MED 1 ) 2 ) ] )\t1"])
    write_listops_split(folder, "test", ["( ( ( [MAX 2 ) 9 ) ] )\t9", "( ( ( [MAX 9 ) 9 ) ] )\t9",
                                         "( ( ( [MIN 0 ) 5 ) ] )\t0"])
    return folder


# --- Pathfinder ----------------------------------------------------------------------------

PATHFINDER_HARD = "curv_contour_length_14"


def png(pixels):
    """A grayscale PNG file's bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def pathfinder_fields(batch, index, label):
    """A metadata row's 11 fields: folder, file, index, label, continuity, contour length,
    distractor length, paddle length, paddle thickness, paddle margin, number of contrasts."""
    return [f"imgs/{batch}", f"sample_{index}.png", str(index), str(label),
            "1.0", "14", "4", "2", "0.5", "1", "1"]


def write_pathfinder_release(root, n_batches=2, per_batch=10, resolution=32, binary=(), empty=(),
                             where="lra_release/lra_release"):
    """A release tree with image b * per_batch + i holding pixel values (b * per_batch + i) % 251
    at pixel 0; metadata batch folders listed in `binary` written with np.save, images (b, i)
    listed in `empty` left empty. Returns the hard folder."""
    leaf = root / where / f"pathfinder{resolution}" / PATHFINDER_HARD
    (leaf / "metadata").mkdir(parents=True)
    for b in range(n_batches):
        (leaf / "imgs" / str(b)).mkdir(parents=True)
        rows = []
        for i in range(per_batch):
            k = b * per_batch + i
            pixels = np.zeros((resolution, resolution), np.uint8)
            pixels[0, 0], pixels[-1, -1] = k % 251, 255
            path = leaf / "imgs" / str(b) / f"sample_{i}.png"
            path.write_bytes(b"" if (b, i) in empty else png(pixels))
            rows.append(pathfinder_fields(b, i, k % 2))
        meta = leaf / "metadata" / f"{b}.npy"
        if b in binary:
            with open(meta, "wb") as f:  # as the original generator saved it
                np.save(f, np.array(rows))
        else:
            meta.write_text("".join(" ".join(r) + "\n" for r in rows))
    return leaf


# --- Speech Commands -----------------------------------------------------------------------

SPEECH_SPEAKERS = ("0a7c2a8d", "1b4c9b89", "c50f55b8")  # per word: train, validation, testing
SPEECH_SHORT = 8000  # the samples of each word's first clip (the others have 16000)


def speech_clip(word, k):
    """The name of `word`'s clip k under the release folder: k 0 trains, k 1 is on the
    validation list, k 2 on the testing list."""
    return f"{word}/{SPEECH_SPEAKERS[k]}_nohash_{k}.wav"


def write_wav(path, samples, rate=16000, channels=1, width=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def write_speech_release(root, where="speech_commands", words=WORDS35):
    """Speech Commands v0.02 in miniature: 3 clips per word (`speech_clip(word, k)`), the two
    lists, noise; returns {name: samples}."""
    folder = root / where
    rng = np.random.default_rng(0)
    clips, lists = {}, {"validation_list.txt": [], "testing_list.txt": []}
    for word in words:
        for k in range(len(SPEECH_SPEAKERS)):
            name = speech_clip(word, k)
            size = SPEECH_SHORT if k == 0 else 16000
            samples = rng.integers(-32768, 32768, size).astype(np.int16)
            write_wav(folder / name, samples)
            clips[name] = samples
            if k:
                lists[("validation_list.txt", "testing_list.txt")[k - 1]].append(name)
    for list_name, names in lists.items():
        (folder / list_name).write_text("".join(f"{n}\n" for n in names))
    noise = folder / "_background_noise_"
    write_wav(noise / "white_noise.wav", np.ones(20000))  # longer: would fail if read
    (noise / "README.md").write_text("noise\n")
    (folder / "LICENSE").write_text("CC BY 4.0\n")
    return clips


# --- IMDb ----------------------------------------------------------------------------------

# (review, label, rating): aclImdb names files <id>_<rating>.txt, ratings 1-4 negative, 7-10
# positive; reviews are single lines with HTML line breaks and some non-ASCII.
IMDB_TRAIN = [(f"Review {i}: {'a fine' if label else 'a dull'} film.<br /><br />"
               f"Caf\u00e9 scene {i * 7}.", label, 8 if label else 2)
              for label in (0, 1) for i in range(10)]
IMDB_TEST = [("Awful. Just awful.", 0, 1), ("Not worth it \u2014 2/10", 0, 2), ("Meh", 0, 4),
             ("Loved it!", 1, 10), ("A \u201cmasterpiece\u201d.", 1, 9)]


def write_aclimdb(root):
    """aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt; returns the aclImdb folder."""
    folder = root / "aclImdb"
    for split, rows in (("train", IMDB_TRAIN), ("test", IMDB_TEST)):
        for i, (review, label, rating) in enumerate(rows):
            path = folder / split / ("pos" if label else "neg") / f"{i}_{rating}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(review.encode())
    return folder


def write_imdb_parquet(root, shards=1):
    """Hugging Face's plain_text/{split}-0000k-of-0000n.parquet: columns text (string), label
    (int64); the training rows in another order than aclImdb's."""
    folder = root / "plain_text"
    folder.mkdir(parents=True)
    for split, rows in (("train", IMDB_TRAIN[::-1]), ("test", IMDB_TEST)):
        n = shards if split == "train" else 1
        for k in range(n):
            part = rows[k::n]
            table = pa.table({"text": pa.array([r[0] for r in part], pa.string()),
                              "label": pa.array([r[1] for r in part], pa.int64())})
            pq.write_table(table, folder / f"{split}-{k:05d}-of-{n:05d}.parquet")
    return folder


# --- AAN pairs (Retrieval) -----------------------------------------------------------------

def aan_doc(text):
    """A document as the release writes it: a Python bytes literal (b'...', with \\n and \\t
    escaped), so a line never holds more than the four tabs between its five columns."""
    return repr(text.encode())


def _pair(label, ids, text1, text2):
    return "\t".join([label, *ids.split(), aan_doc(text1), aan_doc(text2)])


CCG, BLEU = "Parsing with CCG.\nWe cite Smith.", "BLEU scores"
AAN_PAIRS = {
    "train": [_pair("1.0", "P05-1001 W04-3201", CCG, "Smith 2004"),
              _pair("0.0", "P05-1001 J93-2004", CCG, "Penn Treebank"),
              _pair("1", "D07-1003 P02-1040", BLEU + "\t\u00e9", "BLEU: a method"),
              _pair("0", "D07-1003 C00-1007", BLEU, "x")],
    "eval": [_pair("1.0", "A B", "ab", "c"), _pair("0.0", "A C", "ab", "d"),
             _pair("0.0", "A D", "ab", "e")],
    "test": [_pair("0.0", "E F", "f", "g"), _pair("1.0", "E G", "f", "h"),
             _pair("0.0", "E H", "f", "i")],
}


def write_aan_pairs(root, where="lra_release/lra_release/tsv_data", train=None):
    """new_aan_pairs.{train,eval,test}.tsv (training lines `train` if given); returns the
    folder."""
    folder = root / where
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in {**AAN_PAIRS, "train": train or AAN_PAIRS["train"]}.items():
        text = "".join(f"{x}\n" for x in lines)
        (folder / f"new_aan_pairs.{split}.tsv").write_bytes(text.encode())
    return folder
