"""The open event vocabulary (config/event_vocabulary.yaml) and Snowplow's self-describing events and contexts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from spark_jobs.bronze.normalize import Reason, RejectedEvent, normalize_line
from spark_jobs.bronze.vocabulary import BUNDLED_FILE, load_vocabulary
from spark_jobs.errors import InvalidConfigError

pytestmark = pytest.mark.unit

T = "2026-11-02T10:00:00Z"
SEGMENT = {"type": "track", "messageId": "m-1", "anonymousId": "a-1", "timestamp": T,
           "context": {"library": {"name": "analytics-node", "version": "2.1.0"}}}  # fmt: skip
SNOWPLOW = {
    "app_id": "shop", "platform": "web", "collector_tstamp": "2026-11-02 10:00:01.000",
    "derived_tstamp": "2026-11-02 10:00:00.500", "event_id": "0f9c2c3e-6a54-4b7e-9a53-2f8d3e0f1a11",
    "name_tracker": "sp", "v_tracker": "js-3.24.0", "domain_userid": "d-1", "domain_sessionid": "s-1",
    "domain_sessionidx": 2, "page_url": "https://shop.example.com/product/p-9", "page_urlpath": "/product/p-9",
    "useragent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36",
}  # fmt: skip


def _vocabulary(tmp_path: Path, change) -> object:
    doc = yaml.safe_load(BUNDLED_FILE.read_text())
    change(doc)
    path = tmp_path / "event_vocabulary.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_vocabulary(path)


def _unstruct(schema: str, data: dict, **extra) -> dict:
    """The Analytics SDK's JSON form of a self-describing event."""
    vendor, name, _, version = schema.removeprefix("iglu:").split("/")
    column = f"unstruct_event_{vendor.replace('.', '_')}_{name}_{version.split('-')[0]}"
    return {**SNOWPLOW, "event": "unstruct", "event_vendor": vendor, "event_name": name, "event_format": "jsonschema",
            "event_version": version, column: data, **extra}  # fmt: skip


def _enriched(schema: str, data: dict, contexts: list[dict] = (), **extra) -> dict:
    """The enriched TSV form: self-describing JSON as strings."""
    wrapper = {"schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
               "data": {"schema": schema, "data": data}}  # fmt: skip
    out = {**SNOWPLOW, "event": "unstruct", "unstruct_event": json.dumps(wrapper), **extra}
    if contexts:
        out["contexts"] = json.dumps({"schema": "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1",
                                      "data": list(contexts)})  # fmt: skip
    return out


def test_an_unmapped_segment_track_event_is_kept_as_a_custom_event_with_its_name_and_properties():
    event = normalize_line(json.dumps({**SEGMENT, "event": "Coupon Applied",
                                       "properties": {"coupon": "WINTER10", "discount": 10}}))  # fmt: skip
    assert (event["event_type"], event["event_name"], event["schema_version"]) == ("custom", "Coupon Applied", 3)
    assert event["properties"]["coupon"] == "WINTER10" and event["properties"]["discount"] == "10"
    mapped = normalize_line(json.dumps({**SEGMENT, "event": "Product Removed", "properties": {"product_id": "p"}}))
    assert (mapped["event_type"], mapped["event_name"]) == ("cart_remove", "Product Removed")


