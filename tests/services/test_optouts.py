"""Opt-outs: keywords, inbound STOP messages parsed tolerantly, and the job that reads files of numbers."""

import io
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage

from tests.factories import make_team, make_user
from webapp.extensions import db
from webapp.models import (
    ImportStatus,
    InboundMessage,
    OptOutImport,
    Role,
    Suppression,
    SuppressionSource,
    Team,
    utcnow,
)
from webapp.services import optouts
from webapp.services.optouts import is_suppressed, keyword_action


@pytest.fixture
def team(app, auth):
    with app.app_context():
        team = make_team("Acme")
        make_user(team, Role.EDITOR, "ed@example.com")
        ids = team.id, team.inbound_token
    auth.login("ed@example.com")
    return ids


def _phones(app, team_id):
    with app.app_context():
        return set(db.session.scalars(select(Suppression.phone).where(Suppression.team_id == team_id)))


@pytest.mark.parametrize(
    ("text", "action"),
    [("STOP", "opt_out"), ("stop", "opt_out"), ("  Stop.", "opt_out"), ("STOPALL", "opt_out"),
     ("unsubscribe me", "opt_out"), ("CANCEL", "opt_out"), ("end", "opt_out"), ("QUIT!", "opt_out"),
     ("START", "opt_in"), ("unstop", "opt_in"), ("Stopping by later", "none"), ("", "none"), (None, "none")],
)
def test_keywords(text, action):
    """The first word decides, ignoring case and punctuation."""
    assert keyword_action(text) == action


@pytest.mark.parametrize(
    "post",
    [
        lambda c, url: c.post(url, data={"from": "+14155552671", "text": "STOP"}),
        lambda c, url: c.post(url, json={"Sender": "14155552671", "Message": "Stop please"}),
        lambda c, url: c.get(url + "?MSISDN=%2B14155552671&TEXT=unsubscribe"),
    ],
    ids=["form", "json", "query"],
)
def test_inbound_stop_opts_out(app, client, team, post):
    """An inbound STOP in any body style adds the sender; the raw message is kept."""
    team_id, token = team
    assert post(client, f"/callbacks/inbound/{team_id}/{token}").status_code == 200
    assert _phones(app, team_id) == {"+14155552671"}
    with app.app_context():
        [message] = db.session.scalars(select(InboundMessage)).all()
        assert message.action == "opt_out" and message.sender


def test_inbound_start_opts_back_in(app, client, team):
    """START removes the number again; an ordinary reply changes nothing."""
    team_id, token = team
    url = f"/callbacks/inbound/{team_id}/{token}"
    client.post(url, data={"from": "+14155552671", "text": "STOP"})
    client.post(url, data={"from": "+14155552671", "text": "thanks!"})
    assert _phones(app, team_id) == {"+14155552671"}
    client.post(url, data={"from": "+14155552671", "text": "START"})
    assert _phones(app, team_id) == set()
    with app.app_context():
        assert not is_suppressed(team_id, "+14155552671")
        actions = [m.action for m in db.session.scalars(select(InboundMessage).order_by(InboundMessage.id))]
    assert actions == ["opt_out", "none", "opt_in"]


def test_inbound_needs_the_team_token(app, client, team):
    """A forged inbound message is refused and changes nothing."""
    team_id, _ = team
    forged = client.post(f"/callbacks/inbound/{team_id}/guess", data={"from": "+14155552671", "text": "STOP"})
    assert forged.status_code == 404
    assert _phones(app, team_id) == set()


def test_opt_out_is_per_team(app, client, team):
    """One team's opt-outs don't suppress the number for another team."""
    team_id, token = team
    client.post(f"/callbacks/inbound/{team_id}/{token}", data={"from": "+14155552671", "text": "STOP"})
    with app.app_context():
        other = make_team("Other")
        assert is_suppressed(team_id, "+14155552671")
        assert not is_suppressed(other.id, "+14155552671")
        assert db.session.get(Team, team_id).name == "Acme"


def test_start_keeps_opt_outs_recorded_by_hand(app, client, team):
    """START by text message never lifts an opt-out that a person recorded by hand."""
    team_id, token = team
    client.post("/opt-outs/", data={"phone": "+14155552671", "note": "asked by phone"})
    client.post(f"/callbacks/inbound/{team_id}/{token}", data={"from": "+14155552671", "text": "START"})
    assert _phones(app, team_id) == {"+14155552671"}


def test_the_notify_token_does_not_open_the_inbound_webhook(app, client, team):
    """The notify URL travels with every message, so its token is refused for inbound messages."""
    team_id, _ = team
    with app.app_context():
        notify_token = db.session.get(Team, team_id).callback_token
    stop = {"from": "+14155552671", "text": "STOP"}
    response = client.post(f"/callbacks/inbound/{team_id}/{notify_token}", data=stop)
    assert response.status_code == 404


def test_repeated_stop_is_harmless(app, client, team):
    """The provider retrying a STOP changes nothing after the first one."""
    team_id, token = team
    for _ in range(3):
        assert client.post(f"/callbacks/inbound/{team_id}/{token}",
                           data={"from": "+14155552671", "text": "STOP"}).status_code == 200
    assert _phones(app, team_id) == {"+14155552671"}


# Files of opted-out numbers, read by a job ------------------------------------------------------


