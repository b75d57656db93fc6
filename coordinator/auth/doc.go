// Package auth holds fleetboot's identities and what each may do on NATS.
//
// Choice: NATS decentralized JWT (operator → accounts → users, nkeys, a
// memory resolver in the embedded server), not auth callout. Why:
//   - the server itself enforces every permission from the user JWT, with no
//     service of ours in the connect path: edges keep reconnecting while the
//     coordinator's API is down, and a bug in our code cannot grant access;
//   - a credential is a standard .creds file any NATS client can use;
//   - revocation is a field of the account JWT (Revocations): pushing the
//     re-signed account JWT to $SYS.REQ.ACCOUNT.<id>.CLAIMS.UPDATE makes the
//     server drop the connected user at once and refuse it from then on;
//   - the user's seed never leaves the machine that runs `edge add` /
//     `user add`: the CLI sends only the public key, the coordinator signs.
//
// Identity of API callers: the coordinator's API answers in its own account
// (API) and the fleet account (FLEET, which holds JetStream, edges and people)
// imports the API subjects as a service with share=true. nats-server then
// replaces any Nats-Request-Info header with the caller's authenticated
// identity (account, user public key, JWT name and tags) on every request
// that crosses the import, so the coordinator knows who asks and nobody can
// claim to be someone else by talking to the subject directly.
//
// Roles: an edge's permissions confine it to its own site on the server; admins
// and viewers have the same NATS permissions (read-only JetStream plus the API
// subjects), and the coordinator refuses a viewer's change. A site admin's
// NATS permissions read only what carries her site in its subject (its KV
// keys, events and heartbeats, plus the images); the API subjects carry no
// site, so there the guard decides, endpoint by endpoint (siteadmin.go),
// and the API narrows her listings to her site. Keeping admins off
// direct KV writes means every change goes through validation and the audit
// log. Each edge gets a private inbox prefix (_INBOX_edge_<name>), because
// with the shared _INBOX.> one edge could subscribe to the KV replies meant
// for another site's edge.
//
// On a NATS cluster we do not run (--auth --nats-url), `fleetboot nats init`
// makes the operator and the SYS, fleetboot and API accounts (the same
// import as FLEET/API above), and a full resolver that every node keeps on
// disk. Coordinators hold only signing keys (ClusterAccount) and share the
// registry of identities, a KV bucket (proto.BucketIdentities) written with
// compare-and-set, so two coordinators enrolling at once never issue one
// name or accept one public key twice, and each knows the identities the
// others enrolled (a watch feeds an index; a miss reads the bucket). The
// newest signed account JWT (its revocations) lives in the bucket too,
// replaced only with a later iat by compare-and-set, and every coordinator
// pushes whatever is newest, so two coordinators' updates never undo each
// other.
package auth
