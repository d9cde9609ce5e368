"""Tests for workload identity in the templates: the Principals / RequirePrincipal parameters.

Each template's PolicyParameter value is evaluated the way CloudFormation would (a small evaluator
for Ref, Fn::If/Not/Equals/Or, Fn::Join/Split, Fn::Sub with its variable map, and the Rules
functions Fn::EachMemberEquals/Contains) for sample parameter values, and the result must be the
policy `policy-sync.py --emit` renders for the same values (compared parsed) and must pass
`egress-proxy validate` when a build exists (target/release/egress-proxy, or $EGRESS_PROXY_BIN).
The templates' AllowedPattern and Rules are checked against good and bad entries, and
deploy/new-principal's output against its own hashes. No AWS calls.

Run: python3 deploy/tests/test_principals.py
"""
import hashlib
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import unittest

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATES = {"ecs": ROOT / "deploy" / "cloudformation" / "egress-tier.yaml",
             "nat": ROOT / "deploy" / "cloudformation" / "nat-instance.yaml"}
NEW_PRINCIPAL = ROOT / "deploy" / "new-principal"
BIN = pathlib.Path(os.environ.get("EGRESS_PROXY_BIN", ROOT / "target" / "release" / "egress-proxy"))
REGION = "eu-west-1"

spec = importlib.util.spec_from_file_location("policy_sync", ROOT / "deploy" / "policy-sync.py")
sync = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sync)


def h(s):
    return "sha256:" + hashlib.sha256(s.encode()).hexdigest()


class CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Fn::" + suffix: value}


CfnLoader.add_multi_constructor("!", _tag)


def load(path):
    return yaml.load(path.read_text(), Loader=CfnLoader)


class Cfn:
    """Just enough of CloudFormation's intrinsic functions for the policy parameter and Rules."""

    def __init__(self, template, params):
        self.t = template
        self.params = {}
        for name, decl in template["Parameters"].items():
            value = params.get(name, decl.get("Default"))
            if decl["Type"] == "CommaDelimitedList" and isinstance(value, str):
                value = value.split(",")
            self.params[name] = value
        self.params["AWS::Region"] = REGION

    def cond(self, name):
        return self.ev(self.t["Conditions"][name])

    def ev(self, n):
        if isinstance(n, list):
            return [self.ev(x) for x in n]
        if not isinstance(n, dict):
            return n
        (fn, a), = n.items()
        if fn == "Ref":
            return self.params[a]
        if fn == "Condition":
            return self.cond(a)
        if fn == "Fn::If":
            return self.ev(a[1] if self.cond(a[0]) else a[2])
        if fn == "Fn::Not":
            return not self.ev(a[0])
        if fn == "Fn::Equals":
            return self.ev(a[0]) == self.ev(a[1])
        if fn == "Fn::Or":
            return any(self.ev(x) for x in a)
        if fn == "Fn::And":
            return all(self.ev(x) for x in a)
        if fn == "Fn::Join":
            return a[0].join(self.ev(a[1]))
        if fn == "Fn::Split":
            return self.ev(a[1]).split(a[0])
        if fn == "Fn::EachMemberEquals":
            return all(x == a[1] for x in self.ev(a[0]))
        if fn == "Fn::Contains":
            return a[1] in self.ev(a[0])
        if fn == "Fn::Sub":
            text, variables = (a, {}) if isinstance(a, str) else (a[0], {k: self.ev(v) for k, v in a[1].items()})

            def sub(m):
                name = m.group(1)
                if name.startswith("!"):
                    return "${" + name[1:] + "}"
                return str(variables[name] if name in variables else self.params[name])
            return re.sub(r"\$\{([^}]*)\}", sub, text)
        raise NotImplementedError(fn)

    def policy(self):
        return self.ev(self.t["Resources"]["PolicyParameter"]["Properties"]["Value"])

    def rule_failures(self):
        failed = []
        for name, rule in self.t.get("Rules", {}).items():
            if "RuleCondition" in rule and not self.ev(rule["RuleCondition"]):
                continue
            failed += [name for a in rule["Assertions"] if not self.ev(a["Assert"])]
        return failed


CASES = {
    "none": ("", "false"),
    "one": (f"etl={h('t1')}", "true"),
    "rotation": (f"etl={h('t1')},glue.nightly_2={h('old')};{h('new')}", "true"),
    "optional": (f"ci={h('c')}", "false"),
}


def validate(text):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    try:
        return subprocess.run([str(BIN), "validate", "--config", f.name], capture_output=True, text=True)
    finally:
        os.unlink(f.name)


def have_bin():
    return BIN.is_file() and subprocess.run([str(BIN), "validate", "--help"], capture_output=True).returncode == 0