def _store(app, team_id: int, lines: list[str]) -> int:
    data = ("\n".join(lines) + "\n").encode()
    optout_import = optouts.store_optout_file(FileStorage(io.BytesIO(data), "stop.csv"), team_id, None, "US")
    return optout_import.id


def test_a_killed_run_is_carried_on_from_its_last_batch_with_exact_counts(app, monkeypatch):
    """A worker dying mid-file leaves its batches; the next run reads on from there, counting each row once."""
    with app.app_context():
        team = make_team("Acme")
        numbers = [f"+1415{200 + i // 10000:03d}{i % 10000:04d}" for i in range(12_000)]
        import_id = _store(app, team.id, ["phone", *numbers, "nope", numbers[0]])
        path = optouts.upload_path(db.session.get(OptOutImport, import_id))
        real_row = optouts._OptOutReader._row

        def dies_at_row_7000(self, line, raw):
            if self.counts["rows_done"] == 7000:
                raise KeyboardInterrupt  # like SIGKILL: no except clause runs, no status is written
            real_row(self, line, raw)

        monkeypatch.setattr(optouts._OptOutReader, "_row", dies_at_row_7000)
        with pytest.raises(KeyboardInterrupt):
            optouts.run_optout_import(import_id)
        db.session.rollback()
        half = db.session.get(OptOutImport, import_id)
        assert (half.status, half.rows_done, half.added) == (ImportStatus.RUNNING, 5000, 5000)
        assert path.exists()

        monkeypatch.setattr(optouts._OptOutReader, "_row", real_row)
        optouts.run_optout_import(import_id)
        done = db.session.get(OptOutImport, import_id)
        db.session.refresh(done)
        assert done.status == ImportStatus.DONE
        assert (done.added, done.already, done.rejected, done.rows_done) == (12_000, 1, 1, 12_002)
        assert db.session.scalar(select(func.count(Suppression.id))) == 12_000
        assert not path.exists()


def test_an_import_whose_heartbeat_stopped_is_marked_failed(app):
    """A running import silent for over a minute had its worker killed: failed, with its file deleted."""
    with app.app_context():
        team = make_team("Acme")
        stalled_id = _store(app, team.id, ["phone", "+14155552671"])
        alive_id = _store(app, team.id, ["phone", "+14155552672"])
        now = utcnow()
        for import_id, beat in ((stalled_id, now - timedelta(minutes=2)), (alive_id, now)):
            row = db.session.get(OptOutImport, import_id)
            row.status, row.heartbeat_at = ImportStatus.RUNNING, beat
        db.session.commit()
        stalled_path = optouts.upload_path(db.session.get(OptOutImport, stalled_id))

        assert optouts.fail_stalled_imports(now) == 1

        stalled, alive = db.session.get(OptOutImport, stalled_id), db.session.get(OptOutImport, alive_id)
        assert stalled.status == ImportStatus.FAILED and "worker stopped" in stalled.error
        assert alive.status == ImportStatus.RUNNING
        assert not stalled_path.exists() and optouts.upload_path(alive).exists()


def test_a_number_added_between_check_and_insert_is_counted_once(app, monkeypatch):
    """A STOP text landing between a batch's check and its insert is kept as it is and counted as already."""
    with app.app_context():
        team = make_team("Acme")
        import_id = _store(app, team.id, ["phone", "+14155552671", "+14155552672"])
        db.session.add(Suppression(team_id=team.id, phone="+14155552672", source=SuppressionSource.INBOUND))
        db.session.commit()
        monkeypatch.setattr(optouts._OptOutReader, "_on_the_list", lambda self, phones: set())  # checked too early

        optouts.run_optout_import(import_id)

        done = db.session.get(OptOutImport, import_id)
        db.session.refresh(done)
        assert (done.status, done.added, done.already) == (ImportStatus.DONE, 1, 1)
        sources = dict(db.session.execute(select(Suppression.phone, Suppression.source)).all())
        assert sources == {"+14155552671": SuppressionSource.CSV, "+14155552672": SuppressionSource.INBOUND}


def test_cancelling_a_running_import_keeps_committed_batches_and_adds_nothing_after(app, monkeypatch):
    """Stop mid-file: the batch being read is dropped, earlier batches stay counted, the file goes at once."""
    with app.app_context():
        team = make_team("Acme")
        numbers = [f"+1415{200 + i // 10000:03d}{i % 10000:04d}" for i in range(12_000)]
        import_id = _store(app, team.id, ["phone", *numbers])
        path = optouts.upload_path(db.session.get(OptOutImport, import_id))
        real_row = optouts._OptOutReader._row

        def cancelled_at_row_6000(self, line, raw):
            if self.counts["rows_done"] == 6000:
                assert optouts.cancel_optout_import(db.session.get(OptOutImport, import_id))
                assert not path.exists()
            real_row(self, line, raw)

        monkeypatch.setattr(optouts._OptOutReader, "_row", cancelled_at_row_6000)
        optouts.run_optout_import(import_id)

        imp = db.session.get(OptOutImport, import_id)
        db.session.refresh(imp)
        assert (imp.status, imp.rows_done, imp.added) == (ImportStatus.CANCELLED, 5000, 5000)
        assert db.session.scalar(select(func.count(Suppression.id))) == 5000
