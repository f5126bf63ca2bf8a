"""ListOps: nested MIN / MAX / MED / SM expressions over digits, classified by their value (10
classes).

Nangia & Bowman, "ListOps: A Diagnostic Dataset for Latent Tree Learning" (NAACL SRW 2018),
as regenerated for the Long-Range Arena (Tay et al., ICLR 2021). A line of `basic_train.tsv`:

    ( ( ( [MAX 2 ) 9 ) ] )<TAB>9            MAX(2, 9) = 9

The model sees the tokens with parentheses dropped: `[MAX 2 9 ]`. Two options follow the
references: `append_eos` ends every sequence with an end token (id 16, vocab 17; state-spaces/s4's
ListOps, `append_eos: True`), and `keep_closing_brackets: false` drops `]` as well (LRA's
alphanumeric-only tokenizer does: `[MAX 2 9 ]` -> `MAX 2 9`). Make the files, then train:

    lra data generate listops       # data/listops/basic_{train,val,test}.tsv
    lra train task=listops          # tokenised once into the cache (`lra data prepare listops`)

`listops_mini`, the default task of `lra train`, is the same process made short and shallow,
generated in memory at setup. docs/tasks.md describes the format, the generator and its speed.
"""
import hashlib
import itertools
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lra.generators.listops import HEADER, OPERATORS, TreeSpec, samples
from lra.registry import register_task
from lra.tasks.base import DataError, SequenceDataset, TaskData, split_files

# token id = index: pad 0, operators 1-4, ] 5, digit d 6 + d; with append_eos, <eos> 16
VOCAB = ("<pad>", *OPERATORS, "]", *"0123456789")
CLOSE, EOS = VOCAB.index("]"), len(VOCAB)
TOKENIZATION = "listops-v1: drop ( and ), keep ], split on whitespace; ids " + " ".join(VOCAB)

_APPLY = {1: min, 2: max, 3: lambda args: int(np.median(args)), 4: lambda args: sum(args) % 10}


# --- tokens -------------------------------------------------------------------------------

_IDS = {token.encode(): i for i, token in enumerate(VOCAB) if i}
_DIGITS = {str(d).encode() for d in range(10)}


def tokenize(source):
    """Token ids (uint8) of a source (bytes): `(` and `)` dropped, `]` kept, split on whitespace.

    Raises ValueError saying what is wrong: an unknown token, or no token at all.
    """
    words = source.translate(None, b"()").split()
    try:
        ids = bytes(map(_IDS.__getitem__, words))
    except KeyError as err:
        raise ValueError(f"unknown token {err.args[0].decode(errors='replace')!r}; a source holds "
                         f"( ) {' '.join(VOCAB[1:6])} and the digits 0-9") from None
    if not ids:
        raise ValueError("empty source")
    return np.frombuffer(ids, np.uint8)


def finish(ids, max_len, append_eos=False, keep_closing_brackets=True):
    """The ids a model sees, at most `max_len`: `]` (id 5) dropped unless kept, then cut at
    max_len, or at max_len - 1 followed by EOS (16) when `append_eos` (the EOS counts in max_len,
    as state-spaces/s4's `l_max`)."""
    if not keep_closing_brackets:
        ids = ids[ids != CLOSE]
    if not append_eos:
        return ids[:max_len]
    return np.append(ids[:max_len - 1], np.uint8(EOS))


def evaluate(ids):
    """The value of an expression given as token ids: `evaluate([4, 13, 14, 5]) == 5`
    ([SM 7 8 ])."""
    stack = [[]]
    for t in map(int, ids):
        if t in _APPLY:
            stack.append([t])
        elif t == 5:
            op, *args = stack.pop()
            stack[-1].append(_APPLY[op](args))
        else:
            stack[-1].append(t - 6)
    (value,) = stack[0]
    return value


# --- reading the files --------------------------------------------------------------------

def read_split(path, max_len, digest, **options):
    """Token arrays (`finish`ed with max_len and `options`) and targets of one `basic_*.tsv`; its
    bytes go to `digest`."""
    tokens, targets = [], []
    with open(path, "rb") as f:
        header = f.readline()
        digest.update(header)
        if header.rstrip(b"\r\n") != HEADER.rstrip(b"\r\n"):
            raise DataError(f"{path}:1: expected the header 'Source<TAB>Target', "
                            f"found {header[:60]!r}")
        for lineno, line in enumerate(f, 2):
            digest.update(line)
            fields = line.rstrip(b"\r\n").split(b"\t")
            if fields == [b""]:
                continue
            try:
                if len(fields) != 2:
                    raise ValueError("expected 2 tab-separated columns (Source, Target), "
                                     f"found {len(fields)}")
                if fields[1].strip() not in _DIGITS:
                    target = fields[1].decode(errors="replace")
                    raise ValueError(f"target {target!r} is not an integer in 0-9")
                tokens.append(finish(tokenize(fields[0]), max_len, **options))
            except ValueError as err:
                raise DataError(f"{path}:{lineno}: {err}") from None
            targets.append(int(fields[1]))
    return tokens, targets


def _missing(root):
    return (f"ListOps data not found: no basic_train.tsv (with basic_val.tsv and basic_test.tsv "
            f"beside it) up to 3 folders deep under the data root {root}. Generate it with "
            f"`lra data generate listops` (writes {root / 'listops'}), or download lra_release.gz "
            "from the google-research/long-range-arena repository "
            "(https://storage.googleapis.com/long-range-arena/lra_release.gz), unpack it under "
            "the data root, and point LRA_DATA or data_dir= at that root.")


