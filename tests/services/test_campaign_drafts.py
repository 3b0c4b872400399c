"""Campaign drafts, test sends, and the end-to-end proof that the estimate equals what the sandbox bills."""

import struct
import zlib
from decimal import Decimal

import pytest
import requests

from tests.factories import (
    make_campaign,
    make_contact,
    make_list,
    make_sender,
    make_suppression,
    make_team,
    make_template,
)
from webapp.encryption import encrypt
from webapp.extensions import db
from webapp.models import MessageKind, MessageStatus
from webapp.provider import multitel
from webapp.provider.segments import Encoding
from webapp.services import audience, campaign_states, campaigns
from webapp.services.teams import notify_url, team_credentials

FOOTER = "\nReply STOP to opt out"  # 22 characters after the rendered text


def png_bytes(size: int = 0) -> bytes:
    """A real 1×1 PNG, padded with an ancillary chunk to about `size` bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    padding = chunk(b"tEXt", b"c\x00" + b"x" * max(0, size - 80)) if size else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)) + padding
            + chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00")) + chunk(b"IEND", b""))


@pytest.fixture
def team(app):
    with app.app_context():
        team = make_team("Acme")
        team.api_username = "sandbox"
        team.api_password_encrypted = encrypt("sandbox")
        team.test_numbers = ["+14155550901", "+14155550902"]
        db.session.commit()
        yield team


def test_a_draft_copies_the_template_and_launch_freezes_the_text(team):
    """Editing the template never changes the draft; after launch, editing the draft's team footer changes nothing."""
    template = make_template(team, body="Hi {{ first_name }}")
    draft = campaigns.create_draft(team.id, None, name=" Spring  sale ", list_ids=[make_list(team).id],
                                   template_id=template.id, sender_number_id=None)
    assert (draft.name, draft.body) == ("Spring sale", "Hi {{ first_name }}")
    template.body = "Changed"
    db.session.commit()
    assert draft.body == "Hi {{ first_name }}"

    draft.sender_number_id = make_sender(team).id
    db.session.commit()
    campaign_states.launch(draft.id, None)
    team.optout_footer = "Text END to stop"
    draft.body = "Edited after launch"
    db.session.commit()
    db.session.refresh(draft)
    assert campaigns.message_body(draft) == ("Hi {{ first_name }}", "Reply STOP to opt out")
    assert draft.frozen_text == "Hi {{ first_name }}" and draft.launched_at is not None


def test_lists_keep_their_order_and_belong_to_the_team(team):
    """The audience is ordered as chosen (repeats dropped); another team's list is refused."""
    first, second, other = make_list(team), make_list(team), make_list(make_team("Other"))
    draft = campaigns.create_draft(team.id, None, name="x", list_ids=[second.id, first.id, second.id],
                                   template_id=None, sender_number_id=None)
    assert draft.list_ids == [second.id, first.id]
    with pytest.raises(campaigns.DraftProblem, match="list doesn't exist"):
        campaigns.update_draft(draft, name="x", list_ids=[other.id], body="", sender_number_id=None,
                               include_footer=True)


def test_a_refused_message_is_not_saved(team):
    """A draft body with a {% %} block is refused with its location and the old body kept."""
    draft = make_campaign(team, body="Old")
    with pytest.raises(campaigns.DraftProblem, match="Line 1, column 4"):
        campaigns.update_draft(draft, name="x", list_ids=[], body="Hi {% if x %}", sender_number_id=None,
                               include_footer=False)
    db.session.rollback()
    assert draft.body == "Old" and draft.include_footer is True


def test_images_are_checked_by_content_and_size(team, tmp_path):
    """A PNG is stored under a random name; a GIF renamed .png and an oversized image are refused."""
    draft = make_campaign(team)
    campaigns.store_image(draft, png_bytes(), "photo.png", str(tmp_path), 600 * 1024)
    assert draft.is_mms and draft.image_mime == "image/png" and draft.image_name != "photo.png"
    stored = campaigns.image_path(draft, str(tmp_path))
    assert stored.read_bytes() == png_bytes()
    with pytest.raises(campaigns.DraftProblem, match="JPEG or PNG"):
        campaigns.store_image(draft, b"GIF89a" + b"\x00" * 20, "cat.png", str(tmp_path), 600 * 1024)
    with pytest.raises(campaigns.DraftProblem, match="limit is 600 KB"):
        campaigns.store_image(draft, png_bytes(601 * 1024), "big.png", str(tmp_path), 600 * 1024)
    campaigns.store_image(draft, b"\xff\xd8\xff\xe0" + b"\x00" * 100, "photo.jpg", str(tmp_path), 600 * 1024)
    assert draft.image_mime == "image/jpeg" and not stored.exists()  # the old file is gone
    campaigns.remove_image(draft, str(tmp_path))
    assert not draft.is_mms


