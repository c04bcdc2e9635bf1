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
        ({"channels": ["sms"]}, "must be a non-empty list of ['email', 'crm']"),
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
