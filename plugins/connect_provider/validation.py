"""Local checks of request input, run before any call to Connect.

Everything here is pure: it takes plain values (as typed by a user, a template or an outbox row)
and returns them normalised (quantities as ``int``, countries upper-case, items as
``[{"id", "quantity"}]``), or raises :class:`ConnectValidationError` naming the offending field
and saying how to fix it. A mistake that can be seen without Connect must never cost an API call,
and never reach Connect half-checked: :mod:`connect_provider.actions` calls these functions first
and only then talks to the hook.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from connect_provider.exceptions import ConnectValidationError

PRODUCT_ID_RE = re.compile(r"^PRD-\d{3}-\d{3}-\d{3}$")
ITEM_GLOBAL_ID_RE = re.compile(r"^PRD-\d{3}-\d{3}-\d{3}-\d{4}$")
ITEM_LOCAL_ID_RE = re.compile(r"^[A-Za-z0-9_]+$")
HUB_ID_RE = re.compile(r"^HB-\d{4}-\d{4}$")
MARKETPLACE_ID_RE = re.compile(r"^MP-\d+$")
ASSET_ID_RE = re.compile(r"^AS-\d+(-\d+)*$")
REQUEST_ID_RE = re.compile(r"^PR-\d+(-\d+)*$")
TEMPLATE_ID_RE = re.compile(r"^TL-\d+(-\d+)*$")
CONNECTION_ID_RE = re.compile(r"^CT-\d+(-\d+)*$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z0-9-]{2,}$")
PHONE_RE = re.compile(r"^[0-9][0-9 ()./-]*$")
COUNTRY_CODE_RE = re.compile(r"^\+?[0-9]{1,4}$")

#: Item id prefix length: ``PRD-XXX-XXX-XXX`` is the product an item ``PRD-XXX-XXX-XXX-XXXX`` belongs to.
PRODUCT_PREFIX_LEN = 15

UNLIMITED = -1
#: The largest quantity accepted. No public source names the column Connect keeps quantities in;
#: a signed 32-bit integer (PostgreSQL ``integer``, Django's ``IntegerField``) is the narrowest it
#: could be, so nothing above it is sent (the sandbox refuses it the same way).
MAX_QUANTITY = 2_147_483_647
#: What an Airflow template renders for a value that is not set (``"{{ params.sid }}"`` with no
#: ``sid``): never an id.
UNSET_RENDERINGS = frozenset({"none", "null"})
CONNECTION_TYPES = ("production", "test", "preview")
SUSPEND_RESUME_TYPES = ("suspend", "resume")

# ISO 3166-1 alpha-2 (officially assigned codes). Connect keeps a two-letter country per contact.
ISO_COUNTRIES = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
    BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE
    EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
    HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC
    LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
    NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
    SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
    TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """.split()
)


def _fail(field: str, message: str) -> ConnectValidationError:
    return ConnectValidationError(field, message)


def _present(value: Any) -> bool:
    # "None"/"null" count as given: they are refused where they are read, naming the argument.
    return value is not None and not (isinstance(value, str) and not value.strip())


def is_unset_rendering(value: Any) -> bool:
    """Whether ``value`` is the text a template renders for an unset value (``"None"``, ``"null"``)."""
    return isinstance(value, str) and value.strip().casefold() in UNSET_RENDERINGS


def _refuse_unset_rendering(field: str, value: Any) -> None:
    if is_unset_rendering(value):
        raise _fail(
            field,
            f"is {value!r}, what a template renders for a value that is not set (e.g. "
            "'{{ params.x }}' without x); pass the real value, or leave the argument out",
        )


def require_text(field: str, value: Any, what: str = "a non-empty string") -> str:
    """A non-empty string, stripped; never the rendering of an unset template value."""
    if not isinstance(value, str) or not value.strip():
        raise _fail(field, f"must be {what}, got {value!r}")
    _refuse_unset_rendering(field, value)
    return value.strip()


def optional_text(field: str, value: Any) -> str | None:
    """``None``/blank becomes ``None``; anything else must be a string (not ``"None"``)."""
    if not _present(value):
        return None
    return require_text(field, value)


def rql_text(field: str, text: str) -> str:
    """Text that is filtered on in RQL: it must not hold both quote kinds.

    Connect's RQL quotes a value with ``"`` or ``'`` and has no escape, so a value holding both
    can never be looked up: refused here, naming the caller's argument, rather than by the hook.
    """
    if '"' in text and "'" in text:
        raise _fail(
            field,
            f"{text!r} holds both a double quote and a single quote, which Connect's RQL cannot "
            "quote, so it could never be looked up; remove one kind of quote",
        )
    return text