def test_a_test_send_goes_to_every_test_number_as_stored_messages(app, team, sandbox):
    """Each test number gets the text rendered for the chosen contact; each is a Message with its outcome."""
    contacts = make_list(team)
    ana = make_contact(contacts, "+14155550001", first_name="Ana")
    draft = make_campaign(team, [contacts], body="Hi {{ first_name }}, it’s on", sender=make_sender(team))
    sent = campaigns.send_test(draft, campaigns.sample_for(draft, ana.id), sandbox.url, app.config["UPLOAD_FOLDER"])

    assert [m.phone for m in sent] == ["+14155550901", "+14155550902"]
    for message in sent:
        assert message.kind is MessageKind.TEST and message.status is MessageStatus.ACCEPTED
        assert message.text == "Hi Ana, it’s on" + FOOTER and message.encoding is Encoding.UCS2
        assert message.unique_id and (message.billed_parts, message.billed_cost) == (1, Decimal("0.015"))
    recorded = requests.get(f"{sandbox.url}/_sandbox/sends", timeout=5).json()
    assert [entry["reference"] for entry in recorded] == [m.reference for m in sent]
    assert all(entry["notifyurl"] == notify_url(team) for entry in recorded)


def test_typed_sample_values_and_a_refusal_are_shown(app, team, sandbox):
    """Typed values render the test; a number the provider refuses is failed with its reason, not retried."""
    requests.post(f"{sandbox.url}/_sandbox/config", json={"refuse_prefix": "+14155550902"}, timeout=5)
    draft = make_campaign(team, [], body="Hi {{ first_name | default(\"you\") }} {{ phone }}", sender=make_sender(team))
    sample = campaigns.sample_for(draft, None, "first_name: Typed\nignored line")
    sent = campaigns.send_test(draft, sample, sandbox.url, app.config["UPLOAD_FOLDER"])
    assert sent[0].status is MessageStatus.ACCEPTED and sent[0].text.startswith("Hi Typed +14155550901")
    assert sent[1].status is MessageStatus.FAILED and "refused" in sent[1].error


def test_a_test_send_needs_numbers_a_sender_and_credentials(app, team):
    """Each missing prerequisite is named instead of a failed request."""
    draft = make_campaign(team, [], body="Hi")
    with pytest.raises(campaigns.DraftProblem, match="sender number"):
        campaigns.send_test(draft, campaigns.SampleValues({}, None), "http://127.0.0.1:9", "/tmp")
    team.test_numbers = []
    db.session.commit()
    with pytest.raises(campaigns.DraftProblem, match="test numbers"):
        campaigns.send_test(draft, campaigns.SampleValues({}, None), "http://127.0.0.1:9", "/tmp")


def test_estimate_equals_billed_to_the_part_and_the_cent(app, team, sandbox, tmp_path):
    """A draft's messages sent through the client to the sandbox (its own part counter) bill exactly as estimated:
    € and emoji at part boundaries, long texts, the footer on and off, and an MMS."""
    contacts = make_list(team)
    notes = {
        "+14155550001": "a" * 152 + "€" + "a" * 130,  # € would straddle parts 1 and 2: 3 parts, not 2
        "+14155550002": "b" * 66 + "😀" + "b" * 44,  # the emoji would straddle: 3 UCS-2 parts, not 2
        "+14155550003": "c" * 138,  # exactly 160 with the footer: 1 part
        "+14155550004": "d" * 139,  # 161: 2 parts
        "+14155550005": "Olá 🇫🇷 " * 20,  # flags are 4 units
        "+14155550006": "{",  # an escape character before the footer
        "+14155550007": "e" * 1200,  # 8 parts
    }
    for phone, note in notes.items():
        make_contact(contacts, phone, note=note)
    make_contact(contacts, "+14155550008", note="opted out")
    make_suppression(team, "+14155550008")
    sender = make_sender(team)
    with_footer = make_campaign(team, [contacts], body="{{ note }}", sender=sender)
    without_footer = make_campaign(team, [contacts], body="{{ note }}", sender=sender, include_footer=False)
    mms = make_campaign(team, [contacts], body="{{ note }}", sender=sender)
    campaigns.store_image(mms, png_bytes(2000), "p.png", str(tmp_path), 600 * 1024)

    client = multitel.MultitelClient(sandbox.url, team_credentials(team))
    compared = []
    try:
        for campaign in (with_footer, without_footer, mms):
            media = campaigns.image_path(campaign, str(tmp_path)).read_bytes() if campaign.is_mms else None
            for message in audience.recipient_messages(campaign):
                result = client.send(sender=sender.number, to=message.phone, text=message.text, media=media,
                                     reference=f"{campaign.id}-{message.contact_id}")
                assert result.accepted, result.reason
                compared.append((campaign.id, message.phone, message.parts, result.parts))
                assert result.parts == message.parts, (campaign.name, message.phone)
                assert result.cost == message.cost, (campaign.name, message.phone)
    finally:
        client.close()

    assert len(compared) == 3 * len(notes)  # the opted-out contact was never sent
    estimated = {(c, p): parts for c, p, parts, _ in compared}
    assert estimated[(with_footer.id, "+14155550001")] == 3
    assert estimated[(with_footer.id, "+14155550002")] == 3
    assert estimated[(with_footer.id, "+14155550003")] == 1
    assert estimated[(with_footer.id, "+14155550004")] == 2
    assert estimated[(without_footer.id, "+14155550004")] == 1
    assert all(estimated[(mms.id, phone)] == 1 for phone in notes)
    # The summary's totals are the sum of the same per-recipient estimates.
    summary = audience.summarize(with_footer)
    assert summary["total_parts"] == sum(parts for c, _, parts, _ in compared if c == with_footer.id)
