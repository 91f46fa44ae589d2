"""``audit report``: sampling fairness (``hindsight.audit.fairness``, its figures in
``report`` and ``text``) and the HTML page (``hindsight.audit.html``), opened in a real
headless browser."""

from __future__ import annotations

import html
import json
import re
import subprocess
import time
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from matplotlib.image import imread
from scipy import signal, stats

from hindsight.audit import report
from hindsight.audit.fairness import TAIL, binomial, poisson_binomial, quantiles
from hindsight.audit.html import render as render_html
from hindsight.audit.html import write as write_html
from hindsight.audit.text import render
from hindsight.client.cli import main
from hindsight.commitlog import GENESIS, entry_hash
from hindsight.errors import ClientError
from tests.pulse import tool

NOW = datetime(2026, 12, 1, tzinfo=UTC)
PURPOSE = "training"
RETAIN = "2027-03-01T00:00:00.000Z"
DAY = "2026-11-28"


class Log:
    """A commit log chained by hand exactly as the daemon chains it, at chosen times; quick
    enough for thousands of calls (``CommitLog`` flushes every line to disk)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.serial = 0

    def add(self, event: str, /, day: str = DAY, **fields: Any) -> None:
        prev = self.entries[-1]["hash"] if self.entries else GENESIS
        entry = {"seq": len(self.entries) + 1, "time": f"{day}T10:00:00.000Z", "event": event}
        entry.update(fields, prev=prev)
        entry["hash"] = entry_hash(entry)
        self.entries.append(entry)

    def epoch(self, epoch: int, one_in: int, day: str = DAY) -> None:
        self.add(
            "sampling_epoch", day, epoch=epoch, one_in=one_in, purpose=PURPOSE,
            commitment="ab" * 32,
        )  # fmt: skip

    def call(
        self,
        agent: str | None,
        line: str = "desk-01",
        *,
        epoch: int | None = 1,
        reasons: tuple[str, ...] = (),
        why: str = "not_kept",
        announced: tuple[str, ...] = (PURPOSE,),
        day: str = DAY,
    ) -> str:
        """A call from start to outcome: committed when it has ``reasons``, else wiped."""
        self.serial += 1
        call_id = f"call-{self.serial}"
        started: dict[str, Any] = {"agent": agent, "announced": list(announced)}
        if epoch is not None:
            started["epoch"] = epoch
        self.add("call_started", day, call_id=call_id, line=line, **started)
        if why != "not_kept" or not reasons:
            more = {"reasons": list(reasons)} if reasons else {}
            self.add("call_wiped", day, call_id=call_id, line=line, seconds=9.0, why=why, **more)
            return call_id
        purposes = [PURPOSE if r == "sampled" else "escalation" for r in reasons]
        self.add(
            "call_committed", day, call_id=call_id, line=line, agent=agent,
            reasons=list(reasons), purposes=purposes, retention=dict.fromkeys(purposes, RETAIN),
            retain_until=RETAIN, path=f"recordings/{call_id}.flac", sha256="0" * 64,
            seconds=9.0, rolled_seconds=0.0, ended=f"{day}T10:00:00.000Z",
        )  # fmt: skip
        return call_id

    def calls(self, agent: str, n: int, sampled: int, line: str = "desk-01", **kw: Any) -> None:
        """``n`` calls of ``agent``, the first ``sampled`` of them sampled."""
        for i in range(n):
            self.call(agent, line, reasons=("sampled",) if i < sampled else (), **kw)

    def write(self, state: Path) -> Path:
        lines = (json.dumps(e, ensure_ascii=False, separators=(",", ":")) for e in self.entries)
        (state / "commit.log").write_text("".join(f"{line}\n" for line in lines))
        return state


def band_of(n: int, one_in: int) -> tuple[int, int]:
    """The band as scipy computes it, for a single p."""
    p = 1 / one_in
    return int(stats.binom.ppf(TAIL, n, p)), int(stats.binom.ppf(1 - TAIL, n, p))


# --- the band's arithmetic -----------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 7, 100, 1000, 12345, 100_000])
@pytest.mark.parametrize("one_in", [1, 2, 3, 10, 97, 1000])
def test_binomial_band_is_scipys_exact_quantiles(n: int, one_in: int) -> None:
    assert quantiles(binomial(n, 1 / one_in)) == band_of(n, one_in)


def test_a_single_p_through_the_poisson_binomial_is_the_binomial() -> None:
    for n, p in ((1000, 0.1), (5000, 1 / 3)):
        assert quantiles(poisson_binomial({p: n})) == quantiles(binomial(n, p))


def full_quantiles(pmf: npt.NDArray[np.float64]) -> tuple[int, int]:
    cdf = np.cumsum(pmf)
    return int(np.searchsorted(cdf, TAIL)), int(np.searchsorted(cdf, 1 - TAIL))


def scipy_poisson_binomial(counts: dict[float, int], fft: bool) -> tuple[int, int]:
    """The quantiles from scipy's binomial pmfs over their whole support, convolved."""
    total = np.ones(1)
    for p, n in counts.items():
        part = stats.binom.pmf(np.arange(n + 1), n, p)
        total = signal.fftconvolve(total, part) if fft else np.convolve(total, part)
    return full_quantiles(total)


