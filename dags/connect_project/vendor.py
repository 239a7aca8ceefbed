"""The demo vendor's rule for new purchases, used by the ``connect_vendor_purchases`` DAG.

A vendor decides each pending purchase: approve it with the product's fulfillment template
(``GET /products/{id}/templates?eq(scope,asset)&eq(type,fulfillment)``, as CloudBlue's EaaS
tutorial does: cloudblue/connect-eaas-core @ bbc0190 : docs/tutorials/eventsapp/develop.md), or
inquire it, asking the customer for more. The rule here is the demo's: approve a purchase whose
every item quantity is a whole number up to ``max_quantity`` (default 100); inquire one asking
for more (or for ``unlimited``), with a note in the request's parameters when the product has a
fulfillment parameter to hold it.

Each request is read again first: a request no longer pending (decided meanwhile, or a duplicate
event) is left alone and counted as ``skipped``. One request failing never stops the others; the
task fails at the end, naming each request that could not be decided and why.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from connect_provider import actions
from connect_provider.exceptions import ConnectError
from connect_provider.rql import R

if TYPE_CHECKING:
    from connect_provider.hooks.connect import ConnectHook

log = logging.getLogger(__name__)

DEFAULT_MAX_QUANTITY = 100


@dataclass
class Decisions:
    """What one run decided (its XCom: ids and counts only)."""

    approved: list[str] = field(default_factory=list)
    inquired: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantities(request: Mapping[str, Any]) -> list[str]:
    """The requested quantity of each item, as Connect writes them (strings, ``unlimited``)."""
    items = (request.get("asset") or {}).get("items") or []
    return [str(item.get("quantity")) for item in items if isinstance(item, Mapping)]


def rule(request: Mapping[str, Any], max_quantity: int = DEFAULT_MAX_QUANTITY) -> str:
    """``approve`` or ``inquire`` for a pending purchase (the module docstring's rule)."""
    for quantity in quantities(request):
        try:
            number = float(quantity)
        except ValueError:
            return "inquire"  # "unlimited", or anything that is not a number
        if number != int(number) or number > max_quantity:
            return "inquire"
    return "approve"


def fulfillment_template(hook: ConnectHook, product_id: str) -> str:
    """The id of the product's first fulfillment template of asset scope."""
    found = list(
        hook.iter_items(f"/products/{product_id}/templates", R(scope="asset") & R(type="fulfillment"))
    )
    if not found:
        raise ConnectError(
            f"product {product_id} has no fulfillment template of asset scope: add one in Connect "
            "(Products -> Embedding -> Templates) so its purchases can be approved"
        )
    return str(found[0]["id"])


def decide_purchases(
    hook: ConnectHook, request_ids: Iterable[str], *, max_quantity: int = DEFAULT_MAX_QUANTITY
) -> Decisions:
    """Approve or inquire each pending purchase named (see the module docstring)."""
    done = Decisions()
    templates: dict[str, str] = {}
    for request_id in dict.fromkeys(request_ids):
        try:
            request = hook.get_request(request_id)
            if request.get("status") != "pending" or request.get("type") != "purchase":
                log.info(
                    "Request %s is %s %s: nothing to decide.",
                    request_id,
                    request.get("type"),
                    request.get("status"),
                )
                done.skipped.append(request_id)
                continue
            if rule(request, max_quantity) == "approve":
                product_id = str(((request.get("asset") or {}).get("product") or {}).get("id"))
                if product_id not in templates:
                    templates[product_id] = fulfillment_template(hook, product_id)
                actions.approve(hook, request_id=request_id, template_id=templates[product_id])
                done.approved.append(request_id)
            else:
                actions.inquire(hook, request_id=request_id)
                done.inquired.append(request_id)
        except ConnectError as exc:
            log.warning("Request %s could not be decided: %s", request_id, exc)
            done.failed[request_id] = hook.redact(str(exc))
    return done
