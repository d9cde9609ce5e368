#!/usr/bin/env python3
"""Keep what the CloudFormation templates derive from config/egress.yaml in step with it.

config/egress.yaml is the one source of truth for the allowlist. The templates under
deploy/cloudformation/ carry generated copies of it between marker comments; this script renders
them, so the proxy's policy, the DNS firewall and the S3 endpoint policy can never disagree:

  # policy:begin ... # policy:end          the SSM policy (port-80 rules kept), used when the stack's
                                           AllowUpstreamHttp is "true"
  # policy-no80:begin ... # policy-no80:end  the same without port 80, the default: the security
                                           groups and NACLs then open 443 only
  # dns:begin ... # dns:end                the Route 53 Resolver DNS Firewall allow list: every
                                           allowlisted name (exact, or `*.suffix` for a wildcard
                                           rule), in both templates
  # s3:begin ... # s3:end                  the buckets behind allowlisted S3 host names, for the
                                           proxy route tables' S3 gateway endpoint policy
                                           (s3:GetObject on exactly those buckets)
  # watchdog:begin ... # watchdog:end      deploy/nat-watchdog.sh inside nat-instance.yaml's user
                                           data (one source, tested by deploy/tests/)

Rendering rules:
  - `allow`, `upstream`, `resolver`, `timeouts`, `reload`, `limits`, `mode` are copied unchanged;
  - `listeners` is replaced by the deployment's own (the shipped file binds loopback for a safe
    quick start; a deployed proxy must listen on the task/instance address);
  - `principals` and `require_principal` come from the stack, never from config/egress.yaml (a
    value there is ignored, like `listeners`): the template's block is an `!Sub` with the
    placeholders `${PrincipalsYaml}` and `${RequirePrincipal}`, filled from the stack parameters
    `Principals` (CommaDelimitedList of `NAME=sha256:HEX`, or `NAME=sha256:OLD;sha256:NEW` during a
    rotation) and `RequirePrincipal` (true|false). The expression that turns the list into a YAML
    flow mapping is generated here too (PRINCIPALS_VARS), so both templates and both port variants
    carry the same one; principals_yaml() is its Python twin, used by --emit and
    deploy/tests/test_principals.py (which evaluates the template's expression and compares);
  - the Amazon Linux S3 repository hosts name the AWS region; their `us-east-1` is replaced by
    CloudFormation's `${AWS::Region}` so the stack's region is used (config/egress.yaml asks for
    this). Docker's S3 host is left alone: it names Docker's bucket, not ours.

  python3 deploy/policy-sync.py            # rewrite the generated blocks
  python3 deploy/policy-sync.py --check    # exit 1 if any block differs (run by check.sh)
  python3 deploy/policy-sync.py --emit ecs|nat [--region R] [--no-http]   # one rendered policy
        [--principals 'etl=sha256:HEX,ci=sha256:OLD;sha256:NEW'] [--require-principal true]
                                           # ... with the stack parameters Principals / RequirePrincipal
  python3 deploy/policy-sync.py --emit-dns [--region R]     # the DNS firewall allow list
  python3 deploy/policy-sync.py --emit-buckets [--region R] # the S3 buckets of the allowlist

--check also fails if the policy needs upstream ports other than 443 and 80: the security groups
and NACLs in the templates open only those.
"""
import argparse
import copy
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "egress.yaml"
WATCHDOG = ROOT / "deploy" / "nat-watchdog.sh"
TEMPLATES = {
    "ecs": ROOT / "deploy" / "cloudformation" / "egress-tier.yaml",
    "nat": ROOT / "deploy" / "cloudformation" / "nat-instance.yaml",
}
LISTENERS = {
    # Behind the NLB: 3128 for clients, 9090 for the target-group health check (the task's
    # security group admits both only from the NLB's security group).
    "ecs": {"explicit": "0.0.0.0:3128", "admin": "0.0.0.0:9090"},
    # NAT instance: iptables/ip6tables REDIRECT routed 443/80 to the transparent listeners; 3128
    # serves clients that set HTTPS_PROXY. `[::]` sockets are dual-stack (IPv4 arrives as mapped
    # addresses), so one listener serves both families. Admin: the peer instance's watchdog
    # probes /readyz on 9090 (security group: only the NAT group itself may reach it).
    "nat": {
        "explicit": "[::]:3128",
        "transparent_tls": "[::]:8443",
        "transparent_http": "[::]:8080",
        "admin": "[::]:9090",
    },
}
OPEN_PORTS = {443, 80}
REGION = "${AWS::Region}"
REGIONAL_HOST = re.compile(
    r"^(?P<a>(?:al2023-repos|amazonlinux-2-repos)-)us-east-1(?P<b>(?:-[0-9a-f]+)?\.s3\.dualstack\.)"
    r"us-east-1(?P<c>\.amazonaws\.com)$"
)
# Virtual-hosted S3 names: BUCKET.s3[.dualstack][.REGION].amazonaws.com (also s3-REGION, old form).
S3_HOST = re.compile(
    r"^(?P<bucket>[a-z0-9][a-z0-9.${}:A-Z-]*?)\.s3(?:\.dualstack)?(?:[.-][a-z0-9${}:A-Z-]+)?\.amazonaws\.com$"
)
# Always allowed by the DNS firewall: AWS service names (interface endpoints' private DNS, ECR,
# S3 via the gateway endpoints). amazonaws.com is AWS's own zone, so a query for any name under
# it is answered by AWS's name servers, never by a server an outsider runs.
DNS_ALWAYS = ["amazonaws.com", "*.amazonaws.com"]