def test_the_poisson_binomial_band_matches_a_full_convolution() -> None:
    counts = {0.1: 3000, 0.5: 2000, 1 / 3: 1000, 0.0: 500}
    assert quantiles(poisson_binomial(counts)) == scipy_poisson_binomial(counts, fft=False)


def test_the_band_of_100000_calls_over_three_epochs_is_exact_and_quick() -> None:
    counts = {0.1: 40_000, 0.5: 30_000, 1 / 3: 30_000}
    began = time.perf_counter()
    band = quantiles(poisson_binomial(counts))
    assert time.perf_counter() - began < 1.0
    assert band == scipy_poisson_binomial(counts, fft=True)


# --- fairness in the report ----------------------------------------------------------------

LOW, HIGH = band_of(1000, 10)


@pytest.mark.parametrize(
    ("sampled", "flag"),
    [(250, "above"), (30, "below"), (HIGH, None), (HIGH + 1, "above"), (LOW, None),
     (LOW - 1, "below")],
)  # fmt: skip
def test_the_one_agent_sampled_too_often_or_too_rarely_is_flagged(
    tmp_path: Path, sampled: int, flag: str | None
) -> None:
    log = Log()
    log.epoch(1, 10)
    log.calls("ann", 1000, 97, "desk-01")
    log.calls("bob", 500, 48, "desk-01")
    log.calls("bob", 500, 52, "desk-02")
    log.calls("cy", 1000, sampled, "desk-03")
    fairness = report(log.write(tmp_path), NOW).to_json()["fairness"]
    agents, lines = fairness["per_agent"], fairness["per_line"]
    assert {name: band["flag"] for name, band in agents.items()} == {
        "ann": None,
        "bob": None,
        "cy": flag,
    }
    assert {name: band["flag"] for name, band in lines.items()} == {
        "desk-01": None,
        "desk-02": None,
        "desk-03": flag,
    }
    cy = agents["cy"]
    assert (cy["calls"], cy["sampled"], cy["expected"]) == (1000, sampled, 100.0)
    assert (cy["low"], cy["high"], cy["one_in"]) == (LOW, HIGH, [10])
    assert cy["share"] == sampled / 1000 and cy["expected_share"] == 0.1
    assert (cy["low_share"], cy["high_share"]) == (LOW / 1000, HIGH / 1000)
    assert (lines["desk-01"]["calls"], lines["desk-01"]["sampled"]) == (1500, 145)
    assert (lines["desk-01"]["low"], lines["desk-01"]["high"]) == band_of(1500, 10)
    assert fairness["totals"]["calls"] == 3000


