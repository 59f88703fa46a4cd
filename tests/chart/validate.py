"""Validates rendered chart manifests against the Kubernetes OpenAPI schemas
that kubernetes-validate ships, for every Kubernetes minor version in a range.

Strict: a field the schema does not know is an error, as with the API
server's fieldValidation=Strict. A kind the schemas do not know (a custom
resource) fails, unless it is named with --custom GROUP/VERSION/KIND: those
are listed as not validated, since no schema for them is available offline.

Usage: python validate.py --from 1.29 --to 1.34 [--custom G/V/K]... FILE...
       python validate.py --self-test --from 1.29 --to 1.34 FILE
Exit 0 when every object validates against every version, else 1.
"""

import argparse
import copy
import sys

import yaml
from kubernetes_validate import utils
from packaging.version import Version


def minors_in_range(low, high):
    """Every version kubernetes-validate ships between low and high (by minor)."""
    lo, hi = Version(low), Version(high)
    # all_versions() names each version twice (plain and strict schemas).
    found = sorted(
        {
            v
            for v in utils.all_versions()
            if lo <= Version(utils.major_minor(v)) <= hi and not Version(v).is_prerelease
        },
        key=Version,
    )
    wanted = [f"1.{m}" for m in range(lo.minor, hi.minor + 1)]
    have = {utils.major_minor(v) for v in found}
    missing = [w for w in wanted if w not in have]
    if missing:
        sys.exit(f"kubernetes-validate {utils.__version__} ships no schemas for {', '.join(missing)}")
    return found


def load(paths):
    objects = []
    for path in paths:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    objects.append((path, doc))
    if not objects:
        sys.exit(f"no objects in {', '.join(paths)}")
    return objects


def gvk(obj):
    return f"{obj.get('apiVersion')}/{obj.get('kind')}"


def name(obj):
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')} {ns + '/' if ns else ''}{meta.get('name')}"


def check(objects, versions, custom):
    """Returns (errors, not_validated) as lists of lines."""
    errors, skipped = [], []
    for path, obj in objects:
        for version in versions:
            try:
                utils.validate(obj, version, strict=True)
            except utils.ValidationError as e:
                at = ".".join(str(p) for p in e.path) or "(root)"
                errors.append(f"{path}: {name(obj)} against {utils.major_minor(version)}: {at}: {e.message}")
            except utils.SchemaNotFoundError:
                if gvk(obj) in custom:
                    line = f"{path}: {name(obj)} ({gvk(obj)}): custom resource, no schema offline: not validated"
                    if line not in skipped:
                        skipped.append(line)
                else:
                    errors.append(
                        f"{path}: {name(obj)}: Kubernetes {utils.major_minor(version)} has no kind {gvk(obj)}"
                        " (a custom resource must be listed with --custom)"
                    )
    return errors, skipped


def self_test(objects, versions):
    """The validator must refuse what the API server would: an unknown
    field, a wrong type, a missing required field, an unknown kind."""
    deployment = next((o for _, o in objects if o.get("kind") == "Deployment"), None)
    if deployment is None:
        sys.exit("self-test: no Deployment among the objects")
    broken = []
    d = copy.deepcopy(deployment)
    d["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    broken.append(("an unknown field", d))
    d = copy.deepcopy(deployment)
    d["spec"]["replicas"] = "two"
    broken.append(("a string for an integer", d))
    d = copy.deepcopy(deployment)
    del d["spec"]["selector"]
    broken.append(("a missing required field", d))
    d = copy.deepcopy(deployment)
    d["apiVersion"] = "apps/v1beta9"
    broken.append(("an unknown apiVersion", d))
    failed = 0
    for what, obj in broken:
        errors, _ = check([("self-test", obj)], versions, set())
        if len(errors) != len(versions):
            print(f"self-test: a Deployment with {what} was not refused by every version: {errors}")
            failed = 1
        else:
            print(f"self-test: a Deployment with {what} is refused: {errors[0].split(': ', 2)[2]}")
    return failed


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--from", dest="low", required=True)
    p.add_argument("--to", dest="high", required=True)
    p.add_argument("--custom", action="append", default=[], help="GROUP/VERSION/KIND not validated")
    p.add_argument("--self-test", action="store_true")
    p.add_argument("files", nargs="+")
    args = p.parse_args()
    versions = minors_in_range(args.low, args.high)
    objects = load(args.files)
    if args.self_test:
        return self_test(objects, versions)
    errors, skipped = check(objects, versions, set(args.custom))
    for line in skipped:
        print(f"NOT VALIDATED {line}")
    for line in errors:
        print(f"ERROR {line}")
    checked = sum(1 for _, o in objects if gvk(o) not in args.custom)
    print(
        f"{len(objects)} objects from {', '.join(args.files)}: {checked} checked against Kubernetes "
        f"{', '.join(utils.major_minor(v) for v in versions)} (strict), {len(skipped)} not validated, "
        f"{len(errors)} errors"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