def _match(field: str, value: Any, pattern: re.Pattern[str], shape: str) -> str:
    text = require_text(field, value, f"an id like {shape}")
    if not pattern.match(text):
        raise _fail(field, f"{text!r} is not an id of the form {shape}")
    return text


def product_id(field: str, value: Any) -> str:
    return _match(field, value, PRODUCT_ID_RE, "PRD-XXX-XXX-XXX")


def hub_id(field: str, value: Any) -> str:
    return _match(field, value, HUB_ID_RE, "HB-XXXX-XXXX")


def asset_id(field: str, value: Any) -> str:
    return _match(field, value, ASSET_ID_RE, "AS-XXXX-XXXX-XXXX")


def request_id(field: str, value: Any) -> str:
    return _match(field, value, REQUEST_ID_RE, "PR-XXXX-XXXX-XXXX-XXX")


def template_id(field: str, value: Any) -> str:
    return _match(field, value, TEMPLATE_ID_RE, "TL-XXX-XXX-XXX-XXXX")


def connection_id(field: str, value: Any) -> str:
    return _match(field, value, CONNECTION_ID_RE, "CT-XXXX-XXXX-XXXX")


def marketplace(field: str, value: Any) -> str:
    """A marketplace id (``MP-12345``) or its name: anything starting with ``MP-`` must be an id.

    Connect refuses a purchase without one ("Field 'marketplace.id' is required."), so it is
    required here, before any call.
    """
    text = require_text(
        field, value, "a marketplace id (MP-XXXXX) or a marketplace name (Connect requires marketplace.id)"
    )
    if text.upper().startswith("MP-") and not MARKETPLACE_ID_RE.match(text):
        raise _fail(field, f"{text!r} looks like a marketplace id but is not of the form MP-XXXXX")
    return rql_text(field, text)


def connection_type(field: str, value: Any) -> str:
    text = require_text(field, value, f"one of {', '.join(CONNECTION_TYPES)}")
    if text not in CONNECTION_TYPES:
        raise _fail(field, f"must be one of {', '.join(CONNECTION_TYPES)}, got {text!r}")
    return text


def suspend_resume_type(field: str, value: Any) -> str:
    if value not in SUSPEND_RESUME_TYPES:
        raise _fail(field, f"must be 'suspend' or 'resume', got {value!r}")
    return str(value)


def quantity(field: str, value: Any, *, allow_zero: bool) -> int:
    """An item quantity: a whole number above zero (or zero when allowed), or -1 for unlimited.

    Numbers and numeric strings (``5``, ``"5"``, ``25.0``, ``"25.0"``, as templates and Connect's
    own answers carry them) and ``"unlimited"`` (-1) are accepted; fractions, booleans, other
    negative numbers and anything above :data:`MAX_QUANTITY` are refused, because Connect's
    reservation items count whole units.
    """
    lowest = "0" if allow_zero else "1"
    hint = f"must be a whole number >= {lowest}, or -1 for unlimited"
    number = parse_quantity(value)
    if number is None:
        raise _fail(field, f"{hint}, got {value!r}")
    if number > MAX_QUANTITY:
        raise _fail(
            field, f"must be at most {MAX_QUANTITY} (the largest quantity Connect can hold), got {value!r}"
        )
    if number == UNLIMITED or number > 0 or (allow_zero and number == 0):
        return number
    raise _fail(field, f"{hint}, got {value!r}")