def test_calls_of_epochs_with_different_one_in_get_a_poisson_binomial_band(
    tmp_path: Path,
) -> None:
    log = Log()
    log.epoch(1, 10, day="2026-11-27")
    log.calls("ann", 400, 41, epoch=1, day="2026-11-27")
    log.calls("bob", 400, 40, epoch=1, day="2026-11-27")
    log.epoch(2, 2)
    log.calls("ann", 400, 198, epoch=2)
    log.calls("bob", 400, 40, epoch=2)
    agents = report(log.write(tmp_path), NOW).to_json()["fairness"]["per_agent"]
    band = scipy_poisson_binomial({0.1: 400, 0.5: 400}, fft=False)
    for agent in agents.values():
        assert (agent["calls"], agent["expected"], agent["one_in"]) == (800, 240.0, [2, 10])
        assert (agent["low"], agent["high"]) == band
    assert (agents["ann"]["sampled"], agents["ann"]["flag"]) == (239, None)
    # bob's 80 of 800 would pass at epoch 1's 1 in 10, but half his calls were 1 in 2
    assert band_of(800, 10)[0] <= 80 <= band_of(800, 10)[1]
    assert (agents["bob"]["sampled"], agents["bob"]["flag"]) == (80, "below")


def test_an_epoch_that_samples_nobody_flags_any_sampled_call(tmp_path: Path) -> None:
    log = Log()
    log.epoch(1, 0)
    log.calls("ann", 50, 0)
    log.calls("bob", 50, 1)
    agents = report(log.write(tmp_path), NOW).to_json()["fairness"]["per_agent"]
    assert [agents["ann"][k] for k in ("low", "high", "expected", "flag")] == [0, 0, 0.0, None]
    assert agents["bob"]["flag"] == "above"


def test_calls_without_an_epoch_are_counted_apart_and_never_in_the_band(tmp_path: Path) -> None:
    log = Log()
    log.calls("ann", 30, 12, epoch=None)  # a log from before epochs: 12 of 30 would be "above"
    log.call("ann", epoch=7, reasons=("sampled",))  # an epoch never declared
    log.epoch(1, 10)
    log.calls("ann", 100, 10)
    fairness = report(log.write(tmp_path), NOW).to_json()["fairness"]
    ann = fairness["per_agent"]["ann"]
    assert (ann["calls"], ann["sampled"], ann["flag"]) == (100, 10, None)
    assert (ann["low"], ann["high"]) == band_of(100, 10)
    assert ann["without_epoch"] == {"calls": 31, "sampled": 13}
    assert fairness["totals"]["without_epoch"] == {"calls": 31, "sampled": 13}
    assert fairness["per_line"]["desk-01"]["without_epoch"] == {"calls": 31, "sampled": 13}


def test_only_settled_calls_that_announced_the_sampling_purpose_count(tmp_path: Path) -> None:
    log = Log()
    log.epoch(1, 10)
    log.call("ann")  # wiped, not kept
    log.call("ann", reasons=("sampled",))
    log.call("ann", reasons=("sampled", "marked"))
    log.call("ann", reasons=("marked",))
    log.call("ann", reasons=("sampled",), why="store_failed")  # picked, then lost to the disk
    log.call("ann", why="lost_in_crash")
    log.call("ann", announced=("escalation",), reasons=("marked",))
    log.add("call_started", call_id="open-1", line="desk-01", agent="ann", epoch=1,
            announced=[PURPOSE])  # fmt: skip
    log.call(None, "desk-09")
    ann = report(log.write(tmp_path), NOW).to_json()["fairness"]["per_agent"]
    assert (ann["ann"]["calls"], ann["ann"]["sampled"]) == (5, 3)
    assert (ann["(none)"]["calls"], ann["(none)"]["sampled"]) == (1, 0)


