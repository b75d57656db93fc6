#!/bin/sh
# The compose stack's secrets job, run once before the NATS nodes start, as a
# cluster's administrator would by hand (README, "A NATS cluster of your own,
# and a new branch office"):
#   /keys        this job's own volume, the administrator's safe: the
#                operator and accounts of `fleetboot nats init` (nats/), the
#                CA and the nodes' TLS certificate of `fleetboot pki init` (pki/)
#   /coordinator the coordinators' volume: what they need of nats/ (signing
#                keys, sys.creds, account JWTs; not the identity keys, which
#                only rotate those) and ca.pem; the first coordinator adds
#                admin.creds there
#   /etc/nats    the NATS nodes' volume: cluster.conf, resolver.conf,
#                server.pem, server-key.pem, routes.conf (the route password)
#   /edge-a, /edge-b   each edge box's volume: ca.pem (and at site-b the
#                leaf node's leaf.conf); the init job adds edge.creds
# Safe to run again: nothing that exists is made anew, so restarting the
# stack keeps its keys and every credential issued with them.
set -eu
umask 077
K=/keys
[ -e "$K/nats/fleetboot.jwt" ] || fleetboot nats init "$K/nats" --resolver-dir /var/lib/nats/jwt
[ -e "$K/pki/ca.pem" ] || fleetboot pki init "$K/pki" --host nats1 --host nats2 --host nats3 --host localhost --host 127.0.0.1

# The nodes' configuration: resolver.conf as nats init wrote it (it lets
# leaf nodes use the cluster's JetStream in the fleetboot account).
conf=/etc/nats
cp /deploy/nats/cluster.conf "$K/pki/server.pem" "$K/pki/server-key.pem" "$K/pki/ca.pem" "$conf/"
cp "$K/nats/resolver.conf" "$conf/resolver.conf.new"
mv "$conf/resolver.conf.new" "$conf/resolver.conf"
if [ ! -e "$conf/routes.conf" ]; then
	p=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
	printf 'authorization { user: route, password: "%s" }\nroutes: [%s]\n' "$p" \
		"nats://route:$p@nats1:6222, nats://route:$p@nats2:6222, nats://route:$p@nats3:6222" >"$conf/routes.conf"
fi
chmod 0644 "$conf/cluster.conf" "$conf/resolver.conf" "$conf/server.pem" "$conf/ca.pem"

# The coordinators' part: nats init's files but the identity seeds.
mkdir -p /coordinator/nats
for f in "$K"/nats/*; do
	case "${f##*/}" in
	operator.nk | sys.nk | fleetboot.nk | api.nk) ;;
	*) cp "$f" /coordinator/nats/ ;;
	esac
done
cp "$K/pki/ca.pem" /coordinator/ca.pem
chmod 0644 /coordinator/ca.pem

# The edge boxes: the CA to check the cluster's certificate, and site-b's
# leaf node configuration.
for e in /edge-a /edge-b; do
	cp "$K/pki/ca.pem" "$e/ca.pem"
	chmod 0644 "$e/ca.pem"
done
cp /deploy/nats/leaf.conf /edge-b/leaf.conf
echo "fleetboot-secrets: done"
