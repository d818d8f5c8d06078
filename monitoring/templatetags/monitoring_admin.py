"""Formatting for the cockpit's figures: ratios as percentages, durations, capped counts."""

from django import template

register = template.Library()


@register.filter
def pct(value, digits=1):
    if value is None or value == "":
        return "—"
    return f"{float(value) * 100:.{int(digits)}f}%"


@register.filter
def seconds(value):
    """1.2 s, 3 min 4 s, 5 h 6 min, 7 d 8 h."""
    if value is None or value == "":
        return "—"
    value = float(value)
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


@register.filter
def ms(value):
    if value is None:
        return "—"
    value = float(value)
    return f"{value / 1000:.1f} s" if value >= 10_000 else f"{value:.1f} ms"


@register.filter
def count(value):
    """A {count, capped, estimated} figure: '100000+' above the cap, '≈n' for an estimate."""
    if not value:
        return "—"
    text = f"{value['count']}"
    if value.get("capped"):
        text += "+"
    if value.get("estimated"):
        text = "≈" + text
    return text


@register.filter
def index_using(definition: str) -> str:
    """`CREATE INDEX x ON t USING btree (a, b) WHERE c` -> `btree (a, b) WHERE c` (the table and
    name are in their own column; the full text is the cell's title)."""
    _, found, rest = (definition or "").partition(" USING ")
    return rest if found else definition


@register.filter
def squash(text: str) -> str:
    """SQL on one line: runs of whitespace (indentation, newlines) as one space."""
    return " ".join((text or "").split())


_PLAN_DETAILS = ("Index Name", "Index Cond", "Filter", "Hash Cond", "Join Filter", "Sort Key")


def _plan_lines(node: dict, depth: int, lines: list[str]) -> None:
    label = node.get("Node Type", "?")
    if "Relation Name" in node:
        label += f" on {node['Relation Name']}"
    figures = f"cost={node.get('Startup Cost')}..{node.get('Total Cost')} rows={node.get('Plan Rows')}"
    if "Actual Total Time" in node:
        figures += (
            f" | actual {node['Actual Startup Time']}..{node['Actual Total Time']} ms"
            f" rows={node.get('Actual Rows')} loops={node.get('Actual Loops')}"
        )
    indent = "  " * depth
    lines.append(f"{indent}{'-> ' if depth else ''}{label}  ({figures})")
    for key in _PLAN_DETAILS:
        if key in node:
            lines.append(f"{indent}     {key}: {node[key]}")
    for child in node.get("Plans", []):
        _plan_lines(child, depth + 1, lines)


@register.filter
def plan_text(plan) -> str:
    """EXPLAIN's JSON as the indented tree people read (the JSON stays on the page too)."""
    if not isinstance(plan, list) or not plan or "Plan" not in plan[0]:
        return ""
    lines: list[str] = []
    _plan_lines(plan[0]["Plan"], 0, lines)
    for key in ("Planning Time", "Execution Time"):
        if key in plan[0]:
            lines.append(f"{key}: {plan[0][key]} ms")
    return "\n".join(lines)


@register.filter
def is_list(value) -> bool:
    return isinstance(value, list | tuple)
