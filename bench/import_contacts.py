"""Contact import rate and peak memory, beside the same file's plain parse + normalization.

Generates an N-row CSV (default 1,000,000; realistic mix: national and international formats,
duplicates, invalid numbers, spreadsheet floats), then in separate processes, so each has its own
peak RSS:
  1. baseline: csvfiles.iter_records + phones.normalize over every row, nothing stored;
  2. import: webapp.services.imports.run_import (the RQ job's body) into a fresh PostgreSQL database
     built by the migrations.
Limits, from issue 4: import rate >= 0.7 x baseline rate, import peak memory < 250 MB.
`--quick` runs the same checks on 150,000 rows (well under two minutes); the results say which.

    python bench/import_contacts.py [--quick | --rows 1000000] [--server postgresql://postgres@127.0.0.1:5432/postgres]
"""

import argparse
import json
import os
import platform
import random
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "import_contacts.json"
RATE_RATIO_LIMIT = 0.7
PEAK_MB_LIMIT = 250.0
FULL_ROWS, QUICK_ROWS = 1_000_000, 150_000


def generate(path: Path, rows: int) -> None:
    """A file like a CRM export: names, numbers in many formats, some repeats and some garbage."""
    rng = random.Random(42)
    formats = [
        lambda n: f"+1 {n[:3]} {n[3:6]} {n[6:]}",
        lambda n: f"({n[:3]}) {n[3:6]}-{n[6:]}",
        lambda n: f"{n[:3]}.{n[3:6]}.{n[6:]}",
        lambda n: f"1{n}.0",  # spreadsheet float with every digit
        lambda n: f"001{n}",
    ]
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("first_name,last_name,mobile,city,plan\r\n")
        for i in range(rows):
            r = rng.random()
            if r < 0.02:
                phone = "555-1234"  # invalid
            elif r < 0.03:
                phone = "1.41556E+10"  # digits lost
            else:
                area = rng.choice(["415", "212", "646", "310", "617", "312", "202", "305"])
                # about 5% repeats: the subscriber number space is smaller than the row count
                subscriber = f"{rng.randrange(200, 1000):03d}{rng.randrange(0, 10000):04d}"
                phone = rng.choice(formats)(area + subscriber)
            out.write(f"Person{i},Family{i % 977},{phone},City {i % 131},{'gold' if i % 7 else 'free'}\r\n")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_baseline(path: str) -> dict:
    from webapp.services.csvfiles import iter_records, sniff_format
    from webapp.services.phones import Rejection, normalize

    fmt = sniff_format(path)
    start = time.perf_counter()
    rows = accepted = 0
    for _, record in iter_records(path, fmt):
        rows += 1
        try:
            normalize(record[2], "US")
            accepted += 1
        except Rejection:
            pass
    seconds = time.perf_counter() - start
    return {"rows": rows, "accepted": accepted, "seconds": seconds, "rows_per_s": rows / seconds,
            "peak_mb": peak_mb()}


def phase_import(path: str, database_url: str) -> dict:
    from flask_migrate import upgrade

    from webapp import create_app
    from webapp.extensions import db
    from webapp.models import ContactImport, ContactList, ImportStatus, Team
    from webapp.services import imports as importer
    from webapp.services.csvfiles import sniff_format

    instance = tempfile.mkdtemp(prefix="bench-instance-")
    app = create_app({"INSTANCE_PATH": instance, "SECRET_KEY": secrets.token_urlsafe(32),
                      "SQLALCHEMY_DATABASE_URI": database_url,
                      "UPLOAD_FOLDER": str(Path(path).parent)})
    with app.app_context():
        upgrade()
        team = Team(name="Bench")
        db.session.add(team)
        db.session.flush()
        contact_list = ContactList(team_id=team.id, name="Bench list")
        db.session.add(contact_list)
        db.session.flush()
        fmt = sniff_format(path)
        imp = ContactImport(team_id=team.id, list_id=contact_list.id, filename="bench.csv",
                            stored_name=Path(path).name, encoding=fmt.encoding, encoding_label=fmt.encoding_label,
                            delimiter=fmt.delimiter, headers=["first_name", "last_name", "mobile", "city", "plan"],
                            phone_column=2, field_columns=[0, 1, 3, 4], status=ImportStatus.QUEUED)
        db.session.add(imp)
        db.session.commit()
        start = time.perf_counter()
        importer.run_import(imp.id)
        seconds = time.perf_counter() - start
        db.session.expire_all()
        imp = db.session.get(ContactImport, imp.id)
        result = {"rows": imp.rows_done, "accepted": imp.accepted, "duplicates": imp.duplicates,
                  "rejected": imp.rejected, "status": imp.status, "seconds": seconds,
                  "rows_per_s": imp.rows_done / seconds, "peak_mb": peak_mb(), "database": db.engine.dialect.name}
        assert imp.accepted + imp.duplicates + imp.rejected == imp.rows_done, result
        return result


