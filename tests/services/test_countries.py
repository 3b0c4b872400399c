"""Country names for menus and messages: every region a phone number can belong to has one."""

import phonenumbers

from webapp.services.countries import NAMES, country_choices, country_label, country_name


def test_every_supported_region_has_a_name():
    """A region libphonenumber adds in an upgrade shows up here, not as a bare code in a menu."""
    assert set(phonenumbers.SUPPORTED_REGIONS) <= set(NAMES)
    assert all(name and name != code for code, name in NAMES.items())


def test_labels_show_the_name_and_the_dialling_code():
    """People look for "United Kingdom", not "GB"; the code they dial comes after."""
    assert country_label("GB") == "United Kingdom (+44)"
    assert country_name("US") == "United States"
    assert country_name("ZZ") == "ZZ"


def test_choices_are_in_alphabetical_order_of_the_name():
    """Åland sits between Afghanistan and Albania, as a reader looks for it."""
    labels = [label for _, label in country_choices()]
    assert labels[:3] == ["Afghanistan (+93)", "Åland Islands (+358)", "Albania (+355)"]
    assert len(labels) == len(phonenumbers.SUPPORTED_REGIONS)