def test_report_json_keys_for_fairness_and_days(tmp_path: Path) -> None:
    log = Log()
    log.epoch(1, 10, day="2026-11-27")
    log.calls("ann", 3, 1, day="2026-11-27")
    log.calls("bob", 2, 0, day="2026-11-29")
    data = report(log.write(tmp_path), NOW).to_json()
    assert list(data) == [
        *("entries", "first_time", "last_time", "totals", "per_line", "per_agent"),
        *("retention", "deletions", "accesses", "per_day", "fairness", "since", "until"),
    ]
    assert data["per_day"] == {
        "2026-11-27": {"started": 3, "committed": 1, "wiped": 2},
        "2026-11-29": {"started": 2, "committed": 0, "wiped": 2},
    }
    fairness = data["fairness"]
    assert list(fairness) == ["confidence", "totals", "per_line", "per_agent"]
    assert fairness["confidence"] == 0.999
    assert list(fairness["per_agent"]) == ["ann", "bob"]
    assert list(fairness["totals"]) == [
        *("calls", "sampled", "expected", "share", "expected_share", "low", "high"),
        *("low_share", "high_share", "one_in", "flag", "without_epoch"),
    ]
    assert json.loads(json.dumps(data)) == data


def test_an_empty_log_has_empty_fairness_and_no_days(tmp_path: Path) -> None:
    data = report(Log().write(tmp_path), NOW).to_json()
    assert data["per_day"] == {} and data["fairness"]["per_agent"] == {}
    totals = data["fairness"]["totals"]
    assert (totals["calls"], totals["share"], totals["low"], totals["flag"]) == (0, None, 0, None)


def test_the_text_report_flags_the_agent_and_line_outside_their_band(tmp_path: Path) -> None:
    log = Log()
    log.epoch(1, 10)
    log.calls("ann", 1000, 97, "desk-01")
    log.calls("cy", 1000, 250, "desk-03")
    log.calls("dee", 20, 2, "desk-01", epoch=None)
    text = render(report(log.write(tmp_path), NOW))
    section = text.split("\nSampling fairness\n-----------------\n")[1]
    rows = {line.split()[0]: line.split() for line in section.splitlines() if line.strip()}
    assert rows["agent"][1:] == [
        *("calls", "sampled", "expected", "share", "%", "band", "band", "%", "one_in"),
        *("flag", "no", "epoch", "no-epoch", "sampled"),
    ]
    low, high = band_of(1000, 10)
    assert rows["ann"][1:] == ["1000", "97", "100.0", "9.70", f"{low}-{high}",
                               f"{low / 10:.2f}-{high / 10:.2f}", "10", "-", "0", "0"]  # fmt: skip
    assert rows["cy"][8:] == ["ABOVE", "0", "0"]
    assert rows["dee"][1:] == ["0", "0", "0.0", "-", "-", "-", "-", "-", "20", "2"]
    assert rows["desk-03"][8] == "ABOVE" and rows["desk-01"][8] == "-"
    assert "Outside their band: 1 of 3 agents, 1 of 2 lines." in " ".join(section.split())


# --- the HTML page -------------------------------------------------------------------------

HOSTILE_AGENT = '<script>alert("agent")</script>'
HOSTILE_LINE = '"><img src=x onerror=alert(1)>'
HOSTILE_PURPOSE = "</svg><b>$\\frac{1}{2}$ & $x^"
HOSTILE_ACTOR = "<iframe src=https://evil.example/></iframe>"


def floor(state: Path) -> Path:
    """Three days of a small floor: a fair agent, one sampled far too often, hostile names in
    every place a name goes, recordings held, due and deleted (purged and erased)."""
    log = Log()
    for day, epoch in (("2026-11-26", 1), ("2026-11-27", 2), ("2026-11-28", 3)):
        log.epoch(epoch, 10, day=day)
        log.calls("ann", 300, 31, "desk-01", epoch=epoch, day=day)
        log.calls("bob", 100, 60, "desk-02", epoch=epoch, day=day)
        log.calls(HOSTILE_AGENT, 100, 9, HOSTILE_LINE, epoch=epoch, day=day)
    marked = log.call("ann", reasons=("marked",), day="2026-11-28")
    log.add("call_started", call_id="odd", line=HOSTILE_LINE, agent=HOSTILE_AGENT,
            announced=[HOSTILE_PURPOSE], epoch=3)  # fmt: skip
    log.add("call_committed", call_id="odd", line=HOSTILE_LINE, agent=HOSTILE_AGENT,
            reasons=["marked"], purposes=[HOSTILE_PURPOSE], retention={HOSTILE_PURPOSE: None},
            retain_until=None, path="recordings/odd.flac", sha256="0" * 64, seconds=3.0,
            rolled_seconds=0.0, ended=f"{DAY}T10:00:00.000Z")  # fmt: skip
    log.add("recording_held", call_id=marked, actor=HOSTILE_ACTOR, reason="<b>court</b>")
    log.add("recording_accessed", call_id="odd", actor=HOSTILE_ACTOR, reason="</td></table>")
    log.add("recording_deleted", call_id="call-1", path="recordings/call-1.flac",
            why="erased", actor=HOSTILE_ACTOR, reason="<script>x()</script>")  # fmt: skip
    log.add("recording_deleted", call_id="call-2", path="recordings/call-2.flac", why="expired")
    return log.write(state)


