package events

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// BenchmarkEmit measures the caller's cost of Emit (the disk write happens
// in the background writer).
func BenchmarkEmit(b *testing.B) {
	r, err := NewRecorder(Config{Dir: b.TempDir(), Site: "lab", Edge: "edge1", MaxBuffered: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	detail := map[string]string{"xid": "0x12345678", "file": "undionly.kpxe"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r.Emit(proto.EventDHCPDiscover, "52:54:00:12:34:56", detail)
	}
}

// BenchmarkDrain measures how fast a backlog left by an outage is delivered
// to an in-process JetStream: events/s are reported.
func BenchmarkDrain(b *testing.B) {
	const backlog = 2000
	srv := startServer(b, -1, b.TempDir())
	_, js := connect(b, serverPort(srv))
	ensureStream(b, js)
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		r, err := NewRecorder(Config{Dir: b.TempDir(), Site: "lab", Edge: "edge" + strconv.Itoa(i)})
		if err != nil {
			b.Fatal(err)
		}
		emitN(r, proto.EventDHCPDiscover, 0, backlog)
		start := time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx, js) }()
		waitfor.True(b, "drain", func() bool { return r.Stats().Sent == backlog })
		total += time.Since(start)
		cancel()
		<-done
		r.Close()
	}
	b.ReportMetric(float64(backlog*b.N)/total.Seconds(), "events/s")
}
