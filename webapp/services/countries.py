"""English names of the countries phone numbers belong to, for menus and messages; a country's main time zone.

Babel and pycountry are not dependencies; this is the short English name (as people say it, not
the formal ISO name) of every region libphonenumber supports, checked against it by the tests.
"""

import unicodedata
from datetime import datetime
from functools import cache
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from zoneinfo import TZPATH, ZoneInfo, available_timezones

import phonenumbers
from phonenumbers import timezone as phone_zones

NAMES = {
    "AC": "Ascension Island", "AD": "Andorra", "AE": "United Arab Emirates", "AF": "Afghanistan",
    "AG": "Antigua and Barbuda", "AI": "Anguilla", "AL": "Albania", "AM": "Armenia", "AO": "Angola",
    "AR": "Argentina", "AS": "American Samoa", "AT": "Austria", "AU": "Australia", "AW": "Aruba",
    "AX": "Åland Islands", "AZ": "Azerbaijan", "BA": "Bosnia and Herzegovina", "BB": "Barbados", "BD": "Bangladesh",
    "BE": "Belgium", "BF": "Burkina Faso", "BG": "Bulgaria", "BH": "Bahrain", "BI": "Burundi", "BJ": "Benin",
    "BL": "Saint Barthélemy", "BM": "Bermuda", "BN": "Brunei", "BO": "Bolivia", "BQ": "Caribbean Netherlands",
    "BR": "Brazil", "BS": "Bahamas", "BT": "Bhutan", "BW": "Botswana", "BY": "Belarus", "BZ": "Belize",
    "CA": "Canada", "CC": "Cocos (Keeling) Islands", "CD": "Congo (DRC)", "CF": "Central African Republic",
    "CG": "Congo (Republic)", "CH": "Switzerland", "CI": "Côte d’Ivoire", "CK": "Cook Islands", "CL": "Chile",
    "CM": "Cameroon", "CN": "China", "CO": "Colombia", "CR": "Costa Rica", "CU": "Cuba", "CV": "Cabo Verde",
    "CW": "Curaçao", "CX": "Christmas Island", "CY": "Cyprus", "CZ": "Czechia", "DE": "Germany", "DJ": "Djibouti",
    "DK": "Denmark", "DM": "Dominica", "DO": "Dominican Republic", "DZ": "Algeria", "EC": "Ecuador",
    "EE": "Estonia", "EG": "Egypt", "EH": "Western Sahara", "ER": "Eritrea", "ES": "Spain", "ET": "Ethiopia",
    "FI": "Finland", "FJ": "Fiji", "FK": "Falkland Islands", "FM": "Micronesia", "FO": "Faroe Islands",
    "FR": "France", "GA": "Gabon", "GB": "United Kingdom", "GD": "Grenada", "GE": "Georgia", "GF": "French Guiana",
    "GG": "Guernsey", "GH": "Ghana", "GI": "Gibraltar", "GL": "Greenland", "GM": "Gambia", "GN": "Guinea",
    "GP": "Guadeloupe", "GQ": "Equatorial Guinea", "GR": "Greece", "GT": "Guatemala", "GU": "Guam",
    "GW": "Guinea-Bissau", "GY": "Guyana", "HK": "Hong Kong", "HN": "Honduras", "HR": "Croatia", "HT": "Haiti",
    "HU": "Hungary", "ID": "Indonesia", "IE": "Ireland", "IL": "Israel", "IM": "Isle of Man", "IN": "India",
    "IO": "British Indian Ocean Territory", "IQ": "Iraq", "IR": "Iran", "IS": "Iceland", "IT": "Italy",
    "JE": "Jersey", "JM": "Jamaica", "JO": "Jordan", "JP": "Japan", "KE": "Kenya", "KG": "Kyrgyzstan",
    "KH": "Cambodia", "KI": "Kiribati", "KM": "Comoros", "KN": "Saint Kitts and Nevis", "KP": "North Korea",
    "KR": "South Korea", "KW": "Kuwait", "KY": "Cayman Islands", "KZ": "Kazakhstan", "LA": "Laos", "LB": "Lebanon",
    "LC": "Saint Lucia", "LI": "Liechtenstein", "LK": "Sri Lanka", "LR": "Liberia", "LS": "Lesotho",
    "LT": "Lithuania", "LU": "Luxembourg", "LV": "Latvia", "LY": "Libya", "MA": "Morocco", "MC": "Monaco",
    "MD": "Moldova", "ME": "Montenegro", "MF": "Saint Martin (French part)", "MG": "Madagascar",
    "MH": "Marshall Islands", "MK": "North Macedonia", "ML": "Mali", "MM": "Myanmar (Burma)", "MN": "Mongolia",
    "MO": "Macao", "MP": "Northern Mariana Islands", "MQ": "Martinique", "MR": "Mauritania", "MS": "Montserrat",
    "MT": "Malta", "MU": "Mauritius", "MV": "Maldives", "MW": "Malawi", "MX": "Mexico", "MY": "Malaysia",
    "MZ": "Mozambique", "NA": "Namibia", "NC": "New Caledonia", "NE": "Niger", "NF": "Norfolk Island",
    "NG": "Nigeria", "NI": "Nicaragua", "NL": "Netherlands", "NO": "Norway", "NP": "Nepal", "NR": "Nauru",
    "NU": "Niue", "NZ": "New Zealand", "OM": "Oman", "PA": "Panama", "PE": "Peru", "PF": "French Polynesia",
    "PG": "Papua New Guinea", "PH": "Philippines", "PK": "Pakistan", "PL": "Poland",
    "PM": "Saint Pierre and Miquelon", "PR": "Puerto Rico", "PS": "Palestine", "PT": "Portugal", "PW": "Palau",
    "PY": "Paraguay", "QA": "Qatar", "RE": "Réunion", "RO": "Romania", "RS": "Serbia", "RU": "Russia",
    "RW": "Rwanda", "SA": "Saudi Arabia", "SB": "Solomon Islands", "SC": "Seychelles", "SD": "Sudan",
    "SE": "Sweden", "SG": "Singapore", "SH": "Saint Helena", "SI": "Slovenia", "SJ": "Svalbard and Jan Mayen",
    "SK": "Slovakia", "SL": "Sierra Leone", "SM": "San Marino", "SN": "Senegal", "SO": "Somalia", "SR": "Suriname",
    "SS": "South Sudan", "ST": "São Tomé and Príncipe", "SV": "El Salvador", "SX": "Sint Maarten", "SY": "Syria",
    "SZ": "Eswatini", "TA": "Tristan da Cunha", "TC": "Turks and Caicos Islands", "TD": "Chad", "TG": "Togo",
    "TH": "Thailand", "TJ": "Tajikistan", "TK": "Tokelau", "TL": "Timor-Leste", "TM": "Turkmenistan",
    "TN": "Tunisia", "TO": "Tonga", "TR": "Türkiye", "TT": "Trinidad and Tobago", "TV": "Tuvalu", "TW": "Taiwan",
    "TZ": "Tanzania", "UA": "Ukraine", "UG": "Uganda", "US": "United States", "UY": "Uruguay", "UZ": "Uzbekistan",
    "VA": "Vatican City", "VC": "Saint Vincent and the Grenadines", "VE": "Venezuela",
    "VG": "British Virgin Islands", "VI": "U.S. Virgin Islands", "VN": "Vietnam", "VU": "Vanuatu",
    "WF": "Wallis and Futuna", "WS": "Samoa", "XK": "Kosovo", "YE": "Yemen", "YT": "Mayotte", "ZA": "South Africa",
    "ZM": "Zambia", "ZW": "Zimbabwe",
}