def run_phase(name: str, *args: str) -> dict:
    output = subprocess.run([sys.executable, __file__, "--phase", name, *args], check=True, capture_output=True,
                            text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, help=f"default {FULL_ROWS:,}, or {QUICK_ROWS:,} with --quick")
    parser.add_argument("--quick", action="store_true", help="the same checks on fewer rows, in under two minutes")
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--phase", choices=["baseline", "import"])
    parser.add_argument("args", nargs="*")
    options = parser.parse_args()
    if options.phase == "baseline":
        print(json.dumps(phase_baseline(*options.args)))
        return 0
    if options.phase == "import":
        print(json.dumps(phase_import(*options.args)))
        return 0
    options.rows = options.rows or (QUICK_ROWS if options.quick else FULL_ROWS)

    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as folder:
        path = Path(folder) / "contacts.csv"
        generate(path, options.rows)
        size_mb = path.stat().st_size / 1e6
        baseline = run_phase("baseline", str(path))
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.conftest import _fresh_postgres_database

        database_url, drop = _fresh_postgres_database(options.server)
        try:
            imported = run_phase("import", str(path), database_url)
        finally:
            drop()

    ratio = imported["rows_per_s"] / baseline["rows_per_s"]
    checks = {
        "rate_ratio": {"value": round(ratio, 3), "limit": f">= {RATE_RATIO_LIMIT}", "ok": ratio >= RATE_RATIO_LIMIT},
        "import_peak_mb": {"value": round(imported["peak_mb"], 1), "limit": f"< {PEAK_MB_LIMIT}",
                           "ok": imported["peak_mb"] < PEAK_MB_LIMIT},
    }
    print(f"\nContact import, {options.rows:,} rows ({size_mb:.0f} MB CSV), PostgreSQL\n")
    print(f"{'phase':<34}{'rows/s':>12}{'seconds':>10}{'peak MB':>10}")
    print(f"{'parse + normalize (baseline)':<34}{baseline['rows_per_s']:>12,.0f}{baseline['seconds']:>10.1f}"
          f"{baseline['peak_mb']:>10.1f}")
    print(f"{'import (run_import, COPY)':<34}{imported['rows_per_s']:>12,.0f}{imported['seconds']:>10.1f}"
          f"{imported['peak_mb']:>10.1f}")
    print(f"\n{'check':<20}{'value':>10}  {'limit':<10}result")
    for name, check in checks.items():
        print(f"{name:<20}{check['value']:>10}  {check['limit']:<10}{'PASS' if check['ok'] else 'FAIL'}")
    print(f"\nimported {imported['accepted']:,}, duplicates {imported['duplicates']:,}, "
          f"rejected {imported['rejected']:,} of {imported['rows']:,} rows")

    RESULTS.parent.mkdir(exist_ok=True)
    passed = all(check["ok"] for check in checks.values())
    RESULTS.write_text(json.dumps({
        "benchmark": "import_contacts", "pass": passed, "checks": checks,
        "mode": "quick" if options.quick else "full", "seconds": round(time.monotonic() - began, 1),
        "rows": options.rows, "file_mb": round(size_mb, 1),
        "baseline": baseline, "import": imported,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }, indent=2) + "\n")
    print(f"\nwritten to {RESULTS}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
