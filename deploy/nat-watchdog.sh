#!/bin/bash
# egress-proxy NAT-instance watchdog (installed by nat-instance.yaml's user data as
# /usr/local/sbin/egress-proxy-watchdog; embedded there by deploy/policy-sync.py from this file).
# Every INTERVAL seconds: GET /readyz on this instance's proxy and on the peer AZ's instance.
#  - own proxy failed LIMIT times in a row: mark this instance Unhealthy; the Auto Scaling group
#    replaces it (the peer's watchdog moves this AZ's routes meanwhile);
#  - peer failed LIMIT times in a row while ours is ready: point the peer AZ's route table at our
#    routing ENI;
#  - ours ready and our AZ's route table points elsewhere: take it back (after a replacement, or
#    once we are healthy again). Checked on the first ready tick and every RECHECK ticks.
# Settings come from /etc/egress-proxy-watchdog.env (written by the user data): STACK IID ENI RTB
# PEER_RTB PEER_AZ IPV6. INTERVAL, LIMIT, RECHECK and MAX_TICKS (tests) may be overridden.
set -u
. "${WATCHDOG_ENV:-/etc/egress-proxy-watchdog.env}"
INTERVAL=${INTERVAL:-5} LIMIT=${LIMIT:-3} RECHECK=${RECHECK:-12} MAX_TICKS=${MAX_TICKS:-0}
ready() { curl -fsS --max-time 2 "http://$1:9090/readyz" >/dev/null 2>&1; }
target() {
  aws ec2 describe-route-tables --route-table-ids "$1" --output text \
    --query "RouteTables[0].Routes[?DestinationCidrBlock=='0.0.0.0/0'].NetworkInterfaceId | [0]"
}
point() {
  aws ec2 replace-route --route-table-id "$1" --destination-cidr-block 0.0.0.0/0 --network-interface-id "$ENI" || return 1
  if [ "$IPV6" = true ]; then
    aws ec2 replace-route --route-table-id "$1" --destination-ipv6-cidr-block ::/0 --network-interface-id "$ENI" || return 1
  fi
  logger -t egress-proxy-watchdog "route table $1 now points at $ENI ($2)"
}
peer_ip() {
  aws ec2 describe-instances --output text --filters "Name=tag:egress-proxy:nat,Values=$STACK" \
    "Name=availability-zone,Values=$PEER_AZ" Name=instance-state-name,Values=running \
    --query 'Reservations[].Instances[].PrivateIpAddress | [0]'
}
own=0 peer=0 tick=0 ready_ticks=0 pip=""
while sleep "$INTERVAL"; do
  tick=$((tick + 1))
  if [ "$MAX_TICKS" -gt 0 ] && [ "$tick" -gt "$MAX_TICKS" ]; then exit 0; fi
  if ready 127.0.0.1; then own=0; else own=$((own + 1)); fi
  if [ "$own" -ge "$LIMIT" ]; then
    logger -t egress-proxy-watchdog "own /readyz failed $own times: marking $IID Unhealthy"
    aws autoscaling set-instance-health --instance-id "$IID" --health-status Unhealthy && exit 0
    continue
  fi
  [ "$own" -eq 0 ] || continue
  ready_ticks=$((ready_ticks + 1))
  if [ $(((ready_ticks - 1) % RECHECK)) -eq 0 ] && [ "$(target "$RTB")" != "$ENI" ]; then
    point "$RTB" "own AZ back"
  fi
  if [ -z "$pip" ] || [ "$pip" = None ]; then pip=$(peer_ip); fi
  if [ -n "$pip" ] && [ "$pip" != None ] && ready "$pip"; then
    peer=0
  else
    peer=$((peer + 1)) pip=""
  fi
  if [ "$peer" -ge "$LIMIT" ] && [ "$(target "$PEER_RTB")" != "$ENI" ]; then
    point "$PEER_RTB" "peer in $PEER_AZ down"
  fi
done
