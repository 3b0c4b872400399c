"""Jobs for contacts."""

from jobs import with_app
from webapp import importer


@with_app
def import_contacts(import_id: int) -> None:
    """Stream an uploaded file into its list (webapp.importer.run_import has the rules)."""
    importer.run_import(import_id)
