"""The README's and docs' measured parts, written from benchmark JSON.

Two kinds: the README's "Which head should I use?" block (between two marker lines, written
from ``benchmarks/results/heads_camvid.json``, and its docs page), and every figure quoted in
the pages of :data:`figures.PAGES` between ``<!-- fig:NAME -->`` markers (``benchmarks/figures.py``
says which file each comes from). Everything outside the markers is left as it is.
``tests/test_readme_tables.py`` fails when a page differs from what this module writes, so the
pages cannot drift from the results.

    python benchmarks/tables.py           # rewrite the README's table and the quoted figures
    python benchmarks/tables.py --check   # exit 1 if a page is not up to date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import figures

REPO = Path(__file__).resolve().parents[1]
HEADS_JSON = REPO / "benchmarks" / "results" / "heads_camvid.json"
README = REPO / "README.md"
START = "<!-- heads-table:start (written by python benchmarks/tables.py; do not edit) -->"
END = "<!-- heads-table:end -->"


def _number(value: float | None, digits: int = 1, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _accuracy(row: dict[str, Any], metric: str) -> str:
    """``mean ± std``; a row short of its seeds shows what it has and says how many."""
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if row["status"] != "done":
        return row["status"] if mean is None else f"{_partial(mean, std)}, {row['status']}"
    if mean is None:
        return "–"
    return f"{mean:.1f} ± {_number(std)}"


def _partial(mean: float, std: float | None) -> str:
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {_number(std)}"


def heads_table(record: dict[str, Any]) -> list[str]:
    """Accuracy and cost per row, with the command that reproduces it."""
    lines = [
        "| row | val mIoU | boundary mIoU | GMAC (decoder) | CPU ms | train act. MiB | reproduce |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    costs = record.get("costs", {})
    for name, row in record["heads"].items():
        cost = costs.get(name, {})
        gmac = "–"
        if cost.get("gmac_1024x2048") is not None:
            gmac = f"{cost['gmac_1024x2048']:.1f} ({cost['decoder_gmac_1024x2048']:.2f})"
        lines.append(
            f"| {name} | {_accuracy(row, 'miou')} | {_accuracy(row, 'boundary_miou')} "
            f"| {gmac} | {_number(cost.get('latency_ms_1024x2048'), 0)} "
            f"| {_number(cost.get('train_activation_mb_768x768_b2'), 0)} "
            f"| `{row['command']}` |"
        )
    return lines


def schemes_table(record: dict[str, Any]) -> list[str]:
    """QGN Table 1 layout: train scheme by eval scheme, mIoU mean ± std over seeds."""
    grid = record.get("qgn_schemes", {})
    if not grid:
        return []
    lines = [
        "| QGN row (train scheme) | eval All | eval GTC | eval PC |",
        "| --- | --- | --- | --- |",
    ]
    for name, entry in grid.items():
        cells = []
        required = record["budget"]["required_seeds"]
        for scheme in ("all", "gtc", "pc"):
            stats = entry[scheme]
            if stats["n"] < required:
                status = f"pending ({stats['n']} of {required} seeds)"
                has = stats["n"] and stats["mean"] is not None
                cells.append(
                    f"{_partial(stats['mean'], stats['std'])}, {status}" if has else status
                )
            else:
                cells.append(f"{stats['mean']:.1f} ± {_number(stats['std'])}")
        lines.append(f"| {name} ({entry['train_scheme']}) | " + " | ".join(cells) + " |")
    return lines


def verdicts_table(record: dict[str, Any]) -> list[str]:
    """One line per paper claim: source, the paper's delta, ours ± spread, the verdict."""
    lines = [
        "| claim | paper (table, rows) | paper Δ | our Δ ± spread | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in record["verdicts"]:
        if row["kind"] == "cost ratio":
            paper = f"ratio {row['paper_delta']:.2f}"
            ours = "–" if row["delta"] is None else f"ratio {row['delta']:.2f}"
        else:
            paper = "not given" if row["paper_delta"] is None else f"{row['paper_delta']:+.2f}"
            ours = "–"
            if row["delta"] is not None:
                spread = "–" if row["spread"] is None else f"{row['spread']:.1f}"
                ours = f"{row['delta']:+.1f} ± {spread}"
        lines.append(f"| {row['claim']} | {row['source']} | {paper} | {ours} | {row['verdict']} |")
    return lines


def short_answer(record: dict[str, Any]) -> list[str]:
    """The answer to "which head should I use?" in a few bullets, by a stated rule.

    Among the rows trained on every seed: the most accurate (val mIoU mean); the rows tied with
    it, whose difference to it is within its spread (``sqrt(std_a^2 + std_b^2)``, the
    verdicts' rule); and the fastest of those on the CPU, where latencies are measured.
    """
    done = {n: r for n, r in record["heads"].items() if r["status"] == "done" and r["miou_mean"]}
    pending = len(record["heads"]) - len(done)
    if not done:
        return [f"- No row is trained on every seed yet ({pending} pending)."]
    best = max(done, key=lambda name: done[name]["miou_mean"])
    top = done[best]

    def tied(row: dict[str, Any]) -> bool:
        spread = (top["miou_std"] or 0.0) ** 2 + (row["miou_std"] or 0.0) ** 2
        return top["miou_mean"] - row["miou_mean"] < spread**0.5

    ties = [name for name, row in done.items() if name != best and tied(row)]
    lines = [f"- Most accurate: **{best}**, {_accuracy(top, 'miou')} % val mIoU."]
    if ties:
        listed = ", ".join(f"{name} ({_accuracy(done[name], 'miou')})" for name in ties)
        lines.append(f"- Tied with it within the seed spread: {listed}.")
    else:
        lines.append("- No other finished row is within the seed spread of it.")
    latency = {
        name: record.get("costs", {}).get(name, {}).get("latency_ms_1024x2048")
        for name in [best, *ties]
    }
    if ties and all(value is not None for value in latency.values()):
        fastest = min(latency, key=lambda name: latency[name])
        lines.append(
            f"- Fastest of these on the CPU at 1024x2048: **{fastest}** "
            f"({latency[fastest]:.0f} ms; {best}: {latency[best]:.0f} ms)."
        )
    elif ties:
        lines.append("- Their CPU latencies are not measured yet (`--cost-only`).")
    if pending:
        total = len(record["heads"])
        lines.append(f"- Left out (not trained on every seed yet): {pending} of {total} rows.")
    return lines


def readme_block(record: dict[str, Any]) -> str:
    """The generated part of the README, marker lines included."""
    budget = record["budget"]
    lines = [
        START,
        "",
        f"Budget: `{budget['recipe']}` (its `data` and `train` sections; "
        f"{', '.join(map(str, budget['max_iters']))} iterations), seeds "
        f"{', '.join(map(str, budget['seeds']))}, "
        f"finished runs recorded in `{budget.get('records_dir') or budget['runs_dir']}`. "
        "Accuracy on "
        "CamVid val (101 images) in %, mean ± sample std over the seeds; boundary mIoU in an "
        "8-pixel band; GMAC and CPU latency at 1024x2048 (batch 1: the first CamVid val image "
        "scaled to cover it, as QGN's data-dependent decoder needs a real scene; threads as "
        "the JSON's command says), training activation memory at 768x768 batch 2. A row not "
        "yet trained on every seed shows the seeds it has and says how many; its verdict waits "
        "for all of them. Runs and costs of a row count only while its config is the one they "
        "were made with (each record keeps a digest of it).",
        "",
        "Short answer (rule: among rows trained on every seed, the most accurate, the rows "
        "whose mean is within the spread of their difference to it, and the fastest of those):",
        "",
        *short_answer(record),
        "",
        *heads_table(record),
        "",
        *schemes_table(record),
        "",
        "Paper claims (spread: " + record["spread"] + "):",
        "",
        *verdicts_table(record),
        "",
        END,
    ]
    return "\n".join(line for i, line in enumerate(lines) if line or lines[i - 1]) + "\n"


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the marker lines (inclusive) replaced by ``block``."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README lacks the marker lines {START!r} ... {END!r}")
    return text[:start] + block + text[end + len(END) :].removeprefix("\n")