class Markup(HTMLParser):
    """Every tag and attribute of a page, as a browser's tokenizer would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(name, value or "") for name, value in attrs]


def markup(page: str) -> Markup:
    parser = Markup()
    parser.feed(page)
    parser.close()
    return parser


CHARTS = ["per-day", "fairness-agent", "fairness-line", "purposes", "deletions"]


def test_the_page_is_self_contained_and_escapes_every_name_from_the_log(tmp_path: Path) -> None:
    page = render_html(report(floor(tmp_path), NOW))
    parsed = markup(page)
    for tag in ("script", "img", "iframe", "link", "object", "embed", "b", "image"):
        assert tag not in parsed.tags
    assert parsed.tags.count("svg") == len(CHARTS)
    ids = [value for name, value in parsed.attributes if name == "id"]
    assert [i.removeprefix("chart-") for i in ids if i.startswith("chart-")] == CHARTS
    assert len(ids) == len(set(ids)), "element ids collide between charts"
    for name, value in parsed.attributes:
        assert name not in ("src", "srcset", "action", "onerror", "onload")
        assert not name.endswith("href") or value.startswith("#"), (name, value)  # a marker
        assert "url(" not in value or re.fullmatch(r"url\(#[\w-]+\)", value.strip()), value
    assert "@import" not in page
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", page)
    for name in (
        HOSTILE_AGENT,
        HOSTILE_LINE,
        HOSTILE_ACTOR,
        "</td></table>",
        "<script>x()</script>",
    ):
        assert html.escape(name) in page
    # matplotlib's SVG text escapes <, > and & only, which is all element content needs
    for name in (HOSTILE_AGENT, HOSTILE_LINE, HOSTILE_PURPOSE):
        assert f">{html.escape(name, quote=False)}</text>" in page


def test_the_page_shows_the_figures(tmp_path: Path) -> None:
    page = render_html(report(floor(tmp_path), NOW))
    sections = [value for name, value in markup(page).attributes if name == "id"]
    for section in ("totals", "per-day", "fairness", "retention", "deletions", "accesses"):
        assert section in sections
    flagged = re.findall(r'<tr class="flagged"><td>([^<]*)</td>', page)
    assert flagged == ["bob", "desk-02"]
    assert "<td>erased</td>" in page and "<td>expired (premature)</td>" in page
    assert ">1 without an end<" in page  # the hostile purpose has no end


def test_the_page_of_an_empty_log_says_there_is_nothing_to_chart(tmp_path: Path) -> None:
    page = render_html(report(Log().write(tmp_path), NOW))
    assert "<svg" not in page
    for empty in ("No calls.", "No agent has a call in a sampling epoch.",
                  "No recordings exist.", "No recording was deleted."):  # fmt: skip
        assert f'<p class="none">{empty}</p>' in page


def test_report_html_writes_the_file_and_says_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = floor(tmp_path)
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    out.write_text("an older report")
    assert main(["audit", "report", "--state-dir", str(state), "--html", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote the report to {out.resolve()}\n"
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]


def test_report_html_into_a_missing_folder_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = floor(tmp_path)
    out = tmp_path / "nowhere" / "report.html"
    assert main(["audit", "report", "--state-dir", str(state), "--html", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"hindsight: cannot write {out}: ") and "Traceback" not in err


def test_a_failed_write_leaves_the_old_page_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = report(floor(tmp_path), NOW)
    out = tmp_path / "report.html"
    out.write_text("the old page")

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("hindsight.audit.html.os.replace", refuse)
    with pytest.raises(ClientError, match=r"cannot write .*No space left"):
        write_html(result, out)
    assert out.read_text() == "the old page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["commit.log", "report.html"]


def test_json_and_html_cannot_be_asked_together(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "report", "--state-dir", str(tmp_path), "--json", "--html", "x.html"])
    assert exit_.value.code == 2


# --- the HTML page in a real browser ------------------------------------------------------

BROWSER_CONSOLE = re.compile(r":CONSOLE|Uncaught|SyntaxError", re.IGNORECASE)
PROBE = """<script>
const boxes = [...document.querySelectorAll("figure.chart svg")].map((svg) => {
  const r = svg.getBoundingClientRect();
  return [r.left + scrollX, r.top + scrollY, r.width, r.height].map(Math.round);
});
document.body.dataset.boxes = JSON.stringify(boxes);
document.body.dataset.height = document.documentElement.scrollHeight;
</script>"""


def browse(page: Path, *flags: str) -> str:
    """Open ``page`` in headless Chromium (no host name resolves); its stdout. Fails on any
    console message: the page has no script, so any is an error."""
    shell = tool("chromium-headless-shell", "chromium-headless-shell")
    done = subprocess.run(
        [
            shell,
            *("--headless", "--disable-gpu", "--no-sandbox", "--no-first-run"),
            f"--user-data-dir={page.parent / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            *("--enable-logging=stderr", "--v=0"),
            *flags,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    console = [line for line in done.stderr.splitlines() if BROWSER_CONSOLE.search(line)]
    assert console == []
    return done.stdout


def chart_boxes(page: Path) -> tuple[list[list[int]], int]:
    """Where the browser laid out each chart (x, y, width, height) and the page's height."""
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", f"{PROBE}</body>"))
    dom = browse(probe, "--window-size=1280,900", "--dump-dom")
    data = {k: html.unescape(v) for k, v in re.findall(r'data-(\w+)="([^"]*)"', dom)}
    return json.loads(data["boxes"]), int(data["height"])


