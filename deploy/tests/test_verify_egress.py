"""Tests for deploy/verify-egress against moto's server on loopback.

Every test builds one VPC laid out as the egress tier leaves it (public subnet + IGW + NAT
gateway, a tier=egress proxy subnet holding the NAT route, a tier=app subnet with no way out but
the proxy and the gateway endpoints), seeds at most one violation, runs the real script as a
subprocess and asserts its exit status and that the offending resource is named.

What moto does not implement (Route 53 Resolver DNS Firewall, Network Access Analyzer) is tested
twice: through moto (the script must say "not checked" and exit 3, never pass silently), and with
botocore's Stubber feeding the real API shapes to the check functions.

Run: python3 deploy/tests/test_verify_egress.py   (starts and stops its own moto server)
"""
import contextlib
import importlib.machinery
import io
import importlib.util
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import unittest
import urllib.request

import boto3
from botocore.stub import Stubber

HERE = pathlib.Path(__file__).resolve().parent
SCRIPT = HERE.parent / "verify-egress"
REGION = "eu-west-1"
ORG_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Sid": "OrgOnly", "Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "*",
    "Condition": {"StringEquals": {"aws:ResourceOrgID": "o-test", "aws:PrincipalOrgID": "o-test"}}}]})
OPEN_POLICY = json.dumps({"Version": "2008-10-17", "Statement": [{
    "Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]})
ENV = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
           AWS_DEFAULT_REGION=REGION, AWS_EC2_METADATA_DISABLED="true", AWS_MAX_ATTEMPTS="1")
for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
    ENV.pop(k, None)


def load_script():
    loader = importlib.machinery.SourceFileLoader("verify_egress", str(SCRIPT))
    spec = importlib.util.spec_from_loader("verify_egress", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


class MotoServer:
    def __init__(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1)
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto server did not start")
                time.sleep(0.1)

    def reset(self):
        urllib.request.urlopen(urllib.request.Request(self.url + "/moto-api/reset", method="POST"), timeout=5)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Fixture:
    """A compliant VPC: what the egress tier plus the cutover leave behind."""

    def __init__(self, url, query_logging=True):
        kw = dict(region_name=REGION, endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing")
        self.ec2 = ec2 = boto3.client("ec2", **kw)
        self.r53r = boto3.client("route53resolver", **kw)
        self.vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        self.igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=self.igw, VpcId=self.vpc)
        self.public = self.subnet("10.0.0.0/24", tier="public")
        self.public_rt = self.route_table(self.public)
        ec2.create_route(RouteTableId=self.public_rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=self.igw)
        eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
        self.nat = ec2.create_nat_gateway(SubnetId=self.public, AllocationId=eip)["NatGateway"]["NatGatewayId"]

        self.egress = self.subnet("10.0.63.192/26", tier="egress")
        self.egress_rt = self.route_table(self.egress)
        ec2.create_route(RouteTableId=self.egress_rt, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=self.nat)
        self.app = self.subnet("10.0.32.0/24", tier="app")
        self.app_rt = self.route_table(self.app)

        # Gateway endpoints on the app route table, with org-scoped policies.
        self.s3_ep = ec2.create_vpc_endpoint(VpcId=self.vpc, ServiceName=f"com.amazonaws.{REGION}.s3", VpcEndpointType="Gateway",
                                             RouteTableIds=[self.app_rt], PolicyDocument=ORG_POLICY)["VpcEndpoint"]["VpcEndpointId"]
        self.ddb_ep = ec2.create_vpc_endpoint(VpcId=self.vpc, ServiceName=f"com.amazonaws.{REGION}.dynamodb", VpcEndpointType="Gateway",
                                              RouteTableIds=[self.app_rt], PolicyDocument=ORG_POLICY.replace("s3:*", "dynamodb:*"))["VpcEndpoint"]["VpcEndpointId"]
        pls = {p["PrefixListName"].rsplit(".", 1)[-1]: p["PrefixListId"] for p in ec2.describe_prefix_lists()["PrefixLists"]}
        self.s3_pl, self.ddb_pl = pls["s3"], pls["dynamodb"]

        # Security groups: NLB, proxy (443 out only), app (3128 to the NLB, 443 to the gateway endpoints).
        self.nlb_sg = self.sg("nlb")
        self.proxy_sg = self.sg("proxy")
        ec2.authorize_security_group_egress(GroupId=self.proxy_sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        self.app_sg = self.sg("app")
        ec2.authorize_security_group_egress(GroupId=self.app_sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 3128, "ToPort": 3128, "UserIdGroupPairs": [{"GroupId": self.nlb_sg}]},
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "PrefixListIds": [{"PrefixListId": self.s3_pl}, {"PrefixListId": self.ddb_pl}]}])
        ec2.create_network_interface(SubnetId=self.app, Groups=[self.app_sg])
        ec2.create_network_interface(SubnetId=self.egress, Groups=[self.proxy_sg])

        # App-tier NACL: out 443 anywhere (gateway endpoints), replies inside the VPC.
        self.app_acl = ec2.create_network_acl(VpcId=self.vpc)["NetworkAcl"]["NetworkAclId"]
        for num, egress, proto, cidr, lo, hi in ((100, True, "6", "0.0.0.0/0", 443, 443), (110, True, "6", "10.0.0.0/16", 1024, 65535),
                                                 (100, False, "6", "0.0.0.0/0", 1024, 65535)):
            ec2.create_network_acl_entry(NetworkAclId=self.app_acl, RuleNumber=num, Protocol=proto, RuleAction="allow",
                                         Egress=egress, CidrBlock=cidr, PortRange={"From": lo, "To": hi})
        assoc = next(a["NetworkAclAssociationId"] for n in ec2.describe_network_acls()["NetworkAcls"]
                     for a in n["Associations"] if a["SubnetId"] == self.app)
        ec2.replace_network_acl_association(AssociationId=assoc, NetworkAclId=self.app_acl)

        if not query_logging:
            return
        qlc = self.r53r.create_resolver_query_log_config(Name="dns", DestinationArn=f"arn:aws:logs:{REGION}:123456789012:log-group:dns",
                                                         CreatorRequestId="t")["ResolverQueryLogConfig"]["Id"]
        self.r53r.associate_resolver_query_log_config(ResolverQueryLogConfigId=qlc, ResourceId=self.vpc)

    def subnet(self, cidr, **t):
        sid = self.ec2.create_subnet(VpcId=self.vpc, CidrBlock=cidr)["Subnet"]["SubnetId"]
        self.ec2.create_tags(Resources=[sid], Tags=[{"Key": k, "Value": v} for k, v in t.items()])
        return sid

    def route_table(self, subnet):
        rt = self.ec2.create_route_table(VpcId=self.vpc)["RouteTable"]["RouteTableId"]
        self.ec2.associate_route_table(RouteTableId=rt, SubnetId=subnet)
        return rt

    def sg(self, name):
        gid = self.ec2.create_security_group(GroupName=name, Description=name, VpcId=self.vpc)["GroupId"]
        self.ec2.revoke_security_group_egress(GroupId=gid, IpPermissions=[
            {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        return gid


class VerifyEgressAgainstMoto(unittest.TestCase):
    SKIP = ["--skip", "dns-firewall", "--skip", "access-scope"]  # not implemented by moto: see below

    @classmethod
    def setUpClass(cls):
        cls.moto = MotoServer()

    @classmethod
    def tearDownClass(cls):
        cls.moto.stop()

    def setUp(self):
        self.moto.reset()
        self.f = Fixture(self.moto.url)

    def run_verify(self, *extra, skip=True):
        cmd = [sys.executable, str(SCRIPT), "--vpc-id", self.f.vpc, "--region", REGION,
               "--endpoint-url", self.moto.url, *(self.SKIP if skip else []), *extra]
        p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=60)
        return p.returncode, p.stdout + p.stderr

    def assert_violation(self, check, resource, *extra):
        code, out = self.run_verify(*extra)
        self.assertEqual(code, 1, out)
        lines = [l for l in out.splitlines() if l.startswith(f"VIOLATION [{check}]") and resource in l]
        self.assertTrue(lines, f"no VIOLATION [{check}] naming {resource}:\n{out}")
        return out

    # -- the baseline
    def test_compliant_vpc_passes(self):
        code, out = self.run_verify()
        self.assertEqual(code, 0, out)
        self.assertIn("0 violations, 6 checks passed", out)

    def test_unimplemented_apis_are_named_not_passed(self):
        code, out = self.run_verify(skip=False)
        self.assertEqual(code, 3, out)
        self.assertIn("not checked [dns-firewall]: API unsupported", out)
        self.assertIn("not checked [access-scope]", out)
        self.assertNotIn("VIOLATION", out)

    # -- routes
    def test_app_route_to_internet_gateway(self):
        self.f.ec2.create_route(RouteTableId=self.f.app_rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=self.f.igw)
        out = self.assert_violation("routes", self.f.app_rt)
        self.assertIn(self.f.igw, out)

    def test_app_route_to_nat_gateway(self):
        self.f.ec2.create_route(RouteTableId=self.f.app_rt, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=self.f.nat)
        out = self.assert_violation("routes", self.f.app_rt)
        self.assertIn(self.f.nat, out)

    def test_app_ipv6_route_to_egress_only_gateway(self):
        eigw = self.f.ec2.create_egress_only_internet_gateway(VpcId=self.f.vpc)["EgressOnlyInternetGateway"]["EgressOnlyInternetGatewayId"]
        self.f.ec2.create_route(RouteTableId=self.f.app_rt, DestinationIpv6CidrBlock="::/0", EgressOnlyInternetGatewayId=eigw)
        out = self.assert_violation("routes", self.f.app_rt)
        self.assertIn(eigw, out)
        self.assertIn("::/0", out)

    def test_app_route_to_transit_gateway(self):
        tgw = self.f.ec2.create_transit_gateway()["TransitGateway"]["TransitGatewayId"]
        self.f.ec2.create_route(RouteTableId=self.f.app_rt, DestinationCidrBlock="10.8.0.0/16", TransitGatewayId=tgw)
        out = self.assert_violation("routes", self.f.app_rt)
        self.assertIn(tgw, out)
        # The same route is accepted once it is declared a known private path.
        code, out = self.run_verify("--allow-private-route", "10.8.0.0/16")
        self.assertEqual(code, 0, out)

    def test_app_default_route_to_transit_gateway_is_never_allowed(self):
        tgw = self.f.ec2.create_transit_gateway()["TransitGateway"]["TransitGatewayId"]
        self.f.ec2.create_route(RouteTableId=self.f.app_rt, DestinationCidrBlock="0.0.0.0/0", TransitGatewayId=tgw)
        self.assert_violation("routes", tgw, "--allow-private-route", "10.8.0.0/16")

    def test_app_route_to_peering_connection(self):
        peer = self.f.ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
        pcx = self.f.ec2.create_vpc_peering_connection(VpcId=self.f.vpc, PeerVpcId=peer)["VpcPeeringConnection"]["VpcPeeringConnectionId"]
        self.f.ec2.create_route(RouteTableId=self.f.app_rt, DestinationCidrBlock="10.9.0.0/16", VpcPeeringConnectionId=pcx)
        out = self.assert_violation("routes", self.f.app_rt)
        self.assertIn(pcx, out)

    def test_app_route_through_foreign_eni(self):
        eni = self.f.ec2.create_network_interface(SubnetId=self.f.public)["NetworkInterface"]["NetworkInterfaceId"]
        self.f.ec2.create_route(RouteTableId=self.f.app_rt, DestinationCidrBlock="0.0.0.0/0", NetworkInterfaceId=eni)
        self.assert_violation("routes", eni)
        # Tagged as this project's NAT-instance routing ENI, the same route is the proxy path.
        self.f.ec2.create_tags(Resources=[eni], Tags=[{"Key": "egress-proxy:nat-eni", "Value": "egress-nat"}])
        code, out = self.run_verify()
        self.assertEqual(code, 0, out)

    def test_main_route_table_is_checked_for_unassociated_app_subnets(self):
        sub = self.f.subnet("10.0.33.0/24", tier="app")
        main = next(rt["RouteTableId"] for rt in self.f.ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [self.f.vpc]}])["RouteTables"]
                    if any(a.get("Main") for a in rt.get("Associations", [])))
        self.f.ec2.create_route(RouteTableId=main, DestinationCidrBlock="0.0.0.0/0", GatewayId=self.f.igw)
        self.assert_violation("routes", f"{main} (subnet {sub})")

    # -- subnet tags
    def test_proxy_subnet_tagged_app(self):
        self.f.ec2.create_tags(Resources=[self.f.egress], Tags=[{"Key": "tier", "Value": "app"}])
        self.assert_violation("subnet-tags", self.f.egress)

    # -- security groups
    def test_app_security_group_with_allow_all_egress(self):
        self.f.ec2.authorize_security_group_egress(GroupId=self.f.app_sg, IpPermissions=[
            {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        self.assert_violation("security-groups", self.f.app_sg)

    def test_app_security_group_with_ipv6_egress(self):
        self.f.ec2.authorize_security_group_egress(GroupId=self.f.app_sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}])
        self.assert_violation("security-groups", self.f.app_sg)

    def test_nat_instance_variant_accepts_only_443_and_80_to_anywhere(self):
        self.f.ec2.authorize_security_group_egress(GroupId=self.f.app_sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        self.assert_violation("security-groups", self.f.app_sg)
        code, out = self.run_verify("--variant", "nat-instance")
        self.assertEqual(code, 0, out)
        self.f.ec2.authorize_security_group_egress(GroupId=self.f.app_sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        self.assert_violation("security-groups", self.f.app_sg, "--variant", "nat-instance")

    def test_proxy_security_group_wider_than_443(self):
        self.f.ec2.authorize_security_group_egress(GroupId=self.f.proxy_sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        self.assert_violation("security-groups", self.f.proxy_sg)

    # -- NACLs
    def test_app_nacl_allows_all_outbound(self):
        self.f.ec2.create_network_acl_entry(NetworkAclId=self.f.app_acl, RuleNumber=90, Protocol="-1", RuleAction="allow",
                                            Egress=True, CidrBlock="0.0.0.0/0")
        self.assert_violation("nacls", f"{self.f.app_acl} rule 90")

    def test_app_subnet_on_default_nacl(self):
        sub = self.f.subnet("10.0.34.0/24", tier="app")
        default = next(n["NetworkAclId"] for n in self.f.ec2.describe_network_acls(
            Filters=[{"Name": "vpc-id", "Values": [self.f.vpc]}])["NetworkAcls"] if n["IsDefault"])
        out = self.assert_violation("nacls", default)
        self.assertIn(sub, out)

    # -- endpoint policies
    def test_gateway_endpoint_with_default_full_access_policy(self):
        self.f.ec2.modify_vpc_endpoint(VpcEndpointId=self.f.s3_ep, PolicyDocument=OPEN_POLICY)
        self.assert_violation("endpoint-policies", self.f.s3_ep)

    # -- query logging
    def test_vpc_without_query_logging(self):
        self.moto.reset()
        self.f = Fixture(self.moto.url, query_logging=False)
        self.assert_violation("query-logging", self.f.vpc)

    # -- the cutover's pre-flight
    def test_preflight_accepts_the_old_nat_and_allow_all_but_not_missing_rules(self):
        self.f.ec2.create_route(RouteTableId=self.f.app_rt, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=self.f.nat)
        self.f.ec2.authorize_security_group_egress(GroupId=self.f.app_sg, IpPermissions=[
            {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        code, out = self.run_verify("--phase", "preflight")
        self.assertEqual(code, 0, out)
        self.assertIn("expected until cutover step 4", out)
        self.assertIn("expected until cutover step 5", out)
        # The final check still refuses the same VPC.
        code, out = self.run_verify()
        self.assertEqual(code, 1, out)
        # Without the S3 prefix-list rule the cutover would cut image pulls: pre-flight says so.
        self.f.ec2.revoke_security_group_egress(GroupId=self.f.app_sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "PrefixListIds": [{"PrefixListId": self.f.s3_pl}]}])
        code, out = self.run_verify("--phase", "preflight")
        self.assertEqual(code, 1, out)
        self.assertIn(f"VIOLATION [security-groups] {self.f.app_sg}: no TCP 443 egress to the s3 prefix list {self.f.s3_pl}", out)


class StubbedApis(unittest.TestCase):
    """The checks whose APIs moto lacks, fed the real API shapes through botocore's Stubber."""

    @classmethod
    def setUpClass(cls):
        cls.ve = load_script()

    def client(self, service):
        return boto3.client(service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")

    def dns(self, responses, mode="block"):
        c = self.client("route53resolver")
        with Stubber(c) as st:
            for op, resp in responses:
                st.add_response(op, resp)
            r = self.ve.Report([])
            with contextlib.redirect_stdout(io.StringIO()):
                r.run("dns-firewall", lambda: self.ve.check_dns_firewall(c, "vpc-1", mode, r))
            st.assert_no_pending_responses()
        return r

    def firewall(self, action, fail_open="DISABLED"):
        return [("list_firewall_rule_group_associations", {"FirewallRuleGroupAssociations": [
                    {"FirewallRuleGroupId": "rslvr-frg-1", "VpcId": "vpc-1", "Status": "COMPLETE"}]}),
                ("list_firewall_rules", {"FirewallRules": [
                    {"FirewallDomainListId": "rslvr-fdl-allow", "Action": "ALLOW", "Priority": 100},
                    {"FirewallDomainListId": "rslvr-fdl-all", "Action": action, "Priority": 200}]}),
                ("list_firewall_domains", {"Domains": ["pypi.org"]}),
                ("list_firewall_domains", {"Domains": ["*"]}),
                ("get_firewall_config", {"FirewallConfig": {"ResourceId": "vpc-1", "FirewallFailOpen": fail_open}})]

    def test_dns_firewall_missing_association_is_a_violation(self):
        r = self.dns([("list_firewall_rule_group_associations", {"FirewallRuleGroupAssociations": []})])
        self.assertEqual([(c, res) for c, res, _ in r.violations], [("dns-firewall", "vpc-1")])

    def test_dns_firewall_blocking_catch_all_passes(self):
        r = self.dns(self.firewall("BLOCK"))
        self.assertEqual(r.violations, [])
        self.assertEqual(r.passed, ["dns-firewall"])

    def test_dns_firewall_alert_only_is_a_violation_unless_report_mode(self):
        r = self.dns(self.firewall("ALERT"))
        self.assertEqual([(c, res) for c, res, _ in r.violations], [("dns-firewall", "rslvr-frg-1")])
        r = self.dns(self.firewall("ALERT"), mode="alert")
        self.assertEqual(r.violations, [])
        self.assertEqual(len(r.notes), 1)

    def test_dns_firewall_failing_open_is_a_violation(self):
        r = self.dns(self.firewall("BLOCK", fail_open="ENABLED"))
        self.assertEqual([(c, res) for c, res, _ in r.violations], [("dns-firewall", "vpc-1")])
        self.assertIn("fails open", r.violations[0][2])

    def test_dns_firewall_without_catch_all_is_a_violation(self):
        resp = self.firewall("BLOCK")[:3] + self.firewall("BLOCK")[4:]
        resp[1] = ("list_firewall_rules", {"FirewallRules": [
            {"FirewallDomainListId": "rslvr-fdl-allow", "Action": "ALLOW", "Priority": 100}]})
        r = self.dns(resp)
        self.assertEqual([(c, res) for c, res, _ in r.violations], [("dns-firewall", "rslvr-frg-1")])

    def scope(self, responses, scope_id="nis-1"):
        c = self.client("ec2")
        with Stubber(c) as st:
            for op, resp in responses:
                st.add_response(op, resp)
            r = self.ve.Report([])
            with contextlib.redirect_stdout(io.StringIO()):
                r.run("access-scope", lambda: self.ve.check_access_scope(c, scope_id, r))
            st.assert_no_pending_responses()
        return r

    def test_access_scope_findings_are_violations(self):
        r = self.scope([("describe_network_insights_access_scope_analyses", {"NetworkInsightsAccessScopeAnalyses": [
                            {"NetworkInsightsAccessScopeAnalysisId": "nisa-1", "Status": "succeeded", "FindingsFound": "true"}]}),
                        ("get_network_insights_access_scope_analysis_findings", {"AnalysisFindings": [
                            {"FindingComponents": [{"Component": {"Id": "subnet-app"}}, {"Component": {"Id": "igw-1"}}]}]})])
        self.assertEqual(len(r.violations), 1)
        self.assertIn("subnet-app -> igw-1", r.violations[0][2])

    def test_access_scope_without_findings_passes(self):
        r = self.scope([("describe_network_insights_access_scope_analyses", {"NetworkInsightsAccessScopeAnalyses": [
            {"NetworkInsightsAccessScopeAnalysisId": "nisa-1", "Status": "succeeded", "FindingsFound": "false"}]})])
        self.assertEqual((r.violations, r.passed), ([], ["access-scope"]))

    def test_access_scope_never_analysed_is_not_checked(self):
        r = self.scope([("describe_network_insights_access_scope_analyses", {"NetworkInsightsAccessScopeAnalyses": []})])
        self.assertEqual((r.violations, r.passed, [c for c, _ in r.unchecked]), ([], [], ["access-scope"]))


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=1).result
    failed = len(result.failures) + len(result.errors)
    print(f"verify-egress: {result.testsRun - failed} passed, {failed} failed")
    sys.exit(1 if failed or not result.testsRun else 0)