def update_readme(record: dict[str, Any], path: Path = README) -> bool:
    """Rewrite the README's generated block from ``record``; ``True`` if it changed."""
    text = path.read_text()
    updated = replace_block(text, readme_block(record))
    if updated != text:
        path.write_text(updated)
    return updated != text


def write_docs_table(record: dict[str, Any], path: Path) -> None:
    """The docs page: the README block with the per-claim notes and the command that wrote it."""
    lines = [
        "# Every head on pretrained EfficientNet-Lite0, CamVid, full budget",
        "",
        "Written by `benchmarks/training/heads_camvid.py` from "
        "`benchmarks/results/heads_camvid.json` "
        f"(`{record['command']}`).",
        "",
        readme_block(record).strip(),
        "",
        "Notes on the claims (how our setting differs from the paper's):",
        "",
    ]
    lines += [f"- {row['claim']}: {row['note']}" for row in record["verdicts"] if row["note"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def written_pages(record: dict[str, Any], readme: Path = README) -> dict[Path, str]:
    """Every page this module writes, as it would write it now (only changed text differs)."""
    pages = {}
    for page in {*figures.PAGES, readme}:
        text = page.read_text()
        if page == readme:
            text = replace_block(text, readme_block(record))
        pages[page] = figures.fill(text)
    return pages


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=HEADS_JSON)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is stale")
    args = parser.parse_args(argv)
    record = json.loads(args.json.read_text())
    stale = []
    for page, text in written_pages(record, args.readme).items():
        if text == page.read_text():
            continue
        stale.append(page)
        if not args.check:
            page.write_text(text)
    if args.check and stale:
        sys.exit(f"stale: {', '.join(map(str, stale))}: run python benchmarks/tables.py")
    print("rewritten: " + ", ".join(map(str, stale)) if stale else "up to date")


if __name__ == "__main__":
    main()