def parse_quantity(value: Any) -> int | None:
    """A quantity as Connect or a user writes it, as a whole number; ``None`` if it is not one.

    ``25``, ``25.0``, ``"25"``, ``"25.0"``, ``Decimal("25")``; ``"unlimited"`` is -1 (the legacy
    Python SDK's QuantityField and connect-extension-for-cb-commerce's request tracker read it so).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.casefold() == "unlimited":
            return UNLIMITED
        if not re.fullmatch(r"[+-]?\d+(\.\d+)?", text):
            return None
        value = Decimal(text)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        value = Decimal(repr(value))
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        try:
            if not value.is_finite() or value != value.to_integral_value():
                return None
        except InvalidOperation:
            return None
        return int(value)
    return None


def item_id(field: str, value: Any, *, allow_local: bool) -> str:
    """A global item id ``PRD-XXX-XXX-XXX-XXXX`` or, where allowed, a product-local id (``SEATS``)."""
    shape = "PRD-XXX-XXX-XXX-XXXX" + (" or a product-local id (letters, digits, _)" if allow_local else "")
    text = require_text(field, value, f"an item id like {shape}")
    if ITEM_GLOBAL_ID_RE.match(text):
        return text
    if text.upper().startswith("PRD-"):
        raise _fail(field, f"{text!r} is not a global item id of the form PRD-XXX-XXX-XXX-XXXX")
    if allow_local and ITEM_LOCAL_ID_RE.match(text):
        return text
    raise _fail(field, f"{text!r} is not an item id of the form {shape}")


def product_of_item(global_item_id: str) -> str:
    """``PRD-276-377-545-0001`` -> ``PRD-276-377-545`` (the first 15 characters)."""
    return global_item_id[:PRODUCT_PREFIX_LEN]


def _decoded(field: str, value: Any) -> Any:
    """Templates render structures to JSON text unless the DAG renders native objects: accept both."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise _fail(field, f"is text that is not valid JSON ({exc})") from None
    return value


def items(
    field: str,
    value: Any,
    *,
    single_item_id: Any = None,
    single_quantity: Any = None,
    allow_local: bool,
    allow_zero: bool,
) -> list[dict[str, Any]]:
    """Normalise ``items`` (a list of ``{"item_id", "quantity"}``, or one such dict) or one
    ``item_id`` + ``quantity`` pair into ``[{"id": ..., "quantity": int}]``.

    ``id`` is accepted as an alias of ``item_id`` (Connect's own key). An item may appear once.
    """
    value = _decoded(field, value)
    if _present(value) and _present(single_item_id):
        raise _fail(field, "give either items or item_id + quantity, not both")
    if not _present(value):
        if not _present(single_item_id):
            if _present(single_quantity):
                raise _fail("item_id", "quantity was given without the item_id it applies to")
            raise _fail(field, "at least one item is required: items=[{'item_id': ..., 'quantity': ...}]")
        value = [{"item_id": single_item_id, "quantity": single_quantity}]
        field = "item_id"
    elif _present(single_quantity):
        raise _fail("quantity", "quantity goes inside each entry of items when items is given")
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise _fail(field, "must be a non-empty list of {'item_id': ..., 'quantity': ...}")
    normalised: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, entry in enumerate(value):
        where = f"{field}[{index}]" if field == "items" else field
        if not isinstance(entry, Mapping):
            raise _fail(where, f"must be a dict with item_id and quantity, got {entry!r}")
        unknown = set(entry) - {"item_id", "id", "quantity"}
        if unknown:
            raise _fail(where, f"unknown keys {sorted(unknown)}; use item_id and quantity")
        if "item_id" in entry and "id" in entry:
            raise _fail(where, "give item_id or id, not both")
        raw_id = entry.get("item_id", entry.get("id"))
        id_field = f"{where}.item_id" if field == "items" else "item_id"
        qty_field = f"{where}.quantity" if field == "items" else "quantity"
        item = item_id(id_field, raw_id, allow_local=allow_local)
        if "quantity" not in entry or entry["quantity"] is None:
            raise _fail(qty_field, "is required")
        qty = quantity(qty_field, entry["quantity"], allow_zero=allow_zero)
        if item in seen:
            raise _fail(id_field, f"{item} appears more than once")
        seen.add(item)
        normalised.append({"id": item, "quantity": qty})
    return normalised


def _phone(field: str, value: Any) -> dict[str, str]:
    """Connect's phone object ``{country_code, area_code, phone_number, extension}``.

    A plain string is accepted: ``"+1 2015550123"`` splits into country code and number.
    """
    number_field = f"{field}.phone_number"
    if isinstance(value, str):
        number_field = field
        text = value.strip()
        code = ""
        if text.startswith("+"):
            code, _, text = text.partition(" ")
            if not text:
                raise _fail(field, f"{value!r} has no number after the country code; write '+1 2015550123'")
        value = {"country_code": code, "area_code": "", "phone_number": text, "extension": ""}
    if not isinstance(value, Mapping):
        raise _fail(
            field, f"must be a string or {{country_code, area_code, phone_number, extension}}, got {value!r}"
        )
    unknown = set(value) - {"country_code", "area_code", "phone_number", "extension"}
    if unknown:
        raise _fail(field, f"unknown keys {sorted(unknown)}")
    number = require_text(number_field, value.get("phone_number"))
    if not PHONE_RE.match(number):
        raise _fail(number_field, f"{number!r} is not a phone number (digits, spaces, - ( ) .)")
    out = {"country_code": "", "area_code": "", "phone_number": number, "extension": ""}
    for key in ("country_code", "area_code", "extension"):
        part = value.get(key)
        if part is None or part == "":
            continue
        if isinstance(part, int) and not isinstance(part, bool):
            part = str(part)
        if not isinstance(part, str):
            raise _fail(f"{field}.{key}", f"must be a string, got {part!r}")
        out[key] = part.strip()
    if out["country_code"] and not COUNTRY_CODE_RE.match(out["country_code"]):
        raise _fail(f"{field}.country_code", f"{out['country_code']!r} is not a calling code like +1")
    return out


