"""Audience summary time for 1,000,000 contacts, beside a bare render + measure loop over the same contacts.

Builds a fresh database (SQLite file by default, or a new PostgreSQL database with --server) holding two
lists whose contacts look like a real audience: names, cities, codes, some names with characters that
force UCS-2, missing names, landlines, opted-out numbers, numbers in both lists, two countries. Then:
  1. summary: webapp.services.audience.summarize (the job's body) over the whole audience;
  2. bare loop: CompiledTemplate.render + segments.measure over the same contacts, already in memory,
     with no database, exclusions or counters: the floor the summary is measured against.
Limit, from issue 9: the summary of 1,000,000 contacts takes < 60 s on this machine (--quick scales the
limit to the contacts generated).

    python bench/audience_summary.py [--contacts 1000000] [--quick] [--server postgresql://postgres@127.0.0.1:5432/postgres]
"""

import argparse
import json
import platform
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).parent / "results" / "audience_summary.json"
LIMIT_SECONDS_PER_MILLION = 60.0
TEMPLATE = 'Hi {{ first_name | default("there") }}, {{ city }} store: 20% off with code {{ code }} until Sunday.'
BATCH = 20_000


def contact_rows(team_id: int, list_ids: tuple[int, int], count: int):
    """(team_id, list_id, phone, region, number_type, attributes) tuples; 80% in the first list, 20% in the second,
    a twentieth of the second repeating numbers of the first."""
    rng = random.Random(9)
    first_count = count * 4 // 5
    for i in range(count):
        in_first = i < first_count
        # a twentieth of the second list is also in the first: duplicates
        number = rng.randrange(first_count) if not in_first and rng.random() < 0.05 else i
        if number % 10 == 3:
            phone, region = f"+447700{number:06d}", "GB"
        else:
            phone, region = f"+1415{number:07d}", "US"
        draw = rng.random()
        name = f"Person{number}"
        if draw < 0.01:
            name = f"Zoë {number}"  # ë is not GSM-7: this contact's own data forces UCS-2
        elif draw < 0.04:
            name = ""
        attributes = {"first_name": name, "city": f"City {number % 131}", "code": f"SPRING{number % 997}"}
        number_type = "fixed_line" if rng.random() < 0.02 else "fixed_line_or_mobile"
        yield (team_id, list_ids[0] if in_first else list_ids[1], phone, region, number_type, attributes)


def build(app, count: int) -> int:
    """The team, two lists, the contacts, 1% of numbers opted out and a draft; returns the campaign id."""
    from sqlalchemy import insert

    from webapp.extensions import db
    from webapp.models import Campaign, CampaignList, Contact, ContactList, Suppression, Team

    with app.app_context():
        db.create_all()
        team = Team(name="Bench")
        db.session.add(team)
        db.session.flush()
        lists = [ContactList(team_id=team.id, name="Spring"), ContactList(team_id=team.id, name="Autumn")]
        db.session.add_all(lists)
        db.session.flush()
        list_ids = (lists[0].id, lists[1].id)
        campaign = Campaign(team_id=team.id, name="Bench", body=TEMPLATE,
                            audience=[CampaignList(list_id=list_id, position=i) for i, list_id in enumerate(list_ids)])
        db.session.add(campaign)
        db.session.commit()
        team_id, campaign_id = team.id, campaign.id

        batch, phones_seen = [], set()
        for team_id_, list_id, phone, region, number_type, attributes in contact_rows(team_id, list_ids, count):
            if (list_id, phone) in phones_seen:
                continue
            phones_seen.add((list_id, phone))
            batch.append({"team_id": team_id_, "list_id": list_id, "phone": phone, "region": region,
                          "number_type": number_type, "attributes": attributes})
            if len(batch) == BATCH:
                db.session.execute(insert(Contact), batch)
                db.session.commit()
                batch = []
        if batch:
            db.session.execute(insert(Contact), batch)
        opted_out = sorted({phone for _, phone in phones_seen})[::100]
        db.session.execute(insert(Suppression), [{"team_id": team_id, "phone": phone, "source": "manual"}
                                                 for phone in opted_out])
        db.session.commit()
        return campaign_id


