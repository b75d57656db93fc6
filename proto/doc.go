// Package proto is the wire contract between the coordinator, the edges and the
// CLI: NATS subjects, KV bucket names and the versioned message types they carry.
// Both sides import it; it imports nothing of ours. Every message carries a
// version field and decoders ignore unknown fields, so a newer peer never breaks
// an older one.
package proto
