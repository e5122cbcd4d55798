"""Which fields of EspoCRM's records hold attachments, and how their attributes are spelled. Pure.

EspoCRM knows a record's fields from its metadata; attachd keeps no records, so the profile knows the
attachment fields of the record types the seed document writes to. Adding a type or a field is one line.
"""

from __future__ import annotations

from typing import Literal

# "multiple": an Attachment-Multiple field (``<field>Ids``, uploads say ``parentType``);
# "single": a File field (``<field>Id``, uploads say ``relatedType``), whose new file replaces the old.
FieldKind = Literal["multiple", "single"]

ATTACHMENT_FIELDS: dict[str, dict[str, FieldKind]] = {
    "Note": {"attachments": "multiple"},
    "Document": {"file": "single"},
}

# The seed's own example spells ``attachmentsIds`` as ``attachmnetsIds``: a client copied from it means
# the attachments field, so the misspelling is read as the attribute it stands for.
ATTRIBUTE_ALIASES = {"attachmnetsIds": "attachmentsIds"}


def kind_of(entity_type: str, field: str) -> FieldKind | None:
    return ATTACHMENT_FIELDS.get(entity_type, {}).get(field)


def ids_attribute(field: str, kind: FieldKind) -> str:
    """The attribute a record write sets a field with: ``attachmentsIds``, ``fileId``."""
    return f"{field}Ids" if kind == "multiple" else f"{field}Id"


def link_attribute(entity_type: str, attribute: str) -> tuple[str, FieldKind] | None:
    """The attachment field an attribute of a record write sets (``attachmentsIds`` -> attachments), if any."""
    for field, kind in ATTACHMENT_FIELDS.get(entity_type, {}).items():
        if attribute == ids_attribute(field, kind):
            return field, kind
    return None


def derived_attributes(entity_type: str) -> frozenset[str]:
    """What EspoCRM derives from a field's ids and answers with (``attachmentsNames``, ``fileName``): a
    client may send them back, and they are not taken from it."""
    names: set[str] = set()
    for field, kind in ATTACHMENT_FIELDS.get(entity_type, {}).items():
        names |= {f"{field}Names", f"{field}Types"} if kind == "multiple" else {f"{field}Name"}
    return frozenset(names)