def bare_loop(app, campaign_id: int) -> dict:
    """Render + measure over the same contacts, read into memory first (the read is not timed)."""
    from sqlalchemy import select

    from webapp.extensions import db
    from webapp.models import Campaign, Contact
    from webapp.provider import segments
    from webapp.services.templating import compile_template

    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        contacts = db.session.execute(select(Contact.phone, Contact.attributes)
                                      .where(Contact.list_id.in_(campaign.list_ids))).all()
    template = compile_template(TEMPLATE)
    footer = "Reply STOP to opt out"
    started = time.perf_counter()
    parts = 0
    for phone, attributes in contacts:
        parts += segments.measure(template.render(attributes, phone) + "\n" + footer).parts
    return {"contacts": len(contacts), "seconds": round(time.perf_counter() - started, 3), "parts": parts}


def summary(app, campaign_id: int) -> dict:
    from webapp.extensions import db
    from webapp.models import Campaign
    from webapp.services import audience

    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        started = time.perf_counter()
        result = audience.summarize(campaign)
        seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "result": {key: value for key, value in result.items()
                                                    if key not in ("data_ucs2_sample", "worst_text")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 contacts, the limit scaled to match")
    parser.add_argument("--server", help="a PostgreSQL server URL; a fresh database is created and dropped")
    args = parser.parse_args()
    count = 100_000 if args.quick else args.contacts

    from webapp import create_app

    workdir = Path(tempfile.mkdtemp(prefix="audience-bench-"))
    drop = None
    if args.server:
        from tests.conftest import _fresh_postgres_database

        database_url, drop = _fresh_postgres_database(args.server)
        database = "postgresql"
    else:
        database_url, database = f"sqlite:///{workdir / 'bench.sqlite3'}", "sqlite"
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "INSTANCE_PATH": str(workdir / "instance"),
                      "SECRET_KEY": "bench-" + "-".join(str(i) for i in range(12))})
    try:
        started = time.perf_counter()
        campaign_id = build(app, count)
        build_seconds = round(time.perf_counter() - started, 1)
        summarized = summary(app, campaign_id)
        bare = bare_loop(app, campaign_id)
    finally:
        if drop is not None:
            from webapp.extensions import db

            with app.app_context():
                db.engine.dispose()
            drop()

    limit = round(LIMIT_SECONDS_PER_MILLION * count / 1_000_000, 1)
    audience_read = summarized["result"]["audience"]
    checks = {
        "summary_seconds": {"value": summarized["seconds"], "limit": f"< {limit}", "ok": summarized["seconds"] < limit},
        "contacts_summarized": {"value": audience_read, "limit": f"== {bare['contacts']}",
                                "ok": audience_read == bare["contacts"]},
    }
    report = {
        "benchmark": "audience_summary",
        "mode": "quick" if args.quick else "full",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
        "database": database,
        "contacts": audience_read,
        "build_seconds": build_seconds,
        "summary": summarized,
        "bare_loop": bare,
        "summary_over_bare": round(summarized["seconds"] / bare["seconds"], 2) if bare["seconds"] else None,
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "checks": checks,
        "pass": all(check["ok"] for check in checks.values()),
    }
    print(f"{'figure':<32}{'value':>14}  limit")
    print(f"{'contacts':<32}{audience_read:>14,}")
    print(f"{'summary (s)':<32}{summarized['seconds']:>14.2f}  < {limit}")
    print(f"{'bare render + measure loop (s)':<32}{bare['seconds']:>14.2f}")
    print(f"{'summary / bare loop':<32}{report['summary_over_bare']:>14}")
    print(f"{'recipients':<32}{summarized['result']['recipients']:>14,}")
    print(f"{'excluded':<32}{summarized['result']['excluded_total']:>14,}  {summarized['result']['excluded']}")
    print(f"{'parts histogram':<32}{'':>14}  {summarized['result']['parts_histogram']}")
    print(f"{'peak memory (MB)':<32}{report['peak_mb']:>14}")
    print("PASS" if report["pass"] else "FAIL")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