def test_unmapped_kinds_of_every_sdk_are_custom_and_a_strict_source_quarantines_them_naming_the_file(tmp_path):
    web = {"sdk": "intentlake-web", "kind": "video_play", "eid": "w-1", "ts": 1793613600000, "anon": "a-1"}
    mobile = {"platform": "ios", "event_name": "push_opened", "event_uuid": "u-1", "client_ts": T, "device_id": "d"}
    for raw, name in ((web, "video_play"), (mobile, "push_opened")):
        event = normalize_line(json.dumps(raw))
        assert (event["event_type"], event["event_name"]) == ("custom", name)
    strict = _vocabulary(tmp_path, lambda doc: doc["sources"]["segment"].update(strict=True))
    with pytest.raises(RejectedEvent) as caught:
        normalize_line(json.dumps({**SEGMENT, "event": "Coupon Applied"}), vocabulary=strict)
    assert caught.value.reason == Reason.SCHEMA_VIOLATION
    assert "event_vocabulary.yaml (sources: segment: events)" in caught.value.detail
    assert "Coupon" not in caught.value.detail  # the name, like any value, stays out of the detail
    assert normalize_line(json.dumps({**SEGMENT, "event": "Product Viewed"}), vocabulary=strict)  # mapped: fine
    assert normalize_line(json.dumps(web), vocabulary=strict)["event_type"] == "custom"  # web_sdk is not strict


def test_a_changed_mapping_maps_a_name_that_was_custom(tmp_path):
    vocabulary = _vocabulary(
        tmp_path, lambda doc: doc["sources"]["segment"]["events"].update({"Signed Up": "identify"})
    )
    event = normalize_line(json.dumps({**SEGMENT, "event": "Signed Up"}), vocabulary=vocabulary)
    assert (event["event_type"], event["event_name"]) == ("identify", "Signed Up")


@pytest.mark.parametrize(
    ("change", "where", "problem"),
    [
        (lambda d: d["sources"]["segment"]["events"].update({"Refund": "refund"}), "sources: segment: events: Refund",
         "'refund' is not a canonical event type"),
        (lambda d: d["sources"]["snowplow"]["schemas"].update({"iglu:com.acme/x/jsonschema/1-0-0": "click"}),
         "sources: snowplow: schemas: iglu:com.acme/x/jsonschema/1-0-0", "Iglu vendor/name (no version)"),
        (lambda d: d["sources"].update({"server_log": {"events": {}}}), "sources: server_log", "not a source format"),
        (lambda d: d["sources"]["web_sdk"].update(strict="yes"), "sources: web_sdk: strict", "true or false"),
        (lambda d: d["custom_features"].update({"Bad Key": "X"}), "custom_features: Bad Key", "lower-case"),
        (lambda d: d["custom_features"].update({"again": "Signed Up"}), "custom_features: again", "already counted"),
    ],
)  # fmt: skip
def test_validate_config_names_the_entry_that_is_wrong(tmp_path, change, where, problem):
    with pytest.raises(InvalidConfigError) as caught:
        _vocabulary(tmp_path, change)
    assert caught.value.where == where and problem in caught.value.problem


def test_canonical_v3_custom_events_need_a_name_and_v2_events_stay_valid():
    base = {"event_id": "c-1", "event_type": "custom", "occurred_at": T, "received_at": T, "anonymous_id": "a",
            "source": {"kind": "api"}, "schema_version": 3}  # fmt: skip
    with pytest.raises(RejectedEvent, match="event_name"):
        normalize_line(json.dumps(base))
    assert normalize_line(json.dumps({**base, "event_name": "Signed Up"}))["event_name"] == "Signed Up"
    with pytest.raises(RejectedEvent, match="event_type: not one of"):  # custom is new in v3
        normalize_line(json.dumps({**base, "event_name": "Signed Up", "schema_version": 2}))
    v2 = normalize_line(json.dumps({**base, "event_type": "click", "schema_version": 2}))
    assert v2["schema_version"] == 2 and v2["event_name"] is None


LINK = "iglu:com.snowplowanalytics.snowplow/link_click/jsonschema/1-0-1"


@pytest.mark.parametrize("form", [_unstruct, _enriched])
def test_snowplow_link_click_is_a_click_with_target_and_element(form):
    event = normalize_line(
        json.dumps(
            form(
                LINK,
                {
                    "targetUrl": "https://shop.example.com/sale",
                    "elementId": "cta",
                    "elementClasses": ["btn", "hero"],
                    "elementTarget": "_blank",
                },
            )
        )
    )
    props = event["properties"]
    assert (event["event_type"], event["event_name"]) == ("click", "com.snowplowanalytics.snowplow/link_click")
    assert (props["target_url"], props["element_id"], props["element_classes"]) == (
        "https://shop.example.com/sale",
        "cta",
        "btn hero",
    )
    assert props["schema"] == LINK and event["schema_version"] == 3


