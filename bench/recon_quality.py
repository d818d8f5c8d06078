"""What the matcher's confidence is worth: calibration of proposed matches against the truth.

A confidence means something when the share of correct matches rises with it, and a reviewer
can read it as "about this many of these are right". `calibration` buckets every proposed match
(auto and suggested) by confidence decile and counts, per bucket, the matches that equal a
truth group (correct), that pick one of two equally good options (neutral: an ambiguous group of
bench/recon_data.py) and the rest (wrong).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.recon_data import REQUIRED_KINDS, group_key, read_truth


@dataclass
class Bucket:
    low: float
    high: float
    matches: int = 0
    correct: int = 0
    neutral: int = 0

    @property
    def wrong(self) -> int:
        return self.matches - self.correct - self.neutral

    @property
    def share_correct(self) -> float | None:
        """Correct among the matches that are either correct or wrong (neutral ones left out)."""
        decided = self.matches - self.neutral
        return round(self.correct / decided, 4) if decided else None

    def as_dict(self) -> dict:
        return {
            "confidence": f"{self.low:.1f}-{self.high:.1f}",
            "matches": self.matches,
            "correct": self.correct,
            "neutral": self.neutral,
            "wrong": self.wrong,
            "share_correct": self.share_correct,
        }


def calibration(truth_csv: Path, scored: Iterable[tuple[Iterable[str], Iterable[str], float]]) -> list[Bucket]:
    """Buckets [0.0, 0.1), ..., [0.9, 1.0] of (left ids, right ids, confidence) matches."""
    required, neutral = set(), set()
    for kind, left, right in read_truth(truth_csv):
        if kind in REQUIRED_KINDS:
            required.add(group_key(left, right))
        elif kind == "ambiguous":
            neutral.update(f"{lid}|{rid}" for lid in left for rid in right)
    buckets = [Bucket(low=i / 10, high=(i + 1) / 10) for i in range(10)]
    for left, right, confidence in scored:
        bucket = buckets[min(int(float(confidence) * 10), 9)]
        key = group_key(left, right)
        bucket.matches += 1
        bucket.correct += key in required
        bucket.neutral += key not in required and key in neutral
    return buckets


def calibration_lines(buckets: list[Bucket]) -> list[str]:
    """The non-empty buckets as printable lines."""
    lines = [f"  {'confidence':<12} {'matches':>9} {'correct':>9} {'neutral':>8} {'wrong':>7}  share correct"]
    for bucket in buckets:
        if bucket.matches:
            share = "-" if bucket.share_correct is None else f"{bucket.share_correct:.4f}"
            lines.append(
                f"  {bucket.low:.1f}-{bucket.high:.1f}{'':<5} {bucket.matches:>9,} {bucket.correct:>9,} "
                f"{bucket.neutral:>8,} {bucket.wrong:>7,}  {share}"
            )
    return lines
