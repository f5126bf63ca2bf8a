"""leaderboard/index.html: escaped file data, plots from the records, and a real headless browser
(Debian's chromium) running the page's sorting script."""
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import PUBLISHED
from helpers import run_record as record
from helpers import write_run_file as write

from lra.leaderboard import render
from lra.train import epoch_history

HOSTILE = "<script>alert(1)</script>"
CHROMIUM = shutil.which("chromium")


class Dom(HTMLParser):
    """The leaderboard table's rows as cell texts, its attributes, and every element's tag."""

    def __init__(self, text):
        super().__init__()
        self.rows, self.table, self.tags, self._cell, self._in_table = [], {}, [], None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "table" and dict(attrs).get("id") == "leaderboard":
            self.table, self._in_table = dict(attrs), True
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        elif self._cell is not None and tag in ("td", "th"):
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def history(final):
    return [{"epoch": e, "val_acc": final * (e + 1) / 4, "val_loss": 2.0 - e / 4,
             "train_loss": 2.2 - e / 3} for e in range(4)]


@pytest.fixture
def page(tmp_path):
    runs = tmp_path / "runs"
    accs = {("s4d", "listops"): [0.55, 0.59], ("transformer", "listops"): [0.38],
            (HOSTILE, "listops"): [0.21], ("s4d", "text"): [0.80]}
    for (model, task), values in accs.items():
        for seed, acc in enumerate(values):
            metrics = {"test_acc": acc, "val_acc": acc + seed / 100, "history": history(acc)}
            write(runs, f"{task}/{len(model)}/{seed}.json",
                  record(model, task, seed, acc, metrics=metrics))
    write(runs, "text/old.json", record("lru", "text", 0, 0.7))  # an older record: no history
    return render(runs, tmp_path / "out", PUBLISHED).html


def test_file_strings_are_escaped_and_nothing_is_loaded(page):
    text = page.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and HOSTILE not in text
    dom = Dom(text)
    assert dom.tags.count("script") == 1
    assert [HOSTILE, "ours: default"] == dom.rows[[r[0] for r in dom.rows].index(HOSTILE)][:2]
    assert "src=" not in text and "href=" not in text and "url(" not in text
    assert "default-src 'none'" in text


def test_plots_come_from_the_records(page):
    text = page.read_text()
    # throughput per task, by length, two per task curves
    assert text.count('<svg class="plot"') == 2 + 1 + 2 * 2
    assert "s4d (default, scratch, data ab): 57.0% at 2K tokens/s" in text
    # the best run: highest val_acc
    assert "run listops-s4d-s1-completed: epoch 3, val_acc 59.0%" in text
    assert "run listops-s4d-s0-completed" not in text
    assert "transformer (published: LRA paper) on listops: 36.37%" in text
    assert "lru (default, scratch, data ab), run" not in text  # no history, no curve


def test_epoch_history_reads_lightnings_metrics_csv(tmp_path):
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,test_acc,train_loss,val_acc,val_loss\n"
        "0,0,,,0.25,2.0\n0,1,,,0.5,1.5\n0,1,,2.5,,\n1,3,,,0.75,1.0\n1,3,,1.25,,\n2,4,0.7,,,\n")
    assert epoch_history(tmp_path / "metrics.csv") == [
        # the last evaluation of the epoch
        {"epoch": 0, "val_acc": 0.5, "val_loss": 1.5, "train_loss": 2.5},
        # the test row is not an epoch
        {"epoch": 1, "val_acc": 0.75, "val_loss": 1.0, "train_loss": 1.25}]
    assert epoch_history(tmp_path / "missing.csv") == []


def dump_dom(path: Path, fragment: str, profile: Path) -> str:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--dump-dom", path.resolve().as_uri() + fragment]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None,
                    reason="chromium is not installed (CI installs it: apt-get install chromium)")
def test_chromium_runs_the_page_and_sorts_it(page, tmp_path):
    dom = Dom(dump_dom(page, "", tmp_path / "profile"))
    assert dom.table.get("data-ready") == "1"  # the script ran to its end: handlers wired
    assert dom.tags.count("script") == 1  # ours; the hostile model name stayed text
    header, rows = dom.rows[0], dom.rows[1:]
    assert header[:5] == ["Model", "Entry", "Training", "Data", "Checkpoint"]
    # models we ran, in published.csv's order
    ours = [(r[0], r[1]) for r in rows if r[1].startswith("ours")]
    assert ours == [("transformer", "ours: default"), ("s4d", "ours: default"),
                    ("lru", "ours: default"), (HOSTILE, "ours: default")]
    listops = header.index("ListOps")
    assert rows[0][listops] == "38.0 (n=1)"
    assert rows[1][:2] == ["transformer", "gap to best published"]
    s4d_row = next(r for r in rows if r[:2] == ["s4d", "ours: default"])
    assert s4d_row[listops] == "57.0 ± 2.8 (n=2)"

    dom = Dom(dump_dom(page, "#sort=ListOps&desc", tmp_path / "profile"))
    assert dom.table.get("data-ready") == "1"
    firsts = [r for r in dom.rows[1:] if r[1] != "gap to best published"]
    values = [float(r[listops].split()[0].rstrip("†")) for r in firsts
              if r[listops] not in ("", "✗")]
    # Mega, the best published ListOps
    assert values == sorted(values, reverse=True) and values[0] == 63.14
    assert [r[listops] for r in firsts][-1] == ""  # empty cells last
    s4d = next(i for i, r in enumerate(dom.rows) if r[:2] == ["s4d", "ours: default"])
    assert dom.rows[s4d + 1][:2] == ["s4d", "gap to best published"]  # a gap row moves with its row
