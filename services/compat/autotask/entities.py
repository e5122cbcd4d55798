"""Autotask's attachment entities as data: the parents' child collections, the AttachmentInfo fields and
their picklists, and which native target type each Autotask parent is. Pure, no I/O.

Every Autotask parent of attachments is a native target type of the same name in the singular
(``Tickets/42/Attachments`` -> ``Ticket:42``); the parent's own id field of AttachmentInfo (``ticketID``)
names the same node, so "everything under ticket 42" is the native ``ancestor`` probe ``Ticket:42``.
A nested attachment's native target is ``Attachment:<its parent's UUID>`` (the native nesting rule).
"""

from __future__ import annotations

from dataclasses import dataclass

NESTED = "Attachment"  # the native target type of a nested attachment (services.core.validation)


@dataclass(frozen=True)
class Parent:
    """A parent entity of attachments: its child collection URL segment, its native target type, its id field
    in AttachmentInfo, its ``<Entity>Attachments`` endpoint, and its parentType picklist value."""

    collection: str  # Tickets
    native_type: str  # Ticket
    id_field: str | None  # ticketID (None: AttachmentInfo has no field of its own for it)
    entity: str  # TicketAttachments
    parent_type: int  # the parentType picklist value
    label: str
    nests: bool  # may its attachments carry a parentAttachmentID (the seed's two lists)
    # The id fields a create may carry to place this parent under its own parent (a note under its ticket).
    placed_by: tuple[str, ...] = ()


# The seed's "support nested attachments" list names Articles, Companies, Configuration Items, Documents,
# Opportunities, Tasks and Tickets, and its note adds notes and time entries (their nested attachments are
# created through the parent's URL). The "do not support" list: Account (which REST calls Companies, listed
# as supporting: the REST list wins), Sales Order, Expense Report, Resource, Account Note, Contract Note,
# Project, Project Note.
PARENTS: tuple[Parent, ...] = (
    Parent("Tickets", "Ticket", "ticketID", "TicketAttachments", 4, "Ticket", True, ("companyID", "projectID")),
    Parent("Tasks", "Task", "taskID", "TaskAttachments", 5, "Task", True, ("projectID",)),
    Parent("Projects", "Project", "projectID", "ProjectAttachments", 3, "Project", False, ("companyID",)),
    Parent("Companies", "Company", "companyID", "CompanyAttachments", 1, "Company", True),
    Parent(
        "Opportunities",
        "Opportunity",
        "opportunityID",
        "OpportunityAttachments",
        2,
        "Opportunity",
        True,
        ("companyID",),
    ),
    Parent(
        "ConfigurationItems",
        "ConfigurationItem",
        "installedProductID",
        "ConfigurationItemAttachments",
        11,
        "Configuration Item",
        True,
        ("companyID",),
    ),
    Parent("TicketNotes", "TicketNote", "ticketNoteID", "TicketNoteAttachments", 7, "Ticket Note", True, ("ticketID",)),
    Parent("TaskNotes", "TaskNote", "taskNoteID", "TaskNoteAttachments", 8, "Task Note", True, ("taskID",)),
    Parent(
        "ProjectNotes",
        "ProjectNote",
        "projectNoteID",
        "ProjectNoteAttachments",
        9,
        "Project Note",
        False,
        ("projectID",),
    ),
    Parent(
        "CompanyNotes",
        "CompanyNote",
        "companyNoteID",
        "CompanyNoteAttachments",
        10,
        "Company Note",
        False,
        ("companyID",),
    ),
    Parent(
        "ConfigurationItemNotes",
        "ConfigurationItemNote",
        "installedProductNoteID",
        "ConfigurationItemNoteAttachments",
        12,
        "Configuration Item Note",
        True,
        ("installedProductID",),
    ),
    Parent("Contracts", "Contract", "contractID", "ContractAttachments", 13, "Contract", True, ("companyID",)),
    Parent(
        "ContractNotes",
        "ContractNote",
        "contractNoteID",
        "ContractNoteAttachments",
        14,
        "Contract Note",
        False,
        ("contractID",),
    ),
    Parent(
        "TimeEntries", "TimeEntry", "timeEntryID", "TimeEntryAttachments", 6, "Time Entry", True, ("ticketID", "taskID")
    ),
    Parent("Documents", "Document", "documentID", "DocumentAttachments", 15, "Document", True),
    Parent("KnowledgeBaseArticles", "KnowledgeBaseArticle", "articleID", "ArticleAttachments", 16, "Article", True),
    Parent(
        "ExpenseReports", "ExpenseReport", "expenseReportID", "ExpenseReportAttachments", 17, "Expense Report", False
    ),
    Parent("Resources", "Resource", "resourceID", "ResourceAttachments", 18, "Resource", False),
    Parent("SalesOrders", "SalesOrder", "salesOrderID", "SalesOrderAttachments", 19, "Sales Order", False),
)
# The parentType of a nested attachment: its parent is an attachment (the seed's note on nesting).
ATTACHMENT_PARENT_TYPE = 20

BY_COLLECTION = {p.collection: p for p in PARENTS}
BY_ENTITY = {p.entity: p for p in PARENTS}
BY_NATIVE = {p.native_type: p for p in PARENTS}
BY_PARENT_TYPE = {p.parent_type: p for p in PARENTS}
BY_ID_FIELD = {p.id_field: p for p in PARENTS if p.id_field is not None}

