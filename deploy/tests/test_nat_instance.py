"""Tests for the NAT-instance user data and its watchdog, as nat-instance.yaml ships them.

The user data is taken out of the template text and rendered the way Fn::Sub would (template
references replaced by sample values, `${!x}` unescaped to `${x}`), then checked with `bash -n`.
The watchdog is cut out of that rendered user data (the heredoc that installs it) and run with
stub `curl`, `aws` and `logger` commands whose answers are scripted per call, so every scenario is
decided by call order, never by time: INTERVAL=0 and a tick budget stop the loop.

Run: python3 deploy/tests/test_nat_instance.py
"""
import os
import pathlib
import re
import stat
import subprocess
import sys
import tempfile
import textwrap
import unittest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "cloudformation" / "nat-instance.yaml"
SAMPLE = {"AWS::Region": "eu-west-1", "AWS::StackName": "egress-nat", "BinarySha256": "0" * 64,
          "BinaryS3Uri": "s3://bucket/egress-proxy", "PolicyParameterName": "/egress-proxy/nat-policy",
          "DecisionLogGroup": "/egress-proxy/egress-nat/decisions", "EnableIpv6": "false"}


def rendered_user_data():
    text = TEMPLATE.read_text()
    start = text.index("          Fn::Base64: !Sub |\n") + len("          Fn::Base64: !Sub |\n")
    lines = []
    for line in text[start:].splitlines():
        if line.strip() and not line.startswith("            "):
            break
        lines.append(line)
    body = textwrap.dedent("\n".join(lines)) + "\n"

    def sub(m):
        name = m.group(1)
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name not in SAMPLE:
            raise KeyError(f"user data references ${{{name}}}: add a sample value")
        return SAMPLE[name]
    return re.sub(r"\$\{([^}]*)\}", sub, body)


def watchdog_script():
    ud = rendered_user_data()
    m = re.search(r"<<'WD'\n(.*?)\nWD\n", ud, re.S)
    assert m, "no watchdog heredoc in the user data"
    return m.group(1) + "\n"


STUB_CURL = r"""#!/bin/bash
# answers GET http://HOST:9090/readyz from $STATE/<local|peer>: one word per call, ok or fail
for a in "$@"; do case $a in http://*) url=$a ;; esac; done
host=${url#http://}; host=${host%%:*}
f=$STATE/peer; [ "$host" = 127.0.0.1 ] && f=$STATE/local
echo "$host" >>"$STATE/curl"
word=$(head -n1 "$f" 2>/dev/null); sed -i 1d "$f" 2>/dev/null
[ "${word:-ok}" = ok ]
"""
STUB_AWS = r"""#!/bin/bash
echo "$*" >>"$STATE/calls"
case "$1 $2" in
  "ec2 describe-route-tables") cat "$STATE/route-$4" 2>/dev/null || echo eni-self ;;
  "ec2 describe-instances") cat "$STATE/peer-ip" 2>/dev/null || echo 10.0.1.5 ;;
  "ec2 replace-route") echo "$7" >"$STATE/route-$4" ;;
esac
"""
STUB_LOGGER = "#!/bin/bash\necho \"$*\" >>\"$STATE/log\"\n"


