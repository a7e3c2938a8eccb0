"""How the report prints a figure: a percentage with two decimals, its 95 % interval beside it as
`figure [low, high]` (docs/intervals.md) and its counts as `k/n`; one place for every table. And how it folds
detail (`details`) under a table."""

from __future__ import annotations

from collections.abc import Mapping


def pct(value: float | None) -> str:
    """A fraction as a percentage with two decimals; `n/a` for None (not applicable)."""
    return "n/a" if value is None else f"{100 * value:.2f}"


def with_interval(value: float | None, low: float | None, high: float | None) -> str:
    """`figure [low, high]` in percentages; the figure alone where it has no interval."""
    if value is None or low is None or high is None:
        return pct(value)
    return f"{pct(value)} [{pct(low)}, {pct(high)}]"


def figure(figures: Mapping, key: str) -> str:
    """A metric of `figures` with its interval when the metrics hold one (`<key>_low`, `<key>_high`)."""
    return with_interval(_number(figures.get(key)), _number(figures.get(f"{key}_low")),
                         _number(figures.get(f"{key}_high")))


def counted(figures: Mapping, key: str, right: str, total: str) -> str:
    """A class accuracy with its counts `k/n` (`right` correct of `total`) when the metrics hold them."""
    k, n = _number(figures.get(right)), _number(figures.get(total))
    text = pct(_number(figures.get(key)))
    return text if k is None or n is None or n == 0 else f"{text} ({int(k)}/{int(n)})"


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def details(summary: str, body: list[str]) -> list[str]:
    """`body` folded under `summary`: an HTML details element, inside which Markdown renderers draw the table
    (the blank lines around it are what lets them)."""
    return [f"<details><summary>{summary}</summary>", "", *body, "</details>", ""]
