#!/usr/bin/env python3
"""Keep the policy embedded in the CloudFormation templates in step with config/egress.yaml.

config/egress.yaml is the one source of truth for the allowlist. Each template under
deploy/cloudformation/ carries a compact, generated copy of it as the value of its SSM parameter,
between the lines `# policy:begin` and `# policy:end`. This script renders that copy:

  - `allow`, `upstream`, `resolver`, `timeouts`, `reload`, `limits`, `mode` are copied unchanged;
  - `listeners` is replaced by the deployment's own (the shipped file binds loopback for a safe
    quick start; a deployed proxy must listen on the task/instance address);
  - the Amazon Linux S3 repository hosts name the AWS region; their `us-east-1` is replaced by
    CloudFormation's `${AWS::Region}` so the stack's region is used (config/egress.yaml asks for
    this). Docker's S3 host is left alone: it names Docker's bucket, not ours.

  python3 deploy/policy-sync.py            # rewrite the embedded copies
  python3 deploy/policy-sync.py --check    # exit 1 if any embedded copy differs (run by check.sh)
  python3 deploy/policy-sync.py --emit ecs|nat [--region R]   # print one rendered policy

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
TEMPLATES = {
    "ecs": ROOT / "deploy" / "cloudformation" / "egress-tier.yaml",
    "nat": ROOT / "deploy" / "cloudformation" / "nat-instance.yaml",
}
LISTENERS = {
    # Behind the NLB: 3128 for clients, 9090 for the target-group health check (the task's
    # security group admits both only from the NLB's security group).
    "ecs": {"explicit": "0.0.0.0:3128", "admin": "0.0.0.0:9090"},
    # NAT instance: iptables REDIRECTs routed 443/80 to the transparent listeners; 3128 serves
    # clients that set HTTPS_PROXY; admin stays on loopback.
    "nat": {
        "explicit": "0.0.0.0:3128",
        "transparent_tls": "0.0.0.0:8443",
        "transparent_http": "0.0.0.0:8080",
        "admin": "127.0.0.1:9090",
    },
}
OPEN_PORTS = {443, 80}
REGIONAL_HOST = re.compile(
    r"^(?P<a>(?:al2023-repos|amazonlinux-2-repos)-)us-east-1(?P<b>(?:-[0-9a-f]+)?\.s3\.dualstack\.)"
    r"us-east-1(?P<c>\.amazonaws\.com)$"
)
BEGIN, END = "# policy:begin", "# policy:end"


def render(policy, flavour, region="${AWS::Region}"):
    out = copy.deepcopy(policy)
    out["listeners"] = dict(LISTENERS[flavour])
    for rule in out.get("allow") or []:
        rule["hosts"] = [
            REGIONAL_HOST.sub(lambda m: f"{m['a']}{region}{m['b']}{region}{m['c']}", h)
            for h in rule.get("hosts") or []
        ]
    # Listeners first, then the rest in the source's order: easy to diff by eye.
    ordered = {"listeners": out.pop("listeners"), **out}
    return yaml.safe_dump(ordered, sort_keys=False, default_flow_style=None, width=100)


def ports_needed(policy):
    return {p for r in policy.get("allow") or [] for p in (r.get("ports") or [443])}


def embed(text, body, path):
    lines = text.splitlines(keepends=True)
    try:
        b = next(i for i, l in enumerate(lines) if l.strip().startswith(BEGIN))
        e = next(i for i, l in enumerate(lines) if i > b and l.strip().startswith(END))
    except StopIteration:
        sys.exit(f"{path}: no '{BEGIN}' ... '{END}' block")
    value = lines[b + 1]
    if not value.strip().startswith("Value: !Sub |"):
        sys.exit(f"{path}: the line after '{BEGIN}' must be 'Value: !Sub |'")
    indent = " " * (len(value) - len(value.lstrip()) + 2)
    # Inside !Sub, a literal "${" would be read as a variable; "${!" is CloudFormation's escape.
    body = re.sub(r"\$\{(?!AWS::Region\})", "${!", body)
    new = [indent + l + "\n" for l in body.splitlines()]
    return "".join(lines[: b + 2] + new + lines[e:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--emit", choices=sorted(LISTENERS))
    ap.add_argument("--region", default="${AWS::Region}")
    ap.add_argument("--config", type=pathlib.Path, default=CONFIG)
    args = ap.parse_args()
    if not args.config.exists():
        sys.exit(f"{args.config}: missing; the templates embed the shipped policy from it")
    policy = yaml.safe_load(args.config.read_text())
    if args.emit:
        sys.stdout.write(render(policy, args.emit, args.region))
        return 0
    status = 0
    extra = ports_needed(policy) - OPEN_PORTS
    if extra:
        print(f"policy needs upstream ports {sorted(extra)}; the templates open only 443 and 80 "
              "(ProxyEgress* security-group rules and NACL entries)", file=sys.stderr)
        status = 1
    for flavour, path in TEMPLATES.items():
        text = path.read_text()
        new = embed(text, render(policy, flavour), path)
        if new == text:
            continue
        if args.check:
            print(f"{path.relative_to(ROOT)}: embedded policy differs from "
                  f"{args.config.name}; run: python3 deploy/policy-sync.py", file=sys.stderr)
            status = 1
        else:
            path.write_text(new)
            print(f"updated {path.relative_to(ROOT)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
