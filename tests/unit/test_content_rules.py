"""config/content_rules.yaml is checked at load: CEL syntax, variables, types and shape, naming the rule."""

from __future__ import annotations

import pytest
import yaml

from spark_jobs.config import InvalidConfigError
from spark_jobs.gold.content import load_content_rules
from spark_jobs.settings import REPO_ROOT

pytestmark = pytest.mark.unit
SHIPPED = REPO_ROOT / "config" / "content_rules.yaml"


def test_shipped_rules_load_in_priority_order():
    rules = load_content_rules(SHIPPED)
    priorities = [r.priority for r in rules.rules]
    assert priorities == sorted(priorities, reverse=True)
    assert rules.rules[-1].trigger == "true" and rules.channels == ("email", "crm")
    assert len(rules.version) == 12


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"trigger": "segment ==="}, "is not valid CEL"),
        ({"trigger": "segmnt == 'High Intent'"}, "unknown variable(s) ['segmnt']"),
        ({"trigger": "intent_score > 'high'"}, "fails on typed sample values"),
        ({"trigger": "local_hour + 1"}, "not true or false"),
        ({"trigger": "__import__('os').system('true')"}, "Undefined variable or function: '__import__'"),
        ({"channels": ["sms"]}, "must be a non-empty list of ['email', 'crm', 'web', 'app']"),
        ({"adaptations": {"tone": "x", "format": "y"}}, "adaptations must have exactly"),
        ({"priority": "high"}, "priority 'high' must be a whole number"),
        ({"colour": "red"}, "unknown keys ['colour']"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_rule_and_the_problem(tmp_path, change, problem):
    doc = yaml.safe_load(SHIPPED.read_text())
    doc["rules"][1].update(change)
    path = tmp_path / "content_rules.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InvalidConfigError) as caught:
        load_content_rules(path)
    assert f"rule '{doc['rules'][1]['name']}'" in str(caught.value)
    assert problem in str(caught.value)


def test_rule_names_are_unique(tmp_path):
    doc = yaml.safe_load(SHIPPED.read_text())
    doc["rules"][2]["name"] = doc["rules"][0]["name"]
    path = tmp_path / "content_rules.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InvalidConfigError, match="defined twice"):
        load_content_rules(path)


def _context(rules, **known):
    """Every variable null, counts 0 (as gold and the decision API fill them), then what is known."""
    names = dict(rules.variables)
    base = {n: (0 if n.startswith(("moments_", "custom_")) else None) for n in names}
    return base | known


def test_the_seeds_pizza_example_picks_by_local_time_and_distance_for_the_live_channels():
    from spark_jobs.gold.content import choose, compile_rules, distance_km, matching

    rules = load_content_rules(SHIPPED)
    assert rules.live_channels == ("web", "app") and [p.key for p in rules.places] == ["trattoria"]
    programs = compile_rules(rules)
    place = rules.places[0]
    near = distance_km(48.8638, 2.3370, place.lat, place.lon)  # the Palais-Royal, round the corner
    assert 0.3 < near < 0.4 and 3.1 < distance_km(48.8584, 2.2945, place.lat, place.lon) < 3.2  # Eiffel Tower
    evening = _context(rules, search_query="best PIZZA", local_hour=19, distance_km_trattoria=near)
    night = _context(rules, search_query="best pizza", local_hour=3, distance_km_trattoria=350.0)
    noon_far = _context(rules, search_query="best pizza", local_hour=12, distance_km_trattoria=350.0)
    picks = {name: choose(matching(programs, c)[0], "web").name
             for name, c in (("evening", evening), ("night", night), ("noon", noon_far))}  # fmt: skip
    assert picks == {"evening": "local-pizza-offer", "night": "late-night-snack", "noon": "default-web"}
    # the live-only variables are null in gold's batch picks: those rules never match there
    matched, failed = matching(programs, _context(rules, segment="High Intent", intent_score=85.0))
    assert [r.name for r in matched][:1] == ["high-intent-offer"] and failed == []
    assert choose(matched, "email").name == "high-intent-offer" and choose(matched, "web").name == "high-intent-offer"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"live_channels": ["email"]}, "not batch channels"),
        ({"places": {"Trattoria": {"name": "x", "lat": 1, "lon": 2}}}, "lower-case letters"),
        ({"places": {"far": {"name": "x", "lat": 91, "lon": 2}}}, "degrees within"),
        ({"places": {"far": {"name": "x", "lat": 1}}}, "exactly name, lat and lon"),
    ],
)
def test_bad_live_channels_and_places_are_refused_naming_them(tmp_path, change, problem):
    doc = yaml.safe_load(SHIPPED.read_text())
    doc.update(change)
    path = tmp_path / "content_rules.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InvalidConfigError, match=problem):
        load_content_rules(path)
