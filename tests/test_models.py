"""Model types: status columns read back as their StrEnum, from rows written before the type existed too."""

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError

from tests.factories import make_team, make_user
from webapp.extensions import db
from webapp.models import ImportStatus, Role, User


def test_role_reads_back_as_the_enum(app):
    """A role stored as its lower-case value is a Role member when read, with its permissions."""
    with app.app_context():
        user_id = make_user(make_team(), Role.VIEWER).id
        db.session.expunge_all()
        user = db.session.get(User, user_id)
        assert user.role is Role.VIEWER
        assert not user.can_edit and not user.can_admin


def test_values_written_as_plain_strings_read_back_as_members(app):
    """Rows written by the first release (plain strings in VARCHAR) read back unchanged as members."""
    with app.app_context():
        user_id = make_user(make_team(), Role.ADMIN).id
        db.session.execute(text("UPDATE \"user\" SET role = 'editor' WHERE id = :id"), {"id": user_id})
        db.session.commit()
        db.session.expunge_all()
        assert db.session.scalar(select(User.role).where(User.id == user_id)) is Role.EDITOR
        stored = db.session.scalar(text("SELECT role FROM \"user\" WHERE id = :id"), {"id": user_id})
        assert stored == "editor"


def test_an_unknown_value_is_refused_before_it_is_stored(app):
    """A typo in code fails loudly instead of storing a status nothing can read."""
    with app.app_context():
        user = make_user(make_team())
        user.role = "superuser"
        with pytest.raises((StatementError, LookupError)):
            db.session.commit()
        db.session.rollback()


def test_import_status_knows_which_states_are_final():
    """Done, failed, cancelled and discarded are final; the rest still move."""
    assert {status for status in ImportStatus if status.is_final} == {
        ImportStatus.DONE, ImportStatus.FAILED, ImportStatus.CANCELLED, ImportStatus.DISCARDED}
