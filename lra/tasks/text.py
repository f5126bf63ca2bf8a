"""Text and Retrieval: byte-level IMDb sentiment and ACL Anthology citation pairs (2 classes each).

Text (LRA "Text"): a movie review from the IMDb set of Maas et al. (ACL 2011), positive or
negative, read as UTF-8 bytes and cut at 4096. Retrieval (LRA "Retrieval"): two papers of the
ACL Anthology Network (Radev et al., 2013); does the first cite the second? Each document is
read as bytes and cut at 4000, and the model encodes both (`dual`). Both tasks are from the
Long-Range Arena (Tay et al., ICLR 2021). Every byte b becomes token b + 1 (0 pads; vocab 257):

    encode([b"Hi!"], 4096)[0].tolist() == [73, 106, 34]

As state-spaces/s4 reads them, `append_eos=True` ends every document with token 257 (vocab 258;
the EOS counts in max_len), and Text's `tokens="chars"` reads each review as Unicode characters:
0 pads, 1 is <unk>, 2 <eos> (with append_eos), then the characters seen at least
`min_char_count` times in the training split, most frequent first (ties by code point).

Put the data under the data root (`LRA_DATA`, default ./data), then train:

    lra train task=text          # aclImdb/{train,test}/{pos,neg}/*.txt or plain_text/*.parquet
    lra train task=retrieval     # new_aan_pairs.{train,eval,test}.tsv from lra_release.gz

docs/tasks.md describes the formats, the validation protocols and what each run records.
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lra.errors import UserError
from lra.registry import register_task
from lra.tasks.base import DataError, SequenceDataset, TaskData, find_file, split_files

TOKENIZATION = "bytes-v1: raw bytes, token = byte + 1 (0 pads), vocab 257, cut at max_len"
CHARS = ("chars-v1: Unicode characters; 0 pads, 1 <unk>, 2 <eos> if appended, then the "
         "characters seen min_char_count times in the training split, by count then code point")
LRA_RELEASE = "https://storage.googleapis.com/long-range-arena/lra_release.gz"


def encode(docs, max_len):
    """Token arrays of byte strings: byte b -> b + 1, each cut at `max_len` bytes.

    Done once over all documents joined, then split into views of one array: uint8 when no
    byte is 255 (always so for UTF-8, which never uses 0xF5-0xFF), int16 otherwise.
    """
    cut = [doc[:max_len] for doc in docs]
    flat = np.frombuffer(b"".join(cut), np.uint8)
    if flat.size and flat.max() == 255:
        flat = flat.astype(np.int16)
    ends = np.cumsum([len(doc) for doc in cut])
    return np.split(flat + 1, ends[:-1])


def append_token(arrays, token):
    """Each array with `token` appended, in a wider dtype when the token does not fit theirs."""
    if not arrays:
        return arrays
    dtype = np.result_type(arrays[0].dtype, np.min_scalar_type(token))
    out = []
    for x in arrays:
        y = np.empty(len(x) + 1, dtype)
        y[:-1], y[-1] = x, token
        out.append(y)
    return out


def code_points(docs, max_chars):
    """uint32 arrays of the Unicode code points of UTF-8 documents, each cut at `max_chars`."""
    return [np.frombuffer(doc.decode().encode("utf-32-le"), np.uint32)[:max_chars]
            for doc in docs]


class CharVocabulary:
    """Characters seen at least `min_count` times in `train` (code point arrays) -> ids.

    Ids: 0 pads, 1 is <unk> (every other character), 2 is <eos> when `eos`, then the kept
    characters by decreasing count, ties by code point (state-spaces/s4's torchtext vocabulary
    orders them the same way; the order only permutes the embedding's rows).
    """

    def __init__(self, train, min_count, eos):
        values, counts = np.unique(np.concatenate(train), return_counts=True)  # by code point
        kept, counts = values[counts >= min_count], counts[counts >= min_count]
        if not len(kept):
            raise DataError(f"text: no character is seen {min_count} times in the training "
                            "split; lower task.min_char_count")
        order = np.lexsort((kept, -counts))  # id order: by decreasing count, then code point
        self.eos = 2 if eos else None
        self.first_id = 3 if eos else 2
        self.chars = kept[order]
        self.size = self.first_id + len(kept)
        self.by_code = kept  # sorted, for searchsorted
        self.id_by_code = np.empty(len(kept), np.int64)
        self.id_by_code[order] = np.arange(len(kept)) + self.first_id
        self.dtype = np.uint8 if self.size <= 256 else np.int32

    def encode(self, codes):
        """ids (of self.dtype) of one code point array, <eos> appended when the vocabulary has
        one."""
        pos = np.minimum(np.searchsorted(self.by_code, codes), len(self.by_code) - 1)
        ids = np.where(self.by_code[pos] == codes, self.id_by_code[pos], 1).astype(self.dtype)
        return ids if self.eos is None else np.append(ids, self.dtype(self.eos))

    def describe(self):
        """The vocabulary for the record: its size and its characters in id order."""
        return {"vocab_size": self.size, "first_char_id": self.first_id,
                "chars": "".join(map(chr, self.chars.tolist()))}


# --- Text: IMDb reviews -------------------------------------------------------------------

IMDB_LAYOUT = ("aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt (one review per file, UTF-8), "
               "or plain_text/{train,test}-*.parquet with columns text (string) and label "
               "(0 negative, 1 positive)")


def _missing_imdb(root):
    return (f"IMDb data not found: no aclImdb/train/pos/*.txt and no plain_text/train-*.parquet "
            f"up to 3 folders deep under the data root {root}. Expected {IMDB_LAYOUT}. Get "
            "aclImdb_v1.tar.gz from https://ai.stanford.edu/~amaas/data/sentiment/ and unpack it "
            "under the data root, or download the Hugging Face parquet files: `huggingface-cli "
            "download stanfordnlp/imdb --repo-type dataset --include 'plain_text/*' --local-dir "
            f"{root / 'imdb'}`. (lra_release.gz has no IMDb: LRA read it through TensorFlow "
            "Datasets.) Point LRA_DATA or data_dir= at the data root.")


def read_aclimdb(folder):
    """{"train", "test"} -> (review bytes, labels) from Stanford's aclImdb/ folder."""
    splits = {}
    for split in ("train", "test"):
        texts, labels = [], []
        for label, kind in enumerate(("neg", "pos")):
            where = folder / split / kind
            files = ([where / name for name in os.listdir(where) if name.endswith(".txt")]
                     if where.is_dir() else [])
            if not files:
                raise DataError(f"found {folder} but no reviews in {where}; expected {IMDB_LAYOUT}")
            for path in files:  # in any order: load() sorts the examples
                review = path.read_bytes()
                try:
                    review.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") \
                        from None
                texts.append(review)
            labels += [label] * len(files)
        splits[split] = texts, labels
    return splits


def read_imdb_parquet(folder):
    """{"train", "test"} -> (review bytes, labels) and the files read, from Hugging Face's
    plain_text/."""
    splits, files = {}, {}
    for split in ("train", "test"):
        files[split] = sorted(folder.glob(f"{split}-*.parquet"))
        if not files[split]:
            raise DataError(f"found {folder} but no {split}-*.parquet in it; "
                            f"expected {IMDB_LAYOUT}")
        texts, labels = [], []
        for path in files[split]:
            try:
                columns = pq.read_schema(path).names
                if "text" not in columns or "label" not in columns:
                    raise DataError(f"{path}: columns {columns}, not text and label; "
                                    f"expected {IMDB_LAYOUT}")
                table = pq.read_table(path, columns=["text", "label"])
            except (pa.ArrowException, OSError) as err:
                raise DataError(f"{path}: unreadable as parquet ({err}); "
                                f"expected {IMDB_LAYOUT}") from None
            label = table.column("label").to_numpy(zero_copy_only=False)
            if table.column("text").null_count or not np.isin(label, (0, 1)).all():
                raise DataError(f"{path}: every row needs a text and a label 0 or 1; found "
                                f"labels {sorted(set(label.tolist()))} and "
                                f"{table.column('text').null_count} empty texts")
            texts += [review.encode() for review in table.column("text").to_pylist()]
            labels += label.tolist()
        splits[split] = texts, labels
    return splits, {split: [str(p) for p in paths] for split, paths in files.items()}


@register_task("text")
class Text(TaskData):
    """IMDb reviews as bytes, from aclImdb/ (preferred when both are there) or plain_text/*.parquet.

    `protocol="heldout"` picks checkpoints on `val_fraction` of train drawn with `split_seed`;
    `protocol="published"` on the test set itself, as LRA did (for comparison only).
    `tokens="chars"` builds the character vocabulary from the split trained on (train less the
    held-out share under heldout); its size is known after setup (before it, as when `lra bench`
    builds a task without data, vocab_size is the byte level's).
    """

    name = "text"
    num_classes = 2
    data_options = ("seq_len", "validation", "val_fraction", "split_seed", "tokens",
                    "min_char_count", "append_eos")

    def __init__(self, data_dir="data", seed=0, batch_size=32, num_workers=0, max_len=4096,
                 protocol="heldout", val_fraction=0.1, split_seed=0, tokens="bytes",
                 min_char_count=1, append_eos=False):
        super().__init__(data_dir, seed, batch_size, num_workers)
        if protocol not in ("heldout", "published"):
            raise UserError(f"task.protocol={protocol!r}: choose heldout (validate on a seeded "
                            "split of train) or published (validate on the test set, as LRA did)")
        if not 0 < val_fraction < 1:
            raise UserError(f"task.val_fraction={val_fraction}: give a share of train between "
                            "0 and 1")
        if tokens not in ("bytes", "chars"):
            raise UserError(f"task.tokens={tokens!r}: choose bytes (UTF-8 bytes, vocab 257, as "
                            "LRA) or chars (a character vocabulary from train, as state-spaces/s4)")
        if max_len < 1 + bool(append_eos):
            raise UserError(f"task.max_len={max_len} leaves no room for a token"
                            + (" before the EOS (append_eos)" if append_eos else ""))
        self.seq_len = int(max_len)
        self.validation = protocol
        self.val_fraction = float(val_fraction)
        self.split_seed = int(split_seed)
        self.tokens = tokens
        self.min_char_count = int(min_char_count)
        self.append_eos = bool(append_eos)
        self.vocab_size = 257 + self.append_eos

    def restore(self, protocol):
        if self.tokens == "chars":
            self.vocab_size = protocol["vocabulary"]["vocab_size"]

    def tokenize(self, texts):
        """{split: documents} -> ({split: token arrays}, the vocabulary for the record); the
        character vocabulary is counted on texts["train"]."""
        room = self.seq_len - self.append_eos
        if self.tokens == "bytes":
            tokens = {split: encode(docs, room) for split, docs in texts.items()}
            if self.append_eos:
                tokens = {split: append_token(t, 257) for split, t in tokens.items()}
            return tokens, {"vocab_size": self.vocab_size}
        codes = {split: code_points(docs, room) for split, docs in texts.items()}
        vocabulary = CharVocabulary(codes["train"], self.min_char_count, self.append_eos)
        self.vocab_size = vocabulary.size
        return ({split: [vocabulary.encode(c) for c in arrays] for split, arrays in codes.items()},
                vocabulary.describe())

    def _source(self):
        """("aclImdb", its folder) or ("parquet", the plain_text folder): where the reviews are."""
        root = Path(self.data_dir).resolve()
        review = find_file(root, "aclImdb/train/pos/*.txt")
        if review:
            return "aclImdb", review.parents[2]
        shard = find_file(root, "plain_text/train-*.parquet")
        if shard:
            return "parquet", shard.parent
        raise DataError(_missing_imdb(root))

    def sources(self):
        kind, folder = self._source()
        if kind == "parquet":
            return sorted(p for split in ("train", "test")
                          for p in folder.glob(f"{split}-*.parquet"))
        wheres = [folder / split / label for split in ("train", "test") for label in ("neg", "pos")]
        return sorted(where / name for where in wheres if where.is_dir()
                      for name in os.listdir(where) if name.endswith(".txt"))

    def load(self):
        kind, folder = self._source()
        if kind == "aclImdb":
            raw, files = read_aclimdb(folder), str(folder)
        else:
            raw, files = read_imdb_parquet(folder)

        recipe = {"tokenization": TOKENIZATION, "max_len": self.seq_len,
                  "validation": self.validation}
        if self.validation == "heldout":
            recipe.update(val_fraction=self.val_fraction, split_seed=self.split_seed)
        # each option only where it is not the default: the default's fingerprint is unchanged
        if self.tokens == "chars":
            recipe.update(tokenization=CHARS, min_char_count=self.min_char_count)
        if self.append_eos:
            recipe.update(append_eos=True)
        digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
        data = {}
        for split, (texts, labels) in raw.items():
            # One order for both layouts (and any shard or file order): by label, then bytes.
            order = sorted(range(len(texts)), key=lambda i: (labels[i], texts[i]))
            texts, labels = [texts[i] for i in order], np.array([labels[i] for i in order])
            for body, label in zip(texts, labels):
                digest.update(b"%d %d\n" % (label, len(body)))
                digest.update(body)
            data[split] = texts, labels

        parts = {"test": data["test"]}
        if self.validation == "published":
            parts["train"] = data["train"]
        else:
            texts, labels = data["train"]
            perm = np.random.default_rng(self.split_seed).permutation(len(texts))
            n_val = round(self.val_fraction * len(texts))
            for split, index in (("train", np.sort(perm[n_val:])), ("val", np.sort(perm[:n_val]))):
                parts[split] = [texts[i] for i in index], labels[index]
        tokens, vocabulary = self.tokenize({split: texts for split, (texts, _) in parts.items()})
        splits = {split: SequenceDataset(tokens[split], labels)
                  for split, (_, labels) in parts.items()}
        if self.validation == "published":
            splits["val"] = splits["test"]
        splits = {split: splits[split] for split in ("train", "val", "test")}
        recipe["vocabulary"] = vocabulary
        self.fingerprint = digest.hexdigest()
        self.protocol = {"source": kind, "files": files, **recipe,
                         "order": "each split sorted by (label, review bytes)",
                         "shuffle_seed": self.seed,
                         "sizes": {split: len(ds) for split, ds in splits.items()}}
        return splits


# --- Retrieval: ACL Anthology Network citation pairs ---------------------------------------

_LABELS = {b"0": 0, b"1": 1, b"0.0": 0, b"1.0": 1}


def read_pairs(path, max_len, digest):
    """(first documents, second documents, labels) of one `new_aan_pairs.*.tsv`; its bytes go to
    `digest`.

    A line: label, id1, id2, text1, text2, tab-separated, no header, no quoting.
    """
    first, second, labels = [], [], []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            digest.update(line)
            fields = line.rstrip(b"\r\n").split(b"\t")
            if fields == [b""]:
                continue
            try:
                if len(fields) != 5:
                    raise ValueError(f"expected 5 tab-separated columns (label, id1, id2, text1, "
                                     f"text2), found {len(fields)}")
                label = _LABELS.get(fields[0].strip())
                if label is None:
                    raise ValueError(f"label {fields[0][:20].decode(errors='replace')!r} is not "
                                     "0 or 1 (written 0, 1, 0.0 or 1.0)")
                if not fields[3] or not fields[4]:
                    raise ValueError(f"empty document in column {4 if not fields[3] else 5}")
            except ValueError as err:
                raise DataError(f"{path}:{lineno}: {err}") from None
            labels.append(label)
            first.append(fields[3][:max_len])
            second.append(fields[4][:max_len])
    if not labels:
        raise DataError(f"{path}: no examples in it")
    return encode(first, max_len), encode(second, max_len), labels


def _missing_pairs(root):
    return ("Retrieval data not found: no new_aan_pairs.train.tsv (with new_aan_pairs.eval.tsv "
            "and new_aan_pairs.test.tsv beside it) up to 3 folders deep under the data root "
            f"{root}. Expected tab-separated lines label<TAB>id1<TAB>id2<TAB>text1<TAB>text2, no "
            f"header. They ship in lra_release.gz ({LRA_RELEASE}, from the "
            "google-research/long-range-arena repository) as lra_release/lra_release/tsv_data/: "
            "unpack it under the data root and point LRA_DATA or data_dir= at that root.")


@register_task("retrieval")
class Retrieval(TaskData):
    """Pairs of AAN papers, each as bytes: `new_aan_pairs.{train,eval,test}.tsv` (eval
    validates); `append_eos` ends each document with token 257."""

    name = "retrieval"
    num_classes = 2
    dual = True
    data_options = ("seq_len", "append_eos")

    def __init__(self, data_dir="data", seed=0, batch_size=32, num_workers=0, max_len=4000,
                 append_eos=False):
        super().__init__(data_dir, seed, batch_size, num_workers)
        if max_len < 1 + bool(append_eos):
            raise UserError(f"task.max_len={max_len} leaves no room for a token"
                            + (" before the EOS (append_eos)" if append_eos else ""))
        self.seq_len = int(max_len)
        self.append_eos = bool(append_eos)
        self.vocab_size = 257 + self.append_eos

    def _files(self):
        """{split: path} of the three files beside the shallowest `new_aan_pairs.train.tsv` (eval
        validates)."""
        root = Path(self.data_dir).resolve()
        names = {split: f"new_aan_pairs.{stem}.tsv"
                 for split, stem in (("train", "train"), ("val", "eval"), ("test", "test"))}
        return split_files(root, names, _missing_pairs(root))

    def sources(self):
        return list(self._files().values())

    def load(self):
        eos = "; <eos> 257 appended, counted in max_len" if self.append_eos else ""
        digest = hashlib.sha256(f"{TOKENIZATION}; max_len={self.seq_len}{eos}\n".encode())
        splits, files = {}, {}
        for split, path in self._files().items():
            first, second, labels = read_pairs(path, self.seq_len - self.append_eos, digest)
            if self.append_eos:
                first, second = append_token(first, 257), append_token(second, 257)
            splits[split], files[split] = SequenceDataset(first, labels, inputs2=second), str(path)
        self.fingerprint = digest.hexdigest()
        self.protocol = {"source": "files", "files": files, "tokenization": TOKENIZATION,
                         "max_len": self.seq_len, "append_eos": self.append_eos,
                         "vocab_size": self.vocab_size, "validation": "eval file",
                         "shuffle_seed": self.seed,
                         "sizes": {split: len(ds) for split, ds in splits.items()}}
        return splits