def test_the_page_renders_its_charts_in_a_real_browser(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    write_html(report(floor(tmp_path), NOW), page)
    dom = browse(page, "--dump-dom")
    assert dom.count("<svg") == len(CHARTS) and dom.count('<figure class="chart"') == len(CHARTS)
    assert "<script" not in dom and "<img" not in dom and "<iframe" not in dom
    assert html.escape(HOSTILE_AGENT, quote=False) in dom

    boxes, height = chart_boxes(page)
    assert len(boxes) == len(CHARTS)
    assert all(width > 400 and tall > 100 for _, _, width, tall in boxes), boxes
    shot = tmp_path / "page.png"
    browse(page, f"--window-size=1280,{height}", "--hide-scrollbars",
           "--force-device-scale-factor=1", f"--screenshot={shot}")  # fmt: skip
    pixels = imread(shot)[..., :3]
    assert pixels.shape[0] >= max(y + h for _, y, _, h in boxes)
    for name, (x, y, width, tall) in zip(CHARTS, boxes, strict=True):
        region = pixels[y : y + tall, x : x + width]
        inked = np.any(region < 0.9, axis=-1).mean()
        colours = len(np.unique((region * 255).astype(np.uint8).reshape(-1, 3), axis=0))
        assert inked > 0.02 and colours > 8, f"chart {name} is blank ({inked:.3f}, {colours})"
    x, y, width, tall = boxes[CHARTS.index("fairness-agent")]
    red = np.array([0xC0, 0x39, 0x2B]) / 255  # the flagged agent's dot and name
    region = pixels[y : y + tall, x : x + width]
    assert np.all(np.abs(region - red) < 0.05, axis=-1).sum() > 20