def test_snowplow_form_events_are_form_events_and_typed_values_are_never_stored():
    focus = normalize_line(
        json.dumps(
            _unstruct(
                "iglu:com.snowplowanalytics.snowplow/focus_form/jsonschema/1-0-0",
                {"formId": "signup", "elementId": "email", "nodeName": "INPUT", "value": "ann@example.com"},
            )
        )
    )
    assert (focus["event_type"], focus["properties"]["form_action"], focus["properties"]["form_id"]) == (
        "form",
        "focus",
        "signup",
    )
    assert "ann@example.com" not in json.dumps(focus) and focus["properties"]["form_values_withheld"] == "1"
    change = normalize_line(
        json.dumps(
            _enriched(
                "iglu:com.snowplowanalytics.snowplow/change_form/jsonschema/1-0-0",
                {"formId": "signup", "elementId": "name", "value": "Ann"},
            )
        )
    )
    assert change["properties"]["form_action"] == "change" and "Ann" not in json.dumps(change)
    submit = normalize_line(
        json.dumps(
            _unstruct(
                "iglu:com.snowplowanalytics.snowplow/submit_form/jsonschema/1-0-0",
                {
                    "formId": "signup",
                    "formClasses": [],
                    "elements": [{"name": "email", "value": "ann@example.com", "nodeName": "INPUT"}],
                },
            )
        )
    )
    assert submit["properties"]["form_action"] == "submit" and submit["properties"]["form_fields"] == "email"
    assert "ann@example.com" not in json.dumps(submit)


def test_snowplow_site_search_is_a_search_with_the_query():
    event = normalize_line(json.dumps(_unstruct("iglu:com.snowplowanalytics.snowplow/site_search/jsonschema/1-0-0",
                                                {"terms": ["red", "dress"], "filters": {"size": "M"},
                                                 "totalResults": 42})))  # fmt: skip
    assert (event["event_type"], event["properties"]["query"], event["properties"]["total_results"]) == (
        "search",
        "red dress",
        "42",
    )


ECOMMERCE = "iglu:com.snowplowanalytics.snowplow.ecommerce/snowplow_ecommerce_action/jsonschema/1-0-2"
PRODUCT = {
    "schema": "iglu:com.snowplowanalytics.snowplow.ecommerce/product/jsonschema/1-0-0",
    "data": {"id": "p-9", "name": "Dress", "category": "women/dresses", "price": 59.9, "currency": "EUR"},
}
TRANSACTION = {"schema": "iglu:com.snowplowanalytics.snowplow.ecommerce/transaction/jsonschema/1-0-0",
               "data": {"transaction_id": "o-77", "revenue": 59.9, "currency": "EUR", "payment_method": "card",
                        "total_quantity": 1}}  # fmt: skip


@pytest.mark.parametrize(
    ("action", "expected"),
    [("product_view", "product_view"), ("add_to_cart", "cart_add"), ("remove_from_cart", "cart_remove"),
     ("transaction", "purchase"), ("list_view", "custom")],
)  # fmt: skip
def test_snowplow_ecommerce_actions_map_by_type_with_products_and_revenue(action, expected):
    contexts = [PRODUCT, TRANSACTION] if action == "transaction" else [PRODUCT]
    event = normalize_line(json.dumps(_enriched(ECOMMERCE, {"type": action}, contexts)))
    props = event["properties"]
    assert event["event_type"] == expected
    if expected != "custom":
        assert (props["product_id"], props["price"], props["ecommerce_action"]) == ("p-9", "59.9", action)
    if action == "transaction":
        assert (props["order_id"], props["revenue"], props["currency"]) == ("o-77", "59.9", "EUR")
    if expected == "custom":  # an unmapped action keeps its data
        assert event["event_name"] == "com.snowplowanalytics.snowplow.ecommerce/snowplow_ecommerce_action#list_view"
        assert props["type"] == "list_view"