# --- the data modules ---------------------------------------------------------------------

@register_task("listops")
class ListOps(TaskData):
    """The ListOps files `basic_{train,val,test}.tsv`, the shallowest found under the data root."""

    name = "listops"
    num_classes = 10
    data_options = ("seq_len", "append_eos", "keep_closing_brackets")

    def __init__(self, data_dir="data", seed=0, batch_size=32, num_workers=0, max_len=2000,
                 append_eos=False, keep_closing_brackets=True):
        super().__init__(data_dir, seed, batch_size, num_workers)
        if max_len < 1 + bool(append_eos):
            raise DataError(f"listops: max_len={max_len} leaves no room for a token"
                            + (" before the EOS (append_eos)" if append_eos else ""))
        self.seq_len = int(max_len)
        self.append_eos = bool(append_eos)
        self.keep_closing_brackets = bool(keep_closing_brackets)
        self.vocab_size = len(VOCAB) + self.append_eos

    def tokenization(self):
        """TOKENIZATION and max_len, and each option only where it is not the default (so the
        default's fingerprint is that of the files alone, as before the options)."""
        text = f"{TOKENIZATION}; max_len={self.seq_len}"
        if not self.keep_closing_brackets:
            text += "; ] dropped as well"
        if self.append_eos:
            text += f"; <eos> {EOS} appended, counted in max_len"
        return text

    def _files(self):
        """{split: path} of the three files beside the shallowest `basic_train.tsv`."""
        root = Path(self.data_dir).resolve()
        names = {split: f"basic_{split}.tsv" for split in ("train", "val", "test")}
        return split_files(root, names, _missing(root))

    def sources(self):
        return list(self._files().values())

    def load(self):
        digest = hashlib.sha256(f"{self.tokenization()}\n".encode())
        splits, files = {}, {}
        for split, path in self._files().items():
            tokens, targets = read_split(path, self.seq_len, digest, append_eos=self.append_eos,
                                         keep_closing_brackets=self.keep_closing_brackets)
            splits[split], files[split] = SequenceDataset(tokens, targets), str(path)
        self.fingerprint = digest.hexdigest()
        self.protocol = {"source": "files", "files": files, "tokenization": TOKENIZATION,
                         "max_len": self.seq_len, "append_eos": self.append_eos,
                         "keep_closing_brackets": self.keep_closing_brackets,
                         "vocab_size": self.vocab_size, "shuffle_seed": self.seed,
                         "sizes": {split: len(ds) for split, ds in splits.items()}}
        return splits


@register_task("listops_mini")
class ListOpsMini(TaskData):
    """A short, shallow ListOps generated in memory at setup from its own `data_seed`.

    Same operators, format and tokens as ListOps, and ListOps' token options (max_len,
    append_eos, keep_closing_brackets), so a ListOps recipe runs on it unchanged; the defaults
    here are those of conf/task/listops_mini.yaml, the harness's embedded default task. It reads
    no files, so it is not cached: generating it (0.05 s) is quicker than reading a cache.
    """

    name = "listops_mini"
    num_classes = 10

    def __init__(self, data_dir="data", seed=0, batch_size=64, num_workers=0, n_train=8000,
                 n_val=1000, n_test=1000, data_seed=0, max_depth=4, min_args=2, max_args=5,
                 leaf_prob=0.75, min_length=10, max_length=100, max_len=None, append_eos=False,
                 keep_closing_brackets=True):
        super().__init__(data_dir, seed, batch_size, num_workers)
        self.sizes = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
        self.data_seed = int(data_seed)
        self.spec = TreeSpec(max_depth=max_depth, min_args=min_args, max_args=max_args,
                             leaf_prob=leaf_prob, min_length=min_length, max_length=max_length)
        # the generator's sequences are shorter than max_length; the EOS may add one
        self.seq_len = int(max_len) if max_len else max_length - 1 + bool(append_eos)
        self.token_options = {"append_eos": bool(append_eos),
                              "keep_closing_brackets": bool(keep_closing_brackets)}
        # the options away from their defaults, in the fingerprint (the defaults keep the old one)
        self.changed = {k: v for k, v in {"max_len": max_len, **self.token_options}.items()
                        if v != {"max_len": None, "append_eos": False,
                                 "keep_closing_brackets": True}[k]}
        self.vocab_size = len(VOCAB) + bool(append_eos)

    def load(self):
        lines = list(itertools.islice(samples(self.spec, self.data_seed), sum(self.sizes.values())))
        recipe = {"generator": asdict(self.spec), "data_seed": self.data_seed, "sizes": self.sizes,
                  "tokenization": TOKENIZATION}
        recipe.update(self.changed)
        digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
        digest.update(b"\n".join(lines))
        pairs = [line.split(b"\t") for line in lines]
        tokens = [finish(tokenize(source), self.seq_len, **self.token_options)
                  for source, _ in pairs]
        targets = [int(t) for _, t in pairs]
        splits, start = {}, 0
        for split, n in self.sizes.items():
            splits[split] = SequenceDataset(tokens[start:start + n], targets[start:start + n])
            start += n
        self.fingerprint = digest.hexdigest()
        self.protocol = {"source": "generated", **recipe, "shuffle_seed": self.seed}
        return splits