# publish: 1 All Autotask users, 2 internal users only; native "all" / "internal".
PUBLISH = {1: "all", 2: "internal"}
PUBLISH_CODES = {v: k for k, v in PUBLISH.items()}
# creatorType: 1 a resource (an API user, a person or an application of the account), 2 a contact.
CREATOR_TYPES = {1: ("User", "Application", "Resource"), 2: ("Contact",)}
ATTACHMENT_TYPES = ("FILE_LINK", "FOLDER_LINK", "URL", "FILE_ATTACHMENT")
_ATTACHMENT_TYPE_LABELS = {"FILE_LINK": "File Link", "FOLDER_LINK": "Folder Link", "URL": "URL"}

# The API's per-file limit ("6 to 7 MB") and the integration's window (10,000,000 bytes per 5 minutes, then
# 5 minutes of refusals).
MAX_FILE_BYTES = 7_000_000
WINDOW_BYTES = 10_000_000
WINDOW_S = 300
LOCKOUT_S = 300


@dataclass(frozen=True)
class Field:
    """A field of AttachmentInfo as ``entityInformation/fields`` describes it."""

    name: str
    data_type: str  # Autotask's: integer, long, string, datetime, double, boolean
    length: int = 0
    read_only: bool = True
    required: bool = False
    queryable: bool = True
    reference: str = ""  # referenceEntityType


# The seed's field table, in its order. Everything is read-only here: AttachmentInfo is query-only.
FIELDS: tuple[Field, ...] = (
    Field("articleID", "integer"),
    Field("attachDate", "datetime"),
    Field("attachedByContactID", "long", reference="Contact"),
    Field("attachedByResourceID", "long", reference="Resource"),
    Field("attachmentType", "string", 30),
    Field("companyID", "integer"),
    Field("companyNoteID", "integer"),
    Field("contentType", "string", 100),
    Field("contractID", "integer"),
    Field("contractNoteID", "integer"),
    Field("creatorType", "integer"),
    Field("documentID", "integer"),
    Field("expenseReportID", "integer"),
    Field("fileSize", "long", queryable=False),
    Field("fullPath", "string", 255),
    Field("id", "long"),
    Field("impersonatorCreatorResourceID", "integer", reference="Resource"),
    Field("installedProductID", "integer"),
    Field("installedProductNoteID", "integer"),
    Field("opportunityID", "long", reference="Opportunity"),
    Field("parentAttachmentID", "integer"),
    Field("parentID", "long"),
    Field("parentType", "integer"),
    Field("projectID", "integer"),
    Field("projectNoteID", "integer"),
    Field("publish", "integer"),
    Field("resourceID", "integer"),
    Field("salesOrderID", "integer"),
    Field("taskID", "integer"),
    Field("taskNoteID", "integer"),
    Field("ticketID", "integer"),
    Field("ticketNoteID", "integer"),
    Field("timeEntryID", "integer"),
    Field("title", "string", 255),
)
FIELD_NAMES = tuple(f.name for f in FIELDS)
# Field names are case-insensitive in Autotask's queries and bodies.
BY_LOWER_NAME = {f.name.lower(): f for f in FIELDS}


def picklist(name: str) -> list[dict[str, object]] | None:
    """The picklistValues of a field as Autotask shows them (attachmentType's exactly as the seed does)."""
    entries: list[tuple[str, str]]
    if name == "attachmentType":
        entries = [(t, _ATTACHMENT_TYPE_LABELS.get(t, "Attachment")) for t in ATTACHMENT_TYPES]
    elif name == "parentType":
        entries = [(str(p.parent_type), p.label) for p in sorted(PARENTS, key=lambda p: p.parent_type)]
        entries.append((str(ATTACHMENT_PARENT_TYPE), "Attachment"))
    elif name == "publish":
        entries = [("1", "All Autotask Users"), ("2", "Internal Users Only")]
    elif name == "creatorType":
        entries = [("1", "Resource"), ("2", "Contact")]
    else:
        return None
    return [
        {
            "value": value,
            "label": label,
            "isDefaultValue": False,
            "sortOrder": order,
            "parentValue": "",
            "isActive": True,
            "isSystem": True,
        }
        for order, (value, label) in enumerate(entries, start=1)
    ]


def describe_fields() -> list[dict[str, object]]:
    """``entityInformation/fields``: each field in Autotask's FieldInformation shape."""
    out = []
    for f in FIELDS:
        values = picklist(f.name)
        out.append(
            {
                "name": f.name,
                "dataType": f.data_type,
                "length": f.length,
                "isRequired": f.required,
                "isReadOnly": f.read_only,
                "isQueryable": f.queryable,
                "isReference": bool(f.reference),
                "referenceEntityType": f.reference,
                "isPickList": values is not None,
                "picklistValues": values,
                "picklistParentValueField": "",
                "isSupportedWebhookField": False,
            }
        )
    return out


def entity_information(name: str) -> dict[str, object]:
    """``entityInformation``: what the entity allows (AttachmentInfo: query only; ``<Entity>Attachments``:
    query here, create and delete through the parent's child collection)."""
    return {
        "info": {
            "name": name,
            "canCreate": name != "AttachmentInfo",
            "canDelete": name != "AttachmentInfo",
            "canQuery": True,
            "canUpdate": False,
            "userAccessForCreate": "None" if name == "AttachmentInfo" else "All",
            "userAccessForDelete": "None" if name == "AttachmentInfo" else "All",
            "userAccessForQuery": "All",
            "userAccessForUpdate": "None",
            "hasUserDefinedFields": False,
            "supportsWebhookCallouts": False,
        }
    }