def test_snowplow_older_cart_events_map_with_their_sku():
    add = normalize_line(
        json.dumps(
            _unstruct(
                "iglu:com.snowplowanalytics.snowplow/add_to_cart/jsonschema/1-0-0",
                {"sku": "p-3", "name": "Shoe", "unitPrice": 80, "quantity": 1},
            )
        )
    )
    remove = normalize_line(
        json.dumps(
            _unstruct(
                "iglu:com.snowplowanalytics.snowplow/remove_from_cart/jsonschema/1-0-0", {"sku": "p-3", "quantity": 1}
            )
        )
    )
    assert (add["event_type"], add["properties"]["product_id"], add["properties"]["price"]) == ("cart_add", "p-3", "80")
    assert (remove["event_type"], remove["properties"]["product_id"]) == ("cart_remove", "p-3")


def test_snowplow_consent_events_set_the_granted_scopes():
    prefs = normalize_line(
        json.dumps(
            _unstruct(
                "iglu:com.snowplowanalytics.snowplow/consent_preferences/jsonschema/1-0-0",
                {
                    "eventType": "allow_selected",
                    "basisForProcessing": "consent",
                    "consentUrl": "https://x",
                    "consentVersion": "3",
                    "consentScopes": ["necessary", "analytics", "advertising"],
                    "domainsApplied": ["shop.example.com"],
                },
            )
        )
    )
    assert (prefs["event_type"], prefs["consent"]) == ("consent", ["analytics", "marketing"])
    assert prefs["properties"]["consent_scopes"] == "necessary,analytics,advertising"
    withdrawn = normalize_line(
        json.dumps(_unstruct("iglu:com.snowplowanalytics.snowplow/consent_withdrawn/jsonschema/1-0-0", {"all": True}))
    )
    assert (withdrawn["event_type"], withdrawn["consent"], withdrawn["properties"]["consent_action"]) == (
        "consent",
        [],
        "withdrawn",
    )


def test_any_other_schema_is_kept_as_custom_with_its_uri_and_data():
    uri = "iglu:com.acme/video_played/jsonschema/2-1-0"
    for form in (_unstruct, _enriched):
        event = normalize_line(json.dumps(form(uri, {"videoId": "v-1", "seconds": 31.5})))
        assert (event["event_type"], event["event_name"]) == ("custom", "com.acme/video_played")
        assert event["properties"]["schema"] == uri
        assert (event["properties"]["video_id"], event["properties"]["seconds"]) == ("v-1", "31.5")
    with pytest.raises(RejectedEvent, match="unstruct_event: a self-describing event needs"):
        normalize_line(json.dumps({**SNOWPLOW, "event": "unstruct", "unstruct_event": "{not json"}))
    other = normalize_line(json.dumps({**SNOWPLOW, "event": "transaction_item", "ti_sku": "p-1"}))
    assert (other["event_type"], other["event_name"]) == ("custom", "transaction_item")