# One stack-parameter entry: NAME=sha256:HEX, or NAME=sha256:OLD;sha256:NEW during a rotation (the
# empty string only as the whole, empty list). The templates' AllowedPattern is this expression.
PRINCIPAL_ENTRY = r"^$|^[A-Za-z0-9._-]{1,64}=sha256:[0-9a-f]{64}(;sha256:[0-9a-f]{64})?$"
# The template side: `principals: ${PrincipalsYaml}` in the policy text, and this variable map after
# it. CloudFormation has no loops or replace; Split+Join on the list's own separators turns
# [a=sha256:X;sha256:Y, b=sha256:Z] into {"a": ["sha256:X", "sha256:Y"], "b": ["sha256:Z"]}.
PRINCIPALS_VARS = [
    "- PrincipalsYaml: !If",
    "    - HasPrincipals",
    """    - !Join ["", ['{"', !Join ['", "', !Split [";", !Join ['": ["', !Split ["=", !Join ['"], "', !Ref Principals]]]]], '"]}']]""",
    '    - "{}"',
]
PRINCIPALS_MARK, REQUIRE_MARK = "PRINCIPALS_PLACEHOLDER_", "REQUIRE_PRINCIPAL_PLACEHOLDER_"  # dumped as plain scalars


def principals_yaml(entries):
    """What the template's PrincipalsYaml evaluates to for the Principals list `entries`."""
    if "".join(entries) == "":
        return "{}"
    s = '"], "'.join(entries)
    s = '": ["'.join(s.split("="))
    s = '", "'.join(s.split(";"))
    return '{"' + s + '"]}'


def principal_entries(value):
    """A Principals parameter value (comma-separated, as CloudFormation splits it), checked."""
    entries = value.split(",")
    bad = [e for e in entries if not re.fullmatch(PRINCIPAL_ENTRY, e)]
    if bad or ("" in entries and "".join(entries)):
        sys.exit(f"--principals: bad entry {bad[0] if bad else '(empty)'!r}; "
                 "expected NAME=sha256:HEX or NAME=sha256:OLD;sha256:NEW, comma-separated")
    return entries


def regionalise(host, region):
    return REGIONAL_HOST.sub(lambda m: f"{m['a']}{region}{m['b']}{region}{m['c']}", host)


def render(policy, flavour, region=REGION, http=True, principals=None, require="false"):
    """The deployed policy. principals=None: the template's text, with the ${PrincipalsYaml} and
    ${RequirePrincipal} placeholders (see sub_escape); else a Principals list rendered as the
    stack would."""
    out = copy.deepcopy(policy)
    out.pop("principals", None)
    out.pop("require_principal", None)
    out["listeners"] = dict(LISTENERS[flavour])
    rules = []
    for rule in out.get("allow") or []:
        rule["hosts"] = [regionalise(h, region) for h in rule.get("hosts") or []]
        if not http:
            ports = [p for p in (rule.get("ports") or [443]) if p != 80]
            if not ports:
                continue  # a port-80-only rule is dropped with the port
            if "ports" in rule:
                rule["ports"] = ports
        rules.append(rule)
    out["allow"] = rules
    # Listeners and identities first, then the rest in the source's order: easy to diff by eye.
    ordered = {"listeners": out.pop("listeners"), "principals": PRINCIPALS_MARK,
               "require_principal": REQUIRE_MARK, **out}
    text = yaml.safe_dump(ordered, sort_keys=False, default_flow_style=None, width=100)
    if principals is None:
        return text
    return text.replace(PRINCIPALS_MARK, principals_yaml(principals)).replace(REQUIRE_MARK, require)


def dns_names(policy, region=REGION):
    """The DNS firewall allow list: one entry per allowlisted name, in the policy's order.

    DNS Firewall matches an exact name, or `*.suffix` for every name below suffix. An exact host
    stays exact; `*.example.com` stays as it is; a `*` inside a label (`a*.example.com`) cannot be
    said to the firewall, so its whole label becomes `*.` (wider, and said so in a comment).
    """
    out = []
    for rule in policy.get("allow") or []:
        for host in rule.get("hosts") or []:
            h = regionalise(host.lower().rstrip("."), region)
            if "*" in h and not (h.startswith("*.") and "*" not in h[2:]):
                labels = h.split(".")
                last = max(i for i, l in enumerate(labels) if "*" in l)
                h = "*." + ".".join(labels[last + 1:])
            if h not in out:
                out.append(h)
    return out


