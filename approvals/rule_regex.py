"""The regex subset of approval rules: patterns PostgreSQL's `~` and Python's re read alike.

Validation (approvals.rules) rejects patterns outside it; the reference evaluator compiles
patterns inside it with `python_regex`.
"""

import re
import string
from functools import lru_cache

# PostgreSQL and Python regexes differ; this subset keeps only what they read alike:
# PostgreSQL's `~` (ARE, an automaton) and Python's re (backtracking) agree on: literals, `.`,
# bracket expressions without POSIX classes, `* + ?` and their lazy forms, groups, `|`, `^`.
# Differences this subset removes or translates:
#   - `.` matches a newline in PostgreSQL: Python gets re.DOTALL.
#   - `$` matches before a final newline in Python: Python gets `\Z` instead.
#   - `\d \w \b {n} (?...)`, possessive `*+`, `[[:alpha:]]`, `[a-c-e]`: rejected.
#   - A quantified group holding a quantifier or `|` (`(a+)+`, `(a|a)*`): rejected, as Python can
#     take exponential time on it.

_PUNCTUATION = frozenset(string.punctuation)
_BRACKET_LITERALS = frozenset(" _.*+?$|()^")


class OutsideSubset(Exception):
    def __init__(self, position: int, reason: str):
        self.position, self.reason = position, reason


def _is_ascii_alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()


def _python_spelling(pattern: str) -> str:
    """Check `pattern` is in the subset and return it as Python must read it (`$` → `\\Z`)."""
    out: list[str] = []
    # Per open group (index 0: the whole pattern): whether it holds a quantifier or `|`.
    groups = [False]
    last = None  # what a quantifier would apply to: "atom", "group", "quantifier", "lazy" or None
    last_group_is_complex = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 == len(pattern) or pattern[i + 1] not in _PUNCTUATION:
                raise OutsideSubset(i, f"'{pattern[i : i + 2]}': a backslash may only escape punctuation")
            out.append(pattern[i : i + 2])
            i += 2
            last = "atom"
            continue
        if char in "*+?":
            if char == "?" and last == "quantifier":
                last = "lazy"
            elif last in ("quantifier", "lazy"):
                raise OutsideSubset(i, f"{char!r} cannot follow another quantifier")
            elif last is None:
                raise OutsideSubset(i, f"{char!r} has nothing to repeat")
            elif last == "group" and last_group_is_complex:
                raise OutsideSubset(i, f"{char!r} repeats a group that holds a quantifier or '|'")
            else:
                groups[-1] = True
                last = "quantifier"
        elif char == "(":
            if pattern.startswith("(?", i):
                raise OutsideSubset(i, "'(?' groups are not allowed")
            groups.append(False)
            last = None
        elif char == ")":
            if len(groups) == 1:
                raise OutsideSubset(i, "')' without '('")
            last_group_is_complex = groups.pop()
            groups[-1] = groups[-1] or last_group_is_complex
            last = "group"
        elif char == "|":
            groups[-1] = True
            last = None
        elif char == "^":
            last = None
        elif char == "$":
            out.append(r"\Z")
            i += 1
            last = None
            continue
        elif char == "[":
            end = _bracket_end(pattern, i)
            out.append(pattern[i:end])
            i = end
            last = "atom"
            continue
        elif char == "." or char.isalnum() or char in " _-":
            last = "atom"
        else:
            raise OutsideSubset(i, f"{char!r} is not allowed; escape punctuation with a backslash")
        out.append(char)
        i += 1
    if len(groups) > 1:
        raise OutsideSubset(len(pattern), "'(' without ')'")
    return "".join(out)


def _bracket_end(pattern: str, start: int) -> int:
    """Check the bracket expression at `start` and return the index after its `]`."""
    i = start + 1
    if pattern.startswith("^", i):
        i += 1
    first = i
    range_start = None  # the previous item, if a lone ASCII letter or digit a range may start at
    while True:
        if i == len(pattern):
            raise OutsideSubset(start, "'[' without ']'")
        char = pattern[i]
        if char == "]":
            if i == first:
                raise OutsideSubset(i, r"empty []; write '\]' for a literal ']'")
            return i + 1
        if char == "\\":
            if i + 1 == len(pattern) or pattern[i + 1] not in _PUNCTUATION:
                raise OutsideSubset(i, f"'{pattern[i : i + 2]}': a backslash may only escape punctuation")
            range_start = None
            i += 2
            continue
        if char == "-":
            if i == first or pattern.startswith("]", i + 1):
                range_start = None
                i += 1
                continue
            end = pattern[i + 1 : i + 2]
            if range_start is None or not _is_ascii_alnum(end):
                raise OutsideSubset(i, "a range in [] joins two ASCII letters or digits, like a-z")
            if range_start > end:
                raise OutsideSubset(i, f"the range {range_start}-{end} is reversed")
            range_start = None
            i += 2
            continue
        if char == "[":
            raise OutsideSubset(i, r"'[' inside [] must be escaped: '\['")
        if char == "|" and pattern.startswith("|", i + 1):
            # Python warns that `||` in a set may mean union one day; one `|` says the same.
            raise OutsideSubset(i, "'||' inside []: write '|' once")
        if char.isalnum() or char in _BRACKET_LITERALS:
            range_start = char if _is_ascii_alnum(char) else None
            i += 1
            continue
        raise OutsideSubset(i, f"{char!r} is not allowed in []; escape punctuation with a backslash")


@lru_cache(maxsize=256)
def python_regex(pattern: str) -> re.Pattern:
    """`pattern`, which is in the subset, compiled to mean in Python what it means in PostgreSQL."""
    return re.compile(_python_spelling(pattern), re.DOTALL)