class Templates(unittest.TestCase):
    def test_rendered_policy_matches_emit_and_validates(self):
        config = yaml.safe_load(sync.CONFIG.read_text())
        for flavour, path in TEMPLATES.items():
            t = load(path)
            for case, (principals, require) in CASES.items():
                for http in ("true", "false"):
                    with self.subTest(flavour=flavour, case=case, http=http):
                        cfn = Cfn(t, {"Principals": principals, "RequirePrincipal": require,
                                      "AllowUpstreamHttp": http})
                        self.assertEqual(cfn.rule_failures(), [])
                        text = cfn.policy()
                        self.assertNotIn("${", text)
                        emitted = sync.render(config, flavour, REGION, http=http == "true",
                                              principals=principals.split(","), require=require)
                        self.assertEqual(yaml.safe_load(text), yaml.safe_load(emitted))
                        got = yaml.safe_load(text)
                        want = {}
                        for entry in filter(None, principals.split(",")):
                            name, hashes = entry.split("=")
                            want[name] = hashes.split(";")
                        self.assertEqual(got["principals"], want)
                        self.assertIs(got["require_principal"], require == "true")
                        if have_bin():
                            r = validate(text)
                            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_allowed_pattern_and_rules(self):
        good = ["", f"a={h('x')}", f"A.b_c-9={h('x')};{h('y')}", "n" * 64 + "=" + h("x")]
        bad = ["a", f"a={h('x')[7:]}", f"a=SHA256:{h('x')[7:]}", f"a={h('x').upper()}",
               f"a b={h('x')}", "n" * 65 + "=" + h("x"), f"a={h('x')};{h('y')};{h('z')}",
               f'a"={h("x")}', f"a={h('x')}\nallow: []", f"a={h('x')};"]
        for flavour, path in TEMPLATES.items():
            t = load(path)
            pattern = t["Parameters"]["Principals"]["AllowedPattern"]
            self.assertEqual(pattern, sync.PRINCIPAL_ENTRY, f"{flavour}: AllowedPattern differs from policy-sync")
            for e in good:
                self.assertTrue(re.fullmatch(pattern, e), e)
            for e in bad:
                self.assertFalse(re.fullmatch(pattern, e), e)
            rules = lambda p, r="false": Cfn(t, {"Principals": p, "RequirePrincipal": r}).rule_failures()
            self.assertEqual(rules(f"a={h('x')},"), ["PrincipalsHaveNoEmptyEntry"])
            self.assertEqual(rules(f",a={h('x')}"), ["PrincipalsHaveNoEmptyEntry"])
            self.assertEqual(rules("", "true"), ["RequirePrincipalNeedsPrincipals"])
            self.assertEqual(rules(f"a={h('x')}", "true"), [])

    @unittest.skipUnless(have_bin(), "no target/release/egress-proxy")
    def test_proxy_refuses_what_cloudformation_cannot_catch(self):
        config = yaml.safe_load(sync.CONFIG.read_text())
        dup = sync.render(config, "ecs", REGION, principals=[f"a={h('x')}", f"a={h('y')}"], require="true")
        self.assertEqual(validate(dup).returncode, 2, "duplicate principal names must be refused")


class NewPrincipal(unittest.TestCase):
    def run_it(self, *args, stdin=None):
        return subprocess.run([sys.executable, str(NEW_PRINCIPAL), *args], input=stdin,
                              capture_output=True, text=True)

    def test_generate_and_hash(self):
        r = self.run_it("glue-etl", "--proxy-url", "http://internal-egress-1.elb.eu-west-1.amazonaws.com:3128")
        self.assertEqual(r.returncode, 0, r.stderr)
        value = json.loads(r.stdout)
        token = value["token"]
        self.assertRegex(token, r"^[0-9a-f]{64}$")
        self.assertEqual(value["https_proxy"],
                         f"http://glue-etl:{token}@internal-egress-1.elb.eu-west-1.amazonaws.com:3128")
        self.assertNotIn(token, r.stderr, "the token must not reach the policy lines")
        entry = r.stderr.strip().splitlines()[-1].strip()
        self.assertEqual(entry, f"glue-etl={h(token)}")
        self.assertTrue(re.fullmatch(sync.PRINCIPAL_ENTRY, entry))
        # --hash on the stored value gives the same lines; with --previous, the rotation pair.
        again = self.run_it("--hash", stdin=r.stdout)
        self.assertEqual(again.stdout, r.stderr)
        rot = self.run_it("--hash", "--previous", h("old"), stdin=r.stdout)
        entry = rot.stdout.strip().splitlines()[-1].strip()
        self.assertEqual(entry, f"glue-etl={h('old')};{h(token)}")
        self.assertTrue(re.fullmatch(sync.PRINCIPAL_ENTRY, entry))
        self.assertIn(f'glue-etl: ["{h("old")}", "{h(token)}"]', rot.stdout)

    def test_refusals(self):
        self.assertNotEqual(self.run_it("bad name", "--proxy-url", "http://p:3128").returncode, 0)
        self.assertNotEqual(self.run_it("a", "--proxy-url", "https://p:3128").returncode, 0)
        self.assertNotEqual(self.run_it("a", "--proxy-url", "http://u:p@p:3128").returncode, 0)
        self.assertNotEqual(self.run_it("a", "--proxy-url", "http://p").returncode, 0)
        self.assertNotEqual(self.run_it("a", "--proxy-url", "http://p:3128", "--previous", "abc").returncode, 0)


if __name__ == "__main__":
    unittest.main(verbosity=1)
