"""The reconciliation benchmark's data generator, scorer and Python baseline (no database involved)."""

import csv
import re
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from bench import recon_data
from bench.recon_baseline import baseline_match
from bench.recon_data import (
    CSV_COLUMNS,
    NoiseProfile,
    generate,
    normalize_reference,
    parse_amount_units,
    read_truth,
    score,
)

N_LEFT = 5_000
AMOUNT = re.compile(r"^-?\d+(\.\d{1,4})?$")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return generate(n_left=N_LEFT, seed=7, out_dir=tmp_path_factory.mktemp("recon"))


@pytest.fixture(scope="module")
def records(generated):
    """(left by id, right by id, truth groups as (kind, left ids, right ids))."""

    def load(path):
        with path.open(newline="") as f:
            return {row["external_id"]: row for row in csv.DictReader(f)}

    return load(generated.left_csv), load(generated.right_csv), list(read_truth(generated.truth_csv))


def groups_of(truth, kind):
    return [(left, right) for k, left, right in truth if k == kind]


def days_between(a, b):
    return abs((date.fromisoformat(a["booked_on"]) - date.fromisoformat(b["booked_on"])).days)


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(tmp_path):
    first = generate(n_left=2_000, seed=11, out_dir=tmp_path / "a")
    second = generate(n_left=2_000, seed=11, out_dir=tmp_path / "b")
    other = generate(n_left=2_000, seed=12, out_dir=tmp_path / "c")
    for name in ("left.csv", "right.csv", "truth.csv", "meta.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert first.counts == second.counts
    assert (tmp_path / "a" / "left.csv").read_bytes() != (tmp_path / "c" / "left.csv").read_bytes()
    assert other.n_left == 2_000


def test_files_have_the_agreed_columns_and_formats(generated, records):
    left, right, _ = records
    for path in (generated.left_csv, generated.right_csv):
        assert path.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    assert len(left) == generated.n_left == N_LEFT  # ids unique within a side (dict keys)
    assert len(right) == generated.n_right
    for row in [*left.values(), *right.values()]:
        assert AMOUNT.match(row["amount"]), row
        assert row["currency"] in {"EUR", "USD", "GBP"}
        date.fromisoformat(row["booked_on"])
    currencies = Counter(row["currency"] for row in left.values())
    assert currencies["EUR"] > 0.7 * N_LEFT
    assert currencies["USD"] > 0 and currencies["GBP"] > 0
    assert any(row["amount"].startswith("-") for row in left.values())


def test_every_record_is_in_exactly_one_truth_group(records):
    left, right, truth = records
    left_seen = Counter(i for _, ids, _ in truth for i in ids)
    right_seen = Counter(i for _, _, ids in truth for i in ids)
    assert set(left_seen) == set(left) and set(left_seen.values()) == {1}
    assert set(right_seen) == set(right) and set(right_seen.values()) == {1}


def test_counts_per_kind_follow_the_default_profile(generated, records):
    profile = NoiseProfile()
    _, _, truth = records
    counts = generated.counts
    assert counts["noisy"] == round(N_LEFT * profile.noisy_share)
    assert counts["unmatched_left"] == round(N_LEFT * profile.unmatched_left_share)
    assert counts["unmatched_right"] == round(N_LEFT * profile.unmatched_right_share)
    assert counts["ambiguous"] == round(N_LEFT * profile.ambiguous_share)
    split_left = sum(len(left) for kind, left, _ in truth if kind.startswith("split_"))
    assert split_left == round(N_LEFT * profile.split_share)
    assert counts["split_one_to_many"] > counts["split_many_to_one"] > 0
    assert 0.69 * N_LEFT <= counts["exact"] <= 0.71 * N_LEFT
    assert counts == Counter(kind for kind, _, _ in truth)


def test_exact_pairs_are_equal_after_normalization_but_formatted_differently(records):
    left, right, truth = records
    exact = groups_of(truth, "exact")
    reformatted = 0
    for (lid,), (rid,) in exact:
        a, b = left[lid], right[rid]
        assert normalize_reference(a["reference"]) == normalize_reference(b["reference"]) != ""
        assert parse_amount_units(a["amount"]) == parse_amount_units(b["amount"])
        assert a["currency"] == b["currency"]
        assert days_between(a, b) <= NoiseProfile().exact_max_date_shift_days
        reformatted += a["reference"] != b["reference"]
    assert reformatted > 0.5 * len(exact)


def test_noisy_pairs_differ_in_amount_or_reference_within_the_tolerances(records):
    left, right, truth = records
    profile = NoiseProfile()
    drifted = 0
    for (lid,), (rid,) in groups_of(truth, "noisy"):
        a, b = left[lid], right[rid]
        units_a, units_b = parse_amount_units(a["amount"]), parse_amount_units(b["amount"])
        same_reference = normalize_reference(a["reference"]) == normalize_reference(b["reference"])
        assert units_a != units_b or not same_reference, (a, b)
        assert abs(units_a - units_b) <= max(0.005 * min(abs(units_a), abs(units_b)), 1.00 * recon_data.UNITS)
        assert (units_a < 0) == (units_b < 0)
        assert a["currency"] == b["currency"]
        assert days_between(a, b) <= profile.noisy_max_date_shift_days
        drifted += units_a != units_b
    assert drifted > 0.6 * len(groups_of(truth, "noisy"))


def test_split_groups_sum_exactly_and_share_one_reference(records):
    left, right, truth = records
    for kind in ("split_one_to_many", "split_many_to_one"):
        groups = groups_of(truth, kind)
        assert groups
        for lids, rids in groups:
            many, one = (rids, lids) if kind == "split_one_to_many" else (lids, rids)
            assert len(one) == 1 and 2 <= len(many) <= NoiseProfile().max_split_parts
            rows = [left[i] for i in lids] + [right[i] for i in rids]
            assert sum(parse_amount_units(left[i]["amount"]) for i in lids) == sum(
                parse_amount_units(right[i]["amount"]) for i in rids
            )
            assert len({normalize_reference(row["reference"]) for row in rows}) == 1
            assert len({row["currency"] for row in rows}) == 1
            single = (left if kind == "split_one_to_many" else right)[one[0]]
            parts = [(right if kind == "split_one_to_many" else left)[i] for i in many]
            assert all(days_between(single, part) <= NoiseProfile().split_max_date_shift_days for part in parts)


def test_ambiguous_groups_hold_two_records_identical_but_for_their_id(records):
    left, right, truth = records
    groups = groups_of(truth, "ambiguous")
    assert {(len(lids), len(rids)) for lids, rids in groups} == {(1, 2), (2, 1)}
    for lids, rids in groups:
        twins = [left[i] for i in lids] if len(lids) == 2 else [right[i] for i in rids]
        assert {k: v for k, v in twins[0].items() if k != "external_id"} == {
            k: v for k, v in twins[1].items() if k != "external_id"
        }


def test_references_of_different_groups_never_collide_after_normalization(records):
    left, right, truth = records
    owner: dict[str, int] = {}
    for index, (_, lids, rids) in enumerate(truth):
        refs = {normalize_reference(left[i]["reference"]) for i in lids}
        refs |= {normalize_reference(right[i]["reference"]) for i in rids}
        for ref in refs - {""}:
            assert owner.setdefault(ref, index) == index, ref


def test_unmatched_records_include_decoys_with_a_matched_amount_far_away(records):
    left, right, truth = records
    left_by_amount = {}
    for row in left.values():
        left_by_amount.setdefault((row["currency"], parse_amount_units(row["amount"])), []).append(row)
    decoys = 0
    for _, (rid,) in groups_of(truth, "unmatched_right"):
        row = right[rid]
        twins = left_by_amount.get((row["currency"], parse_amount_units(row["amount"])), [])
        # never a partner inside any matching window (small amounts may recur by chance further away)
        assert all(days_between(row, twin) > NoiseProfile().noisy_max_date_shift_days for twin in twins)
        decoys += any(days_between(row, twin) >= NoiseProfile().decoy_min_gap_days for twin in twins)
    assert decoys > 0.2 * len(groups_of(truth, "unmatched_right"))


def test_references_carry_a_luhn_check_digit_that_typos_break(records):
    left, right, truth = records
    for lids, _ in groups_of(truth, "exact"):
        _, year, number = left[lids[0]]["reference"].split("-")
        assert recon_data._luhn_digit(year + number[:-1]) == number[-1]
    for (lid,), (rid,) in groups_of(truth, "noisy"):
        typo = normalize_reference(right[rid]["reference"])
        original = normalize_reference(left[lid]["reference"])
        if typo and typo != original and not typo.startswith("REF"):
            digits = typo.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
            looks_valid = typo[: -len(digits)] in recon_data._REF_PREFIXES and len(digits) == 11
            assert not (looks_valid and recon_data._luhn_digit(digits[:-1]) == digits[-1]), (original, typo)


def test_a_profile_that_cannot_fit_is_refused(tmp_path):
    with pytest.raises(ValueError, match="shares"):
        NoiseProfile(noisy_share=0.6, unmatched_left_share=0.5)
    with pytest.raises(ValueError, match="n_left"):
        generate(n_left=0, out_dir=tmp_path)


def test_reuse_keeps_a_set_made_with_the_same_arguments(tmp_path):
    first = generate(n_left=300, seed=3, out_dir=tmp_path)
    written = first.left_csv.stat().st_mtime_ns
    again = generate(n_left=300, seed=3, out_dir=tmp_path, reuse=True)
    assert again.left_csv.stat().st_mtime_ns == written and again.counts == first.counts
    regenerated = generate(n_left=300, seed=4, out_dir=tmp_path, reuse=True)
    assert regenerated.seed == 4 and regenerated.left_csv.read_bytes() != b""


# ---------------------------------------------------------------- scorer


def truth_as_prediction(truth):
    return [(frozenset(lids), frozenset(rids)) for kind, lids, rids in truth if kind in recon_data.REQUIRED_KINDS]


def test_truth_predicted_scores_one_and_one(generated, records):
    _, _, truth = records
    result = score(generated.truth_csv, truth_as_prediction(truth))
    assert (result.precision, result.recall, result.fp, result.fn) == (1.0, 1.0, 0, 0)
    assert result.tp == result.required == sum(1 for kind, _, _ in truth if kind in recon_data.REQUIRED_KINDS)


def test_missing_and_wrong_matches_lower_recall_and_precision(generated, records):
    _, _, truth = records
    predicted = truth_as_prediction(truth)
    required = len(predicted)
    exact = [(lids, rids) for kind, lids, rids in truth if kind == "exact"]
    (l1,), (r1,) = exact[0]
    (l2,), (r2,) = exact[1]
    swapped = {(frozenset({l1}), frozenset({r1})), (frozenset({l2}), frozenset({r2}))}
    corrupted = [p for p in predicted[10:] if p not in swapped]  # 10 groups missed...
    corrupted += [(frozenset({l1}), frozenset({r2})), (frozenset({l2}), frozenset({r1}))]  # ...2 partners swapped
    result = score(generated.truth_csv, corrupted)
    missed = 10 + sum(p in swapped for p in predicted[10:])
    assert (result.fn, result.fp) == (missed, 2)
    assert result.tp == required - missed
    assert result.recall == pytest.approx((required - missed) / required)
    assert result.precision == pytest.approx(result.tp / (result.tp + 2))
    assert set(result.false_positives) == {(l1, r2), (l2, r1)}


def test_a_split_group_matched_in_part_is_a_false_positive(generated, records):
    _, _, truth = records
    (lid,), rids = groups_of(truth, "split_one_to_many")[0]
    result = score(generated.truth_csv, [(frozenset({lid}), frozenset(rids[:1]))])
    assert (result.tp, result.fp) == (0, 1)


def test_an_ambiguous_option_is_neutral_but_both_at_once_are_wrong(generated, records):
    _, _, truth = records
    (lid,), (r1, r2) = next(g for g in groups_of(truth, "ambiguous") if len(g[0]) == 1)
    one_option = score(generated.truth_csv, [(frozenset({lid}), frozenset({r2}))])
    assert (one_option.tp, one_option.fp, one_option.neutral, one_option.precision) == (0, 0, 1, 1.0)
    both = score(generated.truth_csv, [(frozenset({lid}), frozenset({r1, r2}))])
    assert (both.fp, both.neutral) == (1, 0)


def test_duplicate_predictions_count_once_and_within_left_limits_recall(generated, records):
    _, _, truth = records
    (lid,), (rid,) = groups_of(truth, "exact")[0]
    pair = (frozenset({lid}), frozenset({rid}))
    assert score(generated.truth_csv, [pair, pair]).tp == 1
    sampled = score(generated.truth_csv, [pair], within_left=[lid])
    assert (sampled.required, sampled.recall, sampled.precision) == (1, 1.0, 1.0)


# ---------------------------------------------------------------- baseline


def test_the_python_baseline_recovers_most_pairs_without_false_matches(generated, records):
    _, _, truth = records
    result = baseline_match(generated.left_csv, generated.right_csv, sample_left=N_LEFT)
    assert result.sample_size == N_LEFT == result.n_left
    assert result.extrapolated_seconds_full == pytest.approx(result.load_seconds + result.seconds_measured)
    overall = score(generated.truth_csv, result.pairs)
    assert overall.precision >= 0.99
    assert overall.recall >= 0.95
    exact = {recon_data.group_key(lids, rids) for kind, lids, rids in truth if kind == "exact"}
    found = {recon_data.group_key(lids, rids) for lids, rids in result.pairs}
    assert len(exact & found) >= 0.99 * len(exact)


def test_the_baseline_extrapolates_a_sample_to_every_left_record(generated):
    result = baseline_match(generated.left_csv, generated.right_csv, sample_left=500)
    assert result.sample_size == 500 and len(result.sample_left_ids) == 500
    per_left = result.seconds_measured / 500
    assert result.extrapolated_seconds_full == pytest.approx(result.load_seconds + per_left * N_LEFT)
    cpu_per_left = result.cpu_seconds_measured / 500
    assert result.extrapolated_cpu_seconds_full == pytest.approx(result.load_cpu_seconds + cpu_per_left * N_LEFT)
    assert all(set(lids) & set(result.sample_left_ids) for lids, _ in result.pairs)


def test_the_command_line_writes_a_set(tmp_path, capsys):
    assert recon_data.main(["--left", "200", "--seed", "1", "--out", str(tmp_path)]) == 0
    assert "200 left" in capsys.readouterr().out
    assert Path(tmp_path / "truth.csv").exists()


def test_traps_of_issue_13_are_in_the_set(generated, records):
    left, right, truth = records
    profile = NoiseProfile()
    padded = [
        (lid, rid)
        for (lid,), (rid,) in groups_of(truth, "exact")
        if left[lid]["reference"].split("-")[1].startswith("000")
    ]
    assert len(padded) == round(N_LEFT * profile.padded_reference_share)
    for lid, rid in padded:  # equal once the zero padding after the letters is dropped
        assert normalize_reference(left[lid]["reference"]) == normalize_reference(right[rid]["reference"])
    twins = groups_of(truth, "currency_twin")
    assert len(twins) == round(N_LEFT * profile.currency_twin_share)
    for (lid,), (rid,) in twins:
        a, b = left[lid], right[rid]
        assert normalize_reference(a["reference"]) == normalize_reference(b["reference"])
        assert parse_amount_units(a["amount"]) == parse_amount_units(b["amount"]) and a["currency"] != b["currency"]
    strangers = groups_of(truth, "near_stranger")
    assert len(strangers) == round(N_LEFT * profile.near_stranger_share)
    for (lid,), (rid,) in strangers:
        a, b = left[lid], right[rid]
        units = parse_amount_units(a["amount"])
        assert 0 < abs(parse_amount_units(b["amount"]) - units) <= abs(units) * 0.005
        assert days_between(a, b) <= 3 and a["currency"] == b["currency"]
        assert normalize_reference(a["reference"]) != normalize_reference(b["reference"])
