package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
)

// startServer runs an in-process nats-server with JetStream on 127.0.0.1.
// port -1 picks a free one; a fixed port and the same storeDir bring back
// "the same" server after a stop.
func startServer(t testing.TB, port int, storeDir string) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: storeDir,
		NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatalf("nats server on port %d not ready", port)
	}
	t.Cleanup(func() { stopServer(s) })
	return s
}

func stopServer(s *server.Server) {
	s.Shutdown()
	s.WaitForShutdown()
}

func serverPort(s *server.Server) int { return s.Addr().(*net.TCPAddr).Port }

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// connect returns a JetStream context on a connection that keeps trying to
// (re)connect forever, as the edge's does.
func connect(t testing.TB, port int) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port),
		nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func ensureStream(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := EnsureStream(ctx, js, 1, 64<<20); err != nil {
		t.Fatal(err)
	}
}

// startRun runs r.Run in the background; the returned function stops it and
// waits for it to return.
func startRun(t testing.TB, r *Recorder, js jetstream.JetStream) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, js) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func newRecorder(t testing.TB, dir string, max int) *Recorder {
	t.Helper()
	r, err := NewRecorder(Config{Dir: dir, Site: "lab", Edge: "edge1", MaxBuffered: max})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// streamEvents reads every message of the EVENTS stream, in stream order.
func streamEvents(t testing.TB, js jetstream.JetStream) []storedEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, proto.StreamEvents)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	var out []storedEvent
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("get msg %d: %v", seq, err)
		}
		var ev proto.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("msg %d: %v", seq, err)
		}
		out = append(out, storedEvent{Subject: m.Subject, MsgID: m.Header.Get(jetstream.MsgIDHeader), Event: ev})
	}
	return out
}

type storedEvent struct {
	Subject string
	MsgID   string
	Event   proto.Event
}

// streamCount returns how many messages the EVENTS stream holds, or -1 if
// it cannot tell (server down).
func streamCount(js jetstream.JetStream) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, proto.StreamEvents)
	if err != nil {
		return -1
	}
	info, err := st.Info(ctx)
	if err != nil {
		return -1
	}
	return int(info.State.Msgs)
}

// summary reduces stored events to what the tests compare: the kind and
// either the test's sequence number "n" or a drop count.
func summary(evs []storedEvent) []string {
	var out []string
	for _, e := range evs {
		switch e.Event.Kind {
		case KindDropped:
			out = append(out, "dropped:"+e.Event.Detail["count"])
		default:
			out = append(out, e.Event.Kind+":"+e.Event.Detail["n"])
		}
	}
	return out
}

// emitN emits events n = from .. from+count-1 of kind k.
func emitN(r *Recorder, kind string, from, count int) {
	for i := from; i < from+count; i++ {
		r.Emit(kind, fmt.Sprintf("52:54:00:00:00:%02x", i%256), map[string]string{"n": strconv.Itoa(i)})
	}
}

// want lists "kind:n" for n = from .. from+count-1.
func want(kind string, from, count int) []string {
	var out []string
	for i := from; i < from+count; i++ {
		out = append(out, kind+":"+strconv.Itoa(i))
	}
	return out
}

// rawCounter counts every publish on the event subjects as the server saw
// it, duplicates included: JetStream's dedupe would hide a resend from the
// stream, but not from a plain subscriber.
type rawCounter struct {
	nc  *nats.Conn
	sub *nats.Subscription
}

func countRaw(t testing.TB, port int) *rawCounter {
	t.Helper()
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.SubscribeSync(proto.SubjectEventsPrefix + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &rawCounter{nc: nc, sub: sub}
}

// count returns the publishes seen so far; the flush makes sure everything
// the server routed before now has arrived.
func (c *rawCounter) count(t testing.TB) int {
	t.Helper()
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	n, _, err := c.sub.Pending()
	if err != nil {
		t.Fatal(err)
	}
	return n
}