def country_name(region: str) -> str:
    """The English name of an ISO 3166 region code, or the code itself when it is not in the table."""
    return NAMES.get(region, region)


def country_label(region: str) -> str:
    """"United Kingdom (+44)": the name people look for and the code they dial."""
    return f"{country_name(region)} (+{phonenumbers.country_code_for_region(region)})"


def country_choices() -> list[tuple[str, str]]:
    """(code, label) for every region libphonenumber supports, in alphabetical order of the name."""
    return sorted(((region, country_label(region)) for region in phonenumbers.SUPPORTED_REGIONS),
                  key=lambda choice: _sort_key(choice[1]))


def _sort_key(name: str) -> str:
    """Åland between Albania and Algeria, as a reader expects: accents ignored, case folded."""
    return "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c)).casefold()


@cache
def _zone_table() -> dict[str, list[str]]:
    """tzdata's zone.tab by country: each country's zones, its most populous first (America/New_York for US)."""
    folders = [Path(folder) for folder in TZPATH]
    if find_spec("tzdata") is not None:  # zoneinfo's own fallback when the system has no zone files
        folders.append(Path(str(resources.files("tzdata").joinpath("zoneinfo"))))
    for folder in folders:
        table = folder / "zone.tab"
        if table.is_file():
            zones: dict[str, list[str]] = {}
            for line in table.read_text(encoding="utf-8").splitlines():
                if line and not line.startswith("#"):
                    country, _coordinates, zone = line.split("\t")[:3]
                    zones.setdefault(country, []).append(zone)
            return zones
    return {}


# Countries whose example number lies outside where most people live (libphonenumber's CA one is in New
# Brunswick, RU's in Irkutsk, KZ's in Aqtobe).
MAIN_ZONES = {"CA": "America/Toronto", "RU": "Europe/Moscow", "KZ": "Asia/Almaty"}


def main_zone(region: str | None) -> str:
    """The zone a team in this country most likely works in, by its canonical name: MAIN_ZONES, else the zone
    of the country's example phone number (libphonenumber), else zone.tab's first for it, else UTC. A
    suggestion, which Settings asks to confirm."""
    region = (region or "").upper()
    if not region:
        return "UTC"
    listed = _zone_table().get(region, [])
    example = phonenumbers.example_number(region)
    candidates = [MAIN_ZONES.get(region), *(phone_zones.time_zones_for_number(example) if example else ()), *listed]
    known = available_timezones()
    for zone in (zone for zone in candidates if zone in known):
        return zone if zone in listed or not listed else _canonical(zone, listed)
    return "UTC"


def _canonical(alias: str, zones: list[str]) -> str:
    """The country's zone.tab name that keeps the same clock as an old alias (Asia/Calcutta: Asia/Kolkata)."""
    def offsets(name: str) -> tuple:
        zone = ZoneInfo(name)
        return tuple(datetime(2026, month, 1, tzinfo=zone).utcoffset() for month in (1, 7))
    same = [zone for zone in zones if offsets(zone) == offsets(alias)]
    return same[0] if same else zones[0]
