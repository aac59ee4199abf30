"""The demo releases labkit knows: what each one's cart reads of `cartFailure`, and its own flag file.

What the cart reads differs between releases (../shared/reference/flagd-consumers.md §1.1):
- 2.2.0 (Jan 2026): `GetBooleanValueAsync("cartFailure", false)`, OpenFeature.Contrib.Providers.Flagd
  0.3.4 over flagd.evaluation.v1; variants `on: true` / `off: false`, the lab page's `flags.yaml` shape;
  `on` fails every EmptyCart (the bad store), not the lab page's "1 in 10".
- 3.0.0 (Jul 2026, what the lab's unpinned chart 0.41.0 installs today): `GetDoubleValueAsync("cartFailure",
  0)`, OpenFeature.Providers.Flagd 0.7.2 over flagd.evaluation.v2 `ResolveFloat`; variants `off` 0 … `100%` 1.
Both read over RPC on flagd:8013 with no context and no cache, and fall back to the code default on any
error (a TYPE_MISMATCH included). Each JSON file here is that tag's `src/flagd/demo.flagd.json`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

FLAG = "cartFailure"
CART_IMAGE = "ghcr.io/open-telemetry/demo:{version}-cart"
_HERE = Path(__file__).parent


@dataclass(frozen=True)
class Release:
    version: str          # the demo's tag, also its images' tag prefix
    chart: str            # the opentelemetry-demo Helm chart that deploys it ("" where not checked)
    cart_kind: str        # flagd's typed read the cart makes: "float" or "boolean"
    cart_default: object  # the cart's code default: what it reads on any error
    cart_method: str      # the gRPC method on flagd:8013
    lab_on_variant: str   # the variant that is the lab page's `on` (3.0.0: 10%, 1 in 10 empties fail)
    failure_rates: tuple[tuple[object, float], ...]  # value read -> share of EmptyCart calls that fail
    # The flag its load generator asks flagd (OFREP) for on every iteration, sending nothing while it
    # is missing or <= 0 (3.0.0's k6 script.js httpScenario/browserScenario); None: it reads none.
    traffic_flag: str | None = None

    @property
    def cart_image(self) -> str:
        return CART_IMAGE.format(version=self.version)

    @property
    def cart_call(self) -> str:
        """The cart's own line of code, as the demo writes it."""
        fn = "GetDoubleValueAsync" if self.cart_kind == "float" else "GetBooleanValueAsync"
        default = "0" if self.cart_kind == "float" else "false"
        return f'{fn}("{FLAG}", {default})'

    def flags_json(self) -> str:
        """This release's own flag file (src/flagd/demo.flagd.json at its tag)."""
        return (_HERE / f"demo-{self.version}.flagd.json").read_text(encoding="utf-8")

    def flags(self) -> dict:
        """This release's flags by key, as its own file defines them."""
        return json.loads(self.flags_json())["flags"]

    def flag(self, key: str = FLAG) -> dict:
        """This release's definition of `key` (`cartFailure` by default); BadInput if it has none."""
        flags = self.flags()
        if key not in flags:
            from labkit.errors import BadInput
            raise BadInput(f"demo {self.version}'s flag file has no flag {key!r}")
        return flags[key]

    def resting_variants(self) -> dict[str, str]:
        """Each flag's defaultVariant in this release's own file: what a fresh install serves."""
        return {k: f.get("defaultVariant") for k, f in self.flags().items()}

    def configmap_yaml(self) -> str:
        """The ConfigMap `flagd-config` as the chart installs it with this release's file (JSON is YAML)."""
        return json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "flagd-config", "labels": {
                               "app.kubernetes.io/part-of": "opentelemetry-demo"}},
                           "data": {"demo.flagd.json": self.flags_json()}}, indent=1)

    def failure_rate(self, value) -> float:
        """The share of EmptyCart calls that fail when the cart has read `value`."""
        if self.cart_kind == "float":
            return max(0.0, min(1.0, float(value))) if _number(value) else 0.0
        return dict(self.failure_rates).get(value is True, 0.0)

    def load_generator_sends(self, value) -> bool:
        """Whether its load generator sends traffic when flagd serves `value` for `traffic_flag` (None:
        not served, e.g. missing). 3.0.0's k6 gate is JavaScript's `(value || 0) <= 0` -> pause: true
        is 1, a numeric string its number, any other string or an object NaN (never <= 0)."""
        if self.traffic_flag is None:
            return True
        if not value:
            return False
        if isinstance(value, (bool, int, float)):
            return float(value) > 0
        if isinstance(value, str):
            try:
                return float(value.strip()) > 0
            except ValueError:
                return True
        return True

    def reads_kind(self, variant_value) -> bool:
        """Would flagd answer this release's typed read of a variant holding `variant_value`?"""
        return kind_of_value(variant_value) in (("float", "int") if self.cart_kind == "float" else ("boolean",))


RELEASES = {
    "3.0.0": Release("3.0.0", "0.41.0", "float", 0, "flagd.evaluation.v2.Service/ResolveFloat", "10%", (),
                     traffic_flag="loadGeneratorTraffic"),
    # 2.2.0's cart sends EVERY EmptyCart to the bad store (badhost:1234) while `on` reads true
    # (CartService.cs:83 and Program.cs:60 at tag 2.2.0): all fail. The lab page's "1 in 10" is not this.
    "2.2.0": Release("2.2.0", "", "boolean", False, "flagd.evaluation.v1.Service/ResolveBoolean", "on",
                     ((True, 1.0), (False, 0.0))),
}
DEFAULT = "3.0.0"  # what the lab's unpinned `helm upgrade -i ... open-telemetry/opentelemetry-demo` installs


def get(version: str | None = None) -> Release:
    """A known release by its tag (None: the default); a LabError naming the known ones otherwise."""
    version = (version or DEFAULT).strip().lstrip("v")
    if version not in RELEASES:
        from labkit.errors import BadInput
        raise BadInput(f"labkit knows the demo releases {', '.join(sorted(RELEASES))}; got {version!r}. "
                       f"Pick one of those (LABKIT_DEMO_RELEASE=3.0.0).")
    return RELEASES[version]


def from_image(image: str | None) -> Release | None:
    """The release a cart image belongs to (ghcr.io/open-telemetry/demo:3.0.0-cart); None if unknown."""
    found = re.search(r":v?(\d+\.\d+\.\d+)-cart(?:@|$)", image or "")
    if not found:
        return None
    version = found[1]
    if version in RELEASES:
        return RELEASES[version]
    major = int(version.split(".")[0])  # a release labkit has not met: the nearest by its cart's read
    return RELEASES["3.0.0"] if major >= 3 else RELEASES["2.2.0"]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def kind_of_value(value) -> str:
    """flagd's type of one variant value: boolean, string, float (JSON numbers are float64), object."""
    if isinstance(value, bool):
        return "boolean"
    if _number(value):
        return "float"
    if isinstance(value, str):
        return "string"
    return "object"


def kind_of_variants(variants: dict) -> str | None:
    """The one type all of a flag's variants share, None when they are mixed or there are none."""
    kinds = {kind_of_value(v) for v in (variants or {}).values()}
    return kinds.pop() if len(kinds) == 1 else None


__all__ = ["DEFAULT", "FLAG", "RELEASES", "Release", "from_image", "get", "kind_of_value", "kind_of_variants"]
