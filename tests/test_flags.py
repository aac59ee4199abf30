"""The flag file model: the lab's flags.yaml and a current-demo rate-variant file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from labkit.errors import BadInput, NotFound
from labkit.flags import FlagFile

ROOT = Path(__file__).resolve().parents[1]
LAB_YAML = (ROOT / "labkit" / "sandbox" / "flags.yaml").read_text()
RATE_JSON = (Path(__file__).parent / "data" / "flags-rate.json").read_text()


def only_changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(a) == len(b), "line count changed"
    return [(x, y) for x, y in zip(a, b) if x != y]


# ---- reading and listing ---------------------------------------------------------------------------
def test_lab_manifest_lists_flags_with_variants_and_defaults():
    ff = FlagFile.from_manifest(LAB_YAML)
    keys = [f.key for f in ff.flags]
    assert keys[:2] == ["productCatalogFailure", "recommendationCacheFailure"]
    assert len(keys) == 11
    cart = ff.flag("cartFailure")
    assert cart.description == "Fail cart service"
    assert cart.state == "ENABLED"
    assert cart.variants == {"on": True, "off": False}
    assert cart.default_variant == "off" and cart.default_value is False
    assert not cart.has_targeting
    assert ff.variants("paymentFailure")["90%"] == 0.95
    assert ff.name == "flagd-config" and ff.key == "demo.flagd.json"


def test_rate_file_variants_are_numbers_strings_and_objects():
    ff = FlagFile.from_json(RATE_JSON)
    assert list(ff.variants("cartFailure")) == ["100%", "90%", "75%", "50%", "25%", "10%", "off"]
    assert ff.variants("cartFailure")["25%"] == 0.25
    assert ff.flag("productCatalogTheme").variants["fancy"] == {"color": "#663399", "font": "serif"}
    ad = ff.flag("adHighCpu")
    assert ad.has_targeting and ad.state == "DISABLED" and ad.description == ""


def test_configmap_without_the_data_key_is_not_found():
    with pytest.raises(NotFound) as err:
        FlagFile.from_configmap({"other.json": "{}"})
    msg = str(err.value)
    assert "flagd-config" in msg and "demo.flagd.json" in msg and "kubectl apply -f flags.yaml" in msg


# ---- changing one default ------------------------------------------------------------------------
def test_set_default_on_lab_file_changes_exactly_one_line():
    ff = FlagFile.from_manifest(LAB_YAML)
    change = ff.set_default_variant("cartFailure", "on")
    assert change.changed
    assert (change.old_variant, change.new_variant) == ("off", "on")
    assert (change.old_value, change.new_value) == (False, True)
    assert only_changed_lines(ff.to_json(), change.after.to_json()) == [
        ('      "defaultVariant": "off"\n', '      "defaultVariant": "on"\n')]
    assert change.after.flag("cartFailure").default_variant == "on"
    assert ff.flag("cartFailure").default_variant == "off", "the original value is untouched"
    # every other flag identical
    before, after = json.loads(ff.to_json()), json.loads(change.after.to_json())
    after["flags"]["cartFailure"]["defaultVariant"] = "off"
    assert before == after


def test_diff_is_a_readable_unified_diff():
    change = FlagFile.from_manifest(LAB_YAML).set_default_variant("cartFailure", "on")
    diff = change.diff
    assert diff.startswith("--- a/demo.flagd.json\n+++ b/demo.flagd.json\n@@")
    assert '-      "defaultVariant": "off"' in diff and '+      "defaultVariant": "on"' in diff
    assert [l for l in diff.splitlines() if l.startswith(("+", "-")) and l[:3] not in ("+++", "---")] \
        == ['-      "defaultVariant": "off"', '+      "defaultVariant": "on"']


@pytest.mark.parametrize("variant", ["10%", "100%", "25%"])
def test_rate_variant_edit_is_byte_exact_except_the_value(variant):
    ff = FlagFile.from_json(RATE_JSON)
    change = ff.set_default_variant("cartFailure", variant)
    text = change.after.to_json()
    # compact spelling "defaultVariant":"off" kept compact; only the token changes
    assert text == RATE_JSON.replace('"defaultVariant":"off"', f'"defaultVariant":"{variant}"', 1)
    assert change.new_value == ff.variants("cartFailure")[variant]
    data = json.loads(text)
    assert list(data) == ["$schema", "metadata", "$evaluators", "flags"]
    assert data["$evaluators"] == json.loads(RATE_JSON)["$evaluators"]


def test_flag_with_targeting_metadata_and_odd_spacing():
    ff = FlagFile.from_json(RATE_JSON)
    change = ff.set_default_variant("adHighCpu", "on")
    # the flag's own metadata also says "defaultVariant": it must stay "off"
    assert only_changed_lines(RATE_JSON, change.after.to_json()) == [
        ('      "defaultVariant": "off",\n', '      "defaultVariant": "on",\n')]
    after = json.loads(change.after.to_json())["flags"]["adHighCpu"]
    assert after["metadata"]["defaultVariant"] == "off"
    assert after["targeting"] == {"if": [{"$ref": "isBeta"}, "on", None]}

    spaced = ff.set_default_variant("productCatalogTheme", "fancy").after.to_json()
    assert '"defaultVariant"  :  "fancy"' in spaced
    assert json.loads(spaced)["flags"]["productCatalogTheme"]["variants"]["fancy"]["font"] == "serif"

    # a description that quotes "defaultVariant": "off" is not mistaken for the field
    img = ff.set_default_variant("imageSlowLoad", "5sec").after.to_json()
    assert '(\\"defaultVariant\\": \\"off\\")' in img
    assert json.loads(img)["flags"]["imageSlowLoad"]["defaultVariant"] == "5sec"


def test_same_variant_is_no_change():
    ff = FlagFile.from_json(RATE_JSON)
    change = ff.set_default_variant("cartFailure", "off")
    assert not change.changed and change.diff == "" and change.after.text == RATE_JSON


def test_missing_default_variant_is_added_next_to_the_flag():
    text = '{\n  "flags": {\n    "f": {\n      "state": "ENABLED",\n      "variants": {"a": 1, "b": 2}\n    }\n  }\n}\n'
    change = FlagFile.from_json(text).set_default_variant("f", "b")
    assert change.old_variant is None
    assert change.after.text == text.replace('"b": 2}\n', '"b": 2},\n      "defaultVariant": "b"\n')


# ---- bad input ---------------------------------------------------------------------------------
def test_unknown_flag_suggests_the_nearest():
    ff = FlagFile.from_manifest(LAB_YAML)
    with pytest.raises(BadInput) as err:
        ff.set_default_variant("cartFailur", "on")
    assert "Did you mean 'cartFailure'?" in str(err.value)


def test_unknown_variant_lists_the_allowed_ones():
    ff = FlagFile.from_json(RATE_JSON)
    with pytest.raises(BadInput) as err:
        ff.set_default_variant("cartFailure", "on")
    msg = str(err.value)
    assert "'on'" in msg and "cartFailure" in msg
    for v in ["100%", "90%", "75%", "50%", "25%", "10%", "off"]:
        assert v in msg


def test_malformed_json_says_where_and_refuses():
    broken = RATE_JSON.replace('"90%": 0.9,', '"90%": 0.9', 1)
    with pytest.raises(BadInput) as err:
        FlagFile.from_json(broken)
    msg = str(err.value)
    line = broken[:broken.index('"75%"')].count("\n") + 1
    assert f"line {line}, column 9" in msg and "refusing to write" in msg


def test_malformed_json_in_manifest_gives_manifest_line_too():
    broken = LAB_YAML.replace('"Fail cart service",', '"Fail cart service"', 1)
    with pytest.raises(BadInput) as err:
        FlagFile.from_manifest(broken)
    msg = str(err.value)
    manifest_line = broken[:broken.index('"state": "ENABLED"', broken.index("Fail cart"))].count("\n") + 1
    assert f"line {manifest_line}, column 11 of the manifest" in msg
    assert "refusing to write" in msg


def test_malformed_yaml_says_where():
    broken = LAB_YAML.replace("kind: ConfigMap", "kind: ConfigMap\n  bad: [", 1)
    with pytest.raises(BadInput) as err:
        FlagFile.from_manifest(broken)
    assert "line" in str(err.value) and "column" in str(err.value) and "refusing to write" in str(err.value)


def test_json_that_is_not_a_flag_file():
    with pytest.raises(BadInput, match="flags"):
        FlagFile.from_json('{"flag": {}}')


# ---- writing back ----------------------------------------------------------------------------------
def test_manifest_round_trip_keeps_metadata_and_json_text():
    ff = FlagFile.from_manifest(LAB_YAML)
    after = ff.set_default_variant("cartFailure", "on").after
    manifest = after.to_manifest()
    doc = yaml.safe_load(manifest)
    orig = yaml.safe_load(LAB_YAML)
    assert doc["apiVersion"] == "v1" and doc["kind"] == "ConfigMap"
    assert doc["metadata"] == orig["metadata"]
    assert doc["data"]["demo.flagd.json"] == after.to_json()
    assert "demo.flagd.json: |\n" in manifest  # a literal block a human can read
    assert FlagFile.from_manifest(manifest).text == after.text


def test_manifest_from_json_and_from_live_metadata():
    ff = FlagFile.from_json(RATE_JSON)
    doc = yaml.safe_load(ff.to_manifest())
    assert doc["metadata"] == {"name": "flagd-config", "namespace": "default"}
    assert doc["data"]["demo.flagd.json"] == RATE_JSON
    live = {"name": "flagd-config", "namespace": "lab", "resourceVersion": "42", "uid": "u",
            "managedFields": [{}], "labels": {"a": "b"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}
    doc = yaml.safe_load(ff.to_manifest(live))
    assert doc["metadata"] == {"name": "flagd-config", "namespace": "lab", "labels": {"a": "b"}}


@pytest.mark.parametrize("text", [
    '{"flags": {}}',                     # no trailing newline
    '{"flags": {}}\n\n\n',               # several
    ' {"flags": {}}\n',                  # leading space needs an indentation indicator
    '{"flags": {"x": {"description": "tab\\there", "variants": {}}}}\n',
])
def test_manifest_literal_block_is_exact(text):
    assert yaml.safe_load(FlagFile.from_json(text).to_manifest())["data"]["demo.flagd.json"] == text