def test_snowplow_enrichment_contexts_fill_the_device_and_mark_bots():
    ping = {**SNOWPLOW, "event": "page_ping", "pp_yoffset_max": 10, "doc_height": 100}
    yauaa = {
        "schema": "iglu:nl.basjes/yauaa_context/jsonschema/1-0-4",
        "data": {"deviceClass": "Tablet", "operatingSystemNameVersion": "Android 14"},
    }
    event = normalize_line(json.dumps({**ping, "derived_contexts": json.dumps({"data": [yauaa]})}))
    assert (event["device"]["type"], event["device"]["os"]) == ("tablet", "Android 14")
    robot = {**yauaa, "data": {"deviceClass": "Robot", "operatingSystemName": "Cloud"}}
    event = normalize_line(json.dumps({**ping, "derived_contexts": {"data": [robot]}}))
    assert event["device"]["type"] == "bot" and event["properties"]["bot_reason"] == "yauaa deviceClass Robot"
    spider = {
        **ping,
        "contexts_com_iab_snowplow_spiders_and_robots_1": [
            {"spiderOrRobot": True, "category": "SPIDER_OR_ROBOT", "reason": "FAILED_UA_INCLUDE"}
        ],
    }
    assert normalize_line(json.dumps(spider))["device"]["type"] == "bot"
    parsed = {
        **ping,
        "contexts_com_snowplowanalytics_snowplow_ua_parser_context_1": [
            {"useragentFamily": "Googlebot", "osFamily": "Other", "deviceFamily": "Spider"}
        ],
    }
    assert normalize_line(json.dumps(parsed))["device"]["type"] == "bot"
    human = normalize_line(json.dumps(ping))
    assert human["device"]["type"] == "desktop" and "bot_reason" not in human["properties"]


def test_rules_and_models_may_read_the_custom_features_config_names_and_nothing_else(tmp_path):
    from spark_jobs.config import load_models, load_segments
    from spark_jobs.gold.content import load_content_rules

    config = tmp_path / "config"
    shutil.copytree(BUNDLED_FILE.parent, config)
    segments = config / "segments.yaml"
    segments.write_text(
        segments.read_text().replace(
            "segments:\n", 'segments:\n  - name: Coupon Hunter\n    when: "custom_coupon_applied >= 2"\n', 1
        )
    )
    assert load_segments(segments)[0].when == "custom_coupon_applied >= 2"
    models = config / "models.yaml"
    models.write_text(
        models.read_text().replace(
            "  features:\n", "  features:\n    - {column: custom_signed_up, transform: indicator}\n", 1
        )
    )
    assert load_models(models).features[0].column == "custom_signed_up"
    content = config / "content_rules.yaml"
    content.write_text(
        content.read_text().replace(
            "rules:\n",
            "rules:\n  - name: video-fans\n    priority: 5\n    trigger: 'custom_video_played >= 3'\n"
            '    adaptations: {tone: playful, format: video digest, cta: "Watch next"}\n',
            1,
        )
    )
    assert "custom_video_played" in dict(load_content_rules(content).variables)
    (config / "event_vocabulary.yaml").write_text("sources: {}\n")  # without custom_features: unknown again
    with pytest.raises(InvalidConfigError, match="custom_coupon_applied"):
        load_segments(segments)
    with pytest.raises(InvalidConfigError, match="unknown feature"):
        load_models(models)
    with pytest.raises(InvalidConfigError, match="custom_video_played"):
        load_content_rules(content)


def test_an_unmapped_form_schema_is_custom_but_still_never_keeps_typed_values(tmp_path):
    vocabulary = _vocabulary(
        tmp_path, lambda doc: doc["sources"]["snowplow"]["schemas"].pop("com.snowplowanalytics.snowplow/change_form")
    )
    event = normalize_line(json.dumps(_unstruct("iglu:com.snowplowanalytics.snowplow/change_form/jsonschema/1-0-0",
                                                {"formId": "f", "value": "ann@example.com", "schema": "x"})),
                           vocabulary=vocabulary)  # fmt: skip
    assert event["event_type"] == "custom" and "ann@example.com" not in json.dumps(event)
    assert event["properties"]["schema"].startswith("iglu:com.snowplowanalytics.snowplow/change_form/")


def test_client_session_ids_cannot_collide_whatever_the_client_sends():
    from spark_jobs.silver.sessions import client_session_id

    ids = {client_session_id("a1", "X|5"), client_session_id("a1", "X", 5), client_session_id("a1|X", "5"),
           client_session_id("a1", "X"), client_session_id("a2", "X")}  # fmt: skip
    assert len(ids) == 5 and all(i.startswith("c-") and len(i) == 34 for i in ids)
