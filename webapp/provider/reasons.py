"""Why a message was not delivered, in plain words, with the provider's own code beside it.

A delivery report names a final state (UNDELIV, REJECTD, ...) and often a cause code. The states are
the SMPP ones every SMS gateway passes on; their meanings below come from the SMPP specifications:

- SMPP v3.4 (SMPP Developers Forum, 1999), section 5.2.28 `message_state` and Appendix B (the delivery
  receipt's `stat:` field, whose 7-letter forms are DELIVRD, EXPIRED, DELETED, UNDELIV, ACCEPTD,
  UNKNOWN, REJECTD);
- SMPP v5.0 (SMS Forum, 2003), section 4.7.15 `message_state`, which adds SKIPPED;
- the lower-case words web APIs use for the same outcomes (Twilio's message status values "undelivered"
  and "failed", https://www.twilio.com/docs/sms/api/message-resource#message-status-values).

Cause codes are not interpreted: MultiTEL does not publish its own (DOMAIN.md: "not public"), the
sandbox's are its own, and the SMPP `err:` field is network specific (v3.4 Appendix B), so a guess
would put a wrong reason in front of a person. The code is kept beside the plain words, and a state
not in the table, or a text of another shape, is shown exactly as it was stored.
"""

import re

# 7-letter delivery-receipt state (or the web word) -> what happened, from the sources above.
MEANINGS = {
    "UNDELIV": "number unreachable",  # SMPP 3.4 5.2.28: UNDELIVERABLE, "message is undeliverable"
    "UNDELIVERABLE": "number unreachable",
    "REJECTD": "rejected by the network",  # SMPP 3.4 5.2.28: REJECTED, "message is in a rejected state"
    "REJECTED": "rejected by the network",
    "EXPIRED": "the phone was not reachable before the message expired",  # 5.2.28: validity period expired
    "DELETED": "deleted by the network before delivery",  # 5.2.28: DELETED, "message has been deleted"
    "UNKNOWN": "the network reported no valid state",  # 5.2.28: UNKNOWN, "message is in invalid state"
    "SKIPPED": "accepted but never sent on by the network",  # SMPP 5.0 4.7.15: SKIPPED
    "UNDELIVERED": "number unreachable",  # Twilio "undelivered": the carrier could not deliver it
    "FAILED": "the provider could not send it",  # Twilio "failed": not sent to the carrier
}

# The shape webapp.services.delivery.undelivered_reason stores, and the bare "WORD (cause N)" form.
_STORED = re.compile(r"(?:Not delivered: the provider reported )?(?P<word>[A-Za-z_]{3,20})"
                     r"(?: \(cause (?P<cause>[^()]{1,40})\))?")


def plain_reason(reason: str | None) -> str | None:
    """'Not delivered: number unreachable (UNDELIV, cause 1)' for a known state; anything else unchanged."""
    if not reason:
        return reason
    match = _STORED.fullmatch(reason.strip())
    if match is None:
        return reason
    word, cause = match["word"], match["cause"]
    meaning = MEANINGS.get(word.upper())
    if meaning is None:
        return reason
    return f"Not delivered: {meaning} ({word}" + (f", cause {cause})" if cause else ")")
