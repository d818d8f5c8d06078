"""How many right records fall inside a left record's drift-and-window box, per data size.

    python -m project.devservices exec -- python bench/recon_density.py [--sizes 1000000,10000000]

The tolerance pass probes, for every open left record, the right records of its currency within
the default rules' drift (max(1.00, 0.5%)) and date window (±3 days), in the same SQL as the
pass (passes.tolerance_sql), and scores each before the evidence filter. bench/recon_data.py
keeps the date span and the amount range fixed, so a larger set is a denser one: this prints
the box's population (average, median, max) over a sample of 20,000 left records of the data
bench/reconciliation.py generated under var/bench/ (run it first for each size). It reads the
CSVs into scratch tables, not the records table.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django.setup()

from django.db import connection  # noqa: E402

from reconciliation.engine.passes import tolerance_sql  # noqa: E402
from reconciliation.engine.rules import MatchingRules  # noqa: E402

SAMPLE = 20_000
_DEFAULT_RULES = MatchingRules()
_DRIFT = tolerance_sql(_DEFAULT_RULES, "l.amount")
_WINDOW = int(_DEFAULT_RULES.date_window_days)
BOX_POPULATION = f"""
    SELECT count(*), avg(cnt), percentile_cont(0.5) WITHIN GROUP (ORDER BY cnt), max(cnt)
    FROM density_left l CROSS JOIN LATERAL (
        SELECT count(*) AS cnt FROM density_right r
        WHERE r.currency = l.currency
          AND r.amount BETWEEN l.amount - {_DRIFT} AND l.amount + {_DRIFT}
          AND r.booked_on BETWEEN l.booked_on - {_WINDOW} AND l.booked_on + {_WINDOW}
    ) n
"""


def box_population(data_dir: Path) -> tuple:
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 0")  # a 10M-row COPY outlasts the web's timeout
        cursor.execute("DROP TABLE IF EXISTS density_right, density_left")
        cursor.execute(
            "CREATE UNLOGGED TABLE density_right (external_id text, amount numeric, currency text,"
            " booked_on date, reference text, counterparty text, description text)"
        )
        raw = cursor.connection.cursor()
        with (
            raw.copy("COPY density_right FROM STDIN WITH (FORMAT csv, HEADER true)") as copy,
            open(data_dir / "right.csv", "rb") as right,
        ):
            while chunk := right.read(1 << 20):
                copy.write(chunk)
        cursor.execute("CREATE INDEX ON density_right (currency, amount)")
        cursor.execute("CREATE UNLOGGED TABLE density_left (LIKE density_right)")
        with open(data_dir / "left.csv") as left:
            next(left)
            lines = list(left)
        step = max(1, len(lines) // SAMPLE)
        with raw.copy("COPY density_left FROM STDIN WITH (FORMAT csv)") as copy:
            for line in lines[::step]:
                copy.write(line)
        del lines
        cursor.execute("ANALYZE density_right")
        cursor.execute("ANALYZE density_left")
        cursor.execute(BOX_POPULATION)
        result = cursor.fetchone()
        cursor.execute("DROP TABLE density_right, density_left")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    for size in args.sizes.split(","):
        data_dir = ROOT / "var" / "bench" / f"recon-{size}-{args.seed}"
        started = time.perf_counter()
        sampled, average, median, largest = box_population(data_dir)
        print(
            f"{int(size):>11,} left: {sampled:,} sampled; right records in the box: average {average:.1f},"
            f" median {median:.0f}, max {largest} ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