def tier(field: str, value: Any) -> dict[str, Any]:
    """A tier account in Connect's shape, checked field by field.

    Required: ``name``, ``external_id``, ``contact_info.address_line1``, ``city``, ``postal_code``,
    ``country`` (ISO 3166-1 alpha-2) and ``contact.first_name``, ``last_name``, ``email``,
    ``phone_number``. Optional: ``external_uid``, ``tax_id``, ``address_line2``, ``state``.
    """
    value = _decoded(field, value)
    if not isinstance(value, Mapping):
        raise _fail(field, f"must be a dict with name, external_id and contact_info, got {value!r}")
    known = {"name", "external_id", "external_uid", "tax_id", "contact_info", "id", "type"}
    unknown = set(value) - known
    if unknown:
        raise _fail(field, f"unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
    out: dict[str, Any] = {
        "name": require_text(f"{field}.name", value.get("name")),
        "external_id": _external_id(f"{field}.external_id", value.get("external_id")),
    }
    uid = optional_text(f"{field}.external_uid", value.get("external_uid"))
    if uid is not None:
        out["external_uid"] = uid
    for key in ("tax_id", "id", "type"):
        extra = optional_text(f"{field}.{key}", value.get(key))
        if extra is not None:
            out[key] = extra
    info = value.get("contact_info")
    info_field = f"{field}.contact_info"
    if not isinstance(info, Mapping):
        raise _fail(info_field, "is required: {address_line1, city, postal_code, country, contact{...}}")
    info_known = {"address_line1", "address_line2", "city", "state", "postal_code", "country", "contact"}
    unknown = set(info) - info_known
    if unknown:
        raise _fail(info_field, f"unknown keys {sorted(unknown)}; allowed: {sorted(info_known)}")
    contact_info: dict[str, Any] = {}
    for key in ("address_line1", "city", "postal_code"):
        contact_info[key] = require_text(f"{info_field}.{key}", _stringish(info.get(key)))
    for key in ("address_line2", "state"):
        extra = optional_text(f"{info_field}.{key}", info.get(key))
        if extra is not None:
            contact_info[key] = extra
    country = require_text(f"{info_field}.country", info.get("country"), "a two-letter ISO country code")
    if country.upper() not in ISO_COUNTRIES:
        raise _fail(
            f"{info_field}.country", f"{country!r} is not a two-letter ISO 3166 country code (e.g. US, DE)"
        )
    contact_info["country"] = country.upper()
    contact = info.get("contact")
    contact_field = f"{info_field}.contact"
    if not isinstance(contact, Mapping):
        raise _fail(contact_field, "is required: {first_name, last_name, email, phone_number}")
    contact_known = {"first_name", "last_name", "email", "phone_number"}
    unknown = set(contact) - contact_known
    if unknown:
        raise _fail(contact_field, f"unknown keys {sorted(unknown)}; allowed: {sorted(contact_known)}")
    email = require_text(f"{contact_field}.email", contact.get("email"), "an e-mail address")
    if not EMAIL_RE.match(email):
        raise _fail(f"{contact_field}.email", f"{email!r} is not a valid e-mail address")
    if contact.get("phone_number") is None:
        raise _fail(f"{contact_field}.phone_number", "is required")
    contact_info["contact"] = {
        "first_name": require_text(f"{contact_field}.first_name", contact.get("first_name")),
        "last_name": require_text(f"{contact_field}.last_name", contact.get("last_name")),
        "email": email,
        "phone_number": _phone(f"{contact_field}.phone_number", contact.get("phone_number")),
    }
    out["contact_info"] = contact_info
    return out


def _stringish(value: Any) -> Any:
    # Postal codes typed as numbers in YAML/JSON (36507) are still postal codes.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _external_id(field: str, value: Any) -> str:
    # External ids are often numeric in the commerce system that owns them; they are looked up
    # by RQL filters, so both quote kinds are refused.
    return rql_text(field, require_text(field, _stringish(value), "a non-empty external id"))


def external_id(field: str, value: Any) -> str:
    text = _external_id(field, value)
    if len(text) > 100:
        raise _fail(field, f"is {len(text)} characters long; Connect keeps at most 100")
    return text


def params(field: str, value: Any) -> list[dict[str, Any]]:
    """Ordering parameters ``{param_id: value}`` (or Connect's ``[{"id", "value"}]``).

    A value that is an object (a dict) goes as ``structured_value``, as Connect keeps object
    parameters (the Zapier app sends them so: cloudblue/connect-fulfillment-zapier-app @
    d6b7645a0e854f7d3dcab017211da4dada6fe62f : lib/connect/api/helpers/builder.js, data.js).
    """
    value = _decoded(field, value)
    if value is None:
        return []
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list | tuple):
        pairs = []
        for index, entry in enumerate(value):
            keys = set(entry) if isinstance(entry, Mapping) else set()
            if keys not in ({"id", "value"}, {"id", "structured_value"}):
                raise _fail(
                    f"{field}[{index}]",
                    f"must be {{'id': ..., 'value': ...}} or {{'id': ..., 'structured_value': {{...}}}}, "
                    f"got {entry!r}",
                )
            pairs.append((entry["id"], entry.get("value", entry.get("structured_value"))))
    else:
        raise _fail(field, f"must be a dict {{param_id: value}}, got {value!r}")
    out: list[dict[str, Any]] = []
    for key, raw in pairs:
        name = require_text(f"{field} key", key, "a parameter id")
        if isinstance(raw, Mapping):
            out.append({"id": name, "structured_value": dict(raw)})
            continue
        if isinstance(raw, bool):
            raw = "true" if raw else "false"
        elif isinstance(raw, int | float):
            raw = str(raw)
        if not isinstance(raw, str):
            raise _fail(f"{field}.{name}", f"must be a string, a number or an object, got {raw!r}")
        out.append({"id": name, "value": raw})
    return out


