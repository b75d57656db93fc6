// Package coordinator runs the desired-state service: it embeds (or connects
// to) NATS with JetStream, creates the KV buckets and streams, and serves the
// admin API over NATS request-reply. The layers live in sub-packages:
// transport (api) → rules (service) → storage (JetStream KV).
package coordinator