def buckets(policy, region=REGION):
    """Bucket names behind allowlisted virtual-hosted S3 names (for the endpoint policy)."""
    out = []
    for rule in policy.get("allow") or []:
        for host in rule.get("hosts") or []:
            m = S3_HOST.match(regionalise(host, region))
            if m and "*" not in m["bucket"] and m["bucket"] not in out:
                out.append(m["bucket"])
    return out


def ports_needed(policy):
    return {p for r in policy.get("allow") or [] for p in (r.get("ports") or [443])}


def cfn_str(value):
    """A YAML scalar for a template list: `!Sub "..."` when it names ${AWS::...}."""
    if "${" in value:
        return '!Sub "' + value.replace('"', '\\"') + '"'
    return value if re.fullmatch(r"[A-Za-z0-9.-]+", value) else "'" + value + "'"


def block(text, marker, header, body_lines, path, deeper=2):
    """Replace the lines between `# MARKER:begin`+header and `# MARKER:end` with body_lines.

    The line after the begin marker must start with `header`; the generated lines are indented
    two spaces deeper than it (a block scalar's text, or a list's items)."""
    begin, end = f"# {marker}:begin", f"# {marker}:end"
    lines = text.splitlines(keepends=True)
    try:
        b = next(i for i, l in enumerate(lines) if l.strip().startswith(begin))
        e = next(i for i, l in enumerate(lines) if i > b and l.strip().startswith(end))
    except StopIteration:
        sys.exit(f"{path}: no '{begin}' ... '{end}' block")
    head = lines[b + 1]
    if not head.strip().startswith(header):
        sys.exit(f"{path}: the line after '{begin}' must start with '{header}'")
    indent = " " * (len(head) - len(head.lstrip()) + deeper)
    new = [indent + l + "\n" for l in body_lines]
    return "".join(lines[: b + 2] + new + lines[e:])


def sub_escape(body):
    # Inside !Sub, a literal "${" would be read as a variable; "${!" is CloudFormation's escape.
    body = re.sub(r"\$\{(?!AWS::Region\})", "${!", body)
    return body.replace(PRINCIPALS_MARK, "${PrincipalsYaml}").replace(REQUIRE_MARK, "${RequirePrincipal}")


def rendered_template(text, policy, flavour, path):
    for marker, http in (("policy", True), ("policy-no80", False)):
        body = sub_escape(render(policy, flavour, http=http)).splitlines()
        # !Sub [text, {variables}]: the text as a block scalar, then the PrincipalsYaml expression.
        body = ["- |"] + ["  " + l for l in body] + PRINCIPALS_VARS
        text = block(text, marker, "- !Sub", body, path)
    text = block(text, "dns", "Domains:", [f"- {cfn_str(d)}" for d in dns_names(policy)], path)
    if flavour == "nat":
        # The watchdog script, inside the user data's heredoc (same indentation as the user data).
        script = sub_escape(WATCHDOG.read_text()).splitlines()
        text = block(text, "watchdog", "cat > /usr/local/sbin/egress-proxy-watchdog <<'WD'", script, path, deeper=0)
    if flavour == "ecs":
        arns = [cfn_str(f"arn:${{AWS::Partition}}:s3:::{b}/*") for b in buckets(policy)]
        text = block(text, "s3", "Resource:", [f"- {a}" for a in arns], path)
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--emit", choices=sorted(LISTENERS))
    ap.add_argument("--no-http", action="store_true", help="with --emit: drop port-80 rules")
    ap.add_argument("--emit-dns", action="store_true")
    ap.add_argument("--emit-buckets", action="store_true")
    ap.add_argument("--region", default=REGION)
    ap.add_argument("--principals", default="",
                    help="with --emit: the stack parameter Principals (NAME=sha256:HEX,...)")
    ap.add_argument("--require-principal", choices=["true", "false"], default="false",
                    help="with --emit: the stack parameter RequirePrincipal")
    ap.add_argument("--config", type=pathlib.Path, default=CONFIG)
    args = ap.parse_args()
    if not args.config.exists():
        sys.exit(f"{args.config}: missing; the templates embed the shipped policy from it")
    policy = yaml.safe_load(args.config.read_text())
    if args.emit:
        sys.stdout.write(render(policy, args.emit, args.region, http=not args.no_http,
                                principals=principal_entries(args.principals),
                                require=args.require_principal))
        return 0
    if args.emit_dns:
        print("\n".join(DNS_ALWAYS + dns_names(policy, args.region)))
        return 0
    if args.emit_buckets:
        print("\n".join(buckets(policy, args.region)))
        return 0
    status = 0
    extra = ports_needed(policy) - OPEN_PORTS
    if extra:
        print(f"policy needs upstream ports {sorted(extra)}; the templates open only 443 and 80 "
              "(ProxyEgress* security-group rules and NACL entries)", file=sys.stderr)
        status = 1
    for flavour, path in TEMPLATES.items():
        text = path.read_text()
        new = rendered_template(text, policy, flavour, path)
        if new == text:
            continue
        if args.check:
            print(f"{path.relative_to(ROOT)}: generated blocks differ from "
                  f"{args.config.name}; run: python3 deploy/policy-sync.py", file=sys.stderr)
            status = 1
        else:
            path.write_text(new)
            print(f"updated {path.relative_to(ROOT)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