def param_errors(field: str, value: Any) -> list[dict[str, str]]:
    """``{param_id: message}`` for an inquire: what the requester must fix, per parameter.

    Becomes ``[{"id", "value_error"}]``, the shape ``PUT /requests/{id}`` takes.
    """
    value = _decoded(field, value)
    if value is None or value == {}:
        return []
    if not isinstance(value, Mapping):
        raise _fail(field, f"must be a dict {{param_id: message}}, got {value!r}")
    out = []
    for key, message in value.items():
        name = require_text(f"{field} key", key, "a parameter id")
        text = require_text(f"{field}.{name}", message, "a message saying what to fix")
        out.append({"id": name, "value_error": text})
    return out


def asset_identity(
    asset_id_value: Any, asset_external_id: Any, asset_external_uid: Any
) -> tuple[str | None, str | None, str | None]:
    """Exactly one way to name the asset: ``asset_id``, or its external id (and/or external uid)."""
    for name, given in (
        ("asset_id", asset_id_value),
        ("asset_external_id", asset_external_id),
        ("asset_external_uid", asset_external_uid),
    ):
        _refuse_unset_rendering(name, given)
    by_id = _present(asset_id_value)
    by_external = _present(asset_external_id) or _present(asset_external_uid)
    if by_id and by_external:
        raise _fail("asset_id", "give either asset_id or asset_external_id/asset_external_uid, not both")
    if not by_id and not by_external:
        raise _fail("asset_external_id", "the asset is required: give asset_id or asset_external_id")
    if by_id:
        return asset_id("asset_id", asset_id_value), None, None
    ext = external_id("asset_external_id", asset_external_id) if _present(asset_external_id) else None
    uid = external_id("asset_external_uid", asset_external_uid) if _present(asset_external_uid) else None
    return None, ext, uid


def positive_int(field: str, value: Any) -> int:
    """A whole number above zero: an int or its text (an environment variable, a DAG param).

    Booleans and fractions are refused (``True`` is not a batch size, ``2.5`` rows cannot be claimed).
    """
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number <= 0 or (isinstance(value, float) and value != number) or isinstance(value, bool):
        raise _fail(field, f"must be a positive whole number, got {value!r}")
    return number


def boolean(field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise _fail(field, f"must be true or false, got {value!r}")