class Watchdog(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        d = pathlib.Path(self.dir.name)
        self.state = d / "state"
        self.state.mkdir()
        bindir = d / "bin"
        bindir.mkdir()
        for name, body in (("curl", STUB_CURL), ("aws", STUB_AWS), ("logger", STUB_LOGGER)):
            p = bindir / name
            p.write_text(body)
            p.chmod(p.stat().st_mode | stat.S_IEXEC)
        self.script = d / "watchdog"
        self.script.write_text(watchdog_script())
        (d / "env").write_text("STACK=egress-nat\nIID=i-self\nENI=eni-self\nRTB=rtb-a\nPEER_RTB=rtb-b\nPEER_AZ=eu-west-1b\nIPV6=true\n")
        self.env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", STATE=str(self.state),
                        WATCHDOG_ENV=str(d / "env"), INTERVAL="0", LIMIT="3", RECHECK="12")
        (self.state / "route-rtb-b").write_text("eni-peer\n")

    def tearDown(self):
        self.dir.cleanup()

    def script_answers(self, local=(), peer=()):
        (self.state / "local").write_text("".join(w + "\n" for w in local))
        (self.state / "peer").write_text("".join(w + "\n" for w in peer))

    def run_ticks(self, ticks):
        p = subprocess.run(["bash", str(self.script)], env=dict(self.env, MAX_TICKS=str(ticks)),
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        calls = (self.state / "calls").read_text().splitlines() if (self.state / "calls").exists() else []
        return calls

    def test_own_proxy_failing_three_times_marks_the_instance_unhealthy(self):
        self.script_answers(local=["fail", "fail", "fail"])
        calls = self.run_ticks(10)
        self.assertIn("autoscaling set-instance-health --instance-id i-self --health-status Unhealthy", calls)
        self.assertFalse(any("replace-route" in c for c in calls), calls)  # never moves routes while unready

    def test_two_own_failures_are_not_enough(self):
        self.script_answers(local=["fail", "fail", "ok", "fail", "fail"])
        calls = self.run_ticks(6)
        self.assertFalse(any("set-instance-health" in c for c in calls), calls)

    def test_peer_failing_three_times_moves_its_routes_here(self):
        self.script_answers(peer=["fail", "fail", "fail"])
        calls = self.run_ticks(4)
        self.assertIn("ec2 replace-route --route-table-id rtb-b --destination-cidr-block 0.0.0.0/0 --network-interface-id eni-self", calls)
        self.assertIn("ec2 replace-route --route-table-id rtb-b --destination-ipv6-cidr-block ::/0 --network-interface-id eni-self", calls)

    def test_two_peer_failures_leave_its_routes_alone(self):
        self.script_answers(peer=["fail", "fail", "ok", "fail", "fail"])
        calls = self.run_ticks(6)
        self.assertFalse(any("replace-route --route-table-id rtb-b" in c for c in calls), calls)

    def test_missing_peer_counts_as_down(self):
        (self.state / "peer-ip").write_text("None\n")
        calls = self.run_ticks(3)
        self.assertIn("ec2 replace-route --route-table-id rtb-b --destination-cidr-block 0.0.0.0/0 --network-interface-id eni-self", calls)

    def test_peer_not_taken_over_while_own_proxy_is_down(self):
        self.script_answers(local=["fail"] * 2 + ["ok"] + ["fail"] * 2, peer=["fail"] * 10)
        calls = self.run_ticks(5)
        self.assertFalse(any("rtb-b" in c and "replace-route" in c for c in calls), calls)

    def test_own_route_taken_back_when_ready(self):
        (self.state / "route-rtb-a").write_text("eni-peer\n")
        calls = self.run_ticks(1)
        self.assertIn("ec2 replace-route --route-table-id rtb-a --destination-cidr-block 0.0.0.0/0 --network-interface-id eni-self", calls)
        self.assertIn("route table rtb-a now points at eni-self (own AZ back)", (self.state / "log").read_text())


class UserData(unittest.TestCase):
    def test_rendered_user_data_is_valid_bash(self):
        p = subprocess.run(["bash", "-n"], input=rendered_user_data(), capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_user_data_forwards_nothing_in_either_family(self):
        ud = rendered_user_data()
        for needle in ("net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0", "for ipt in iptables ip6tables",
                       "$ipt -P FORWARD DROP"):
            self.assertIn(needle, ud)

    def test_embedded_watchdog_is_the_tested_source(self):
        src = (ROOT / "deploy" / "nat-watchdog.sh").read_text()
        self.assertEqual(watchdog_script().rstrip("\n").split("\n")[:-1], src.rstrip("\n").split("\n"))


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=1).result
    failed = len(result.failures) + len(result.errors)
    print(f"nat-instance: {result.testsRun - failed} passed, {failed} failed")
    sys.exit(1 if failed or not result.testsRun else 0)
