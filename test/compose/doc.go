// Package compose tests the top-level docker-compose.yml as a user runs it:
// three NATS nodes, MinIO, two coordinators and two sites, each with an edge
// and a busybox client that DHCPs and fetches its boot files. It needs a
// Docker daemon and the images of `make images`; it sits behind the
// "compose" build tag and runs with `make compose-test`. Without a daemon it
// fails and says so: it never passes silently.
package compose
