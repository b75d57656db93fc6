package service

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/selector"
	"github.com/fleetboot/fleetboot/test/natstest"
)

// benchImport imports n hosts through ImportHosts as the CLI does: every
// chunk checked, then every chunk applied. It reports hosts/s.
func benchImport(b *testing.B, n int) {
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		_, js := natstest.Connect(b, natstest.Start(b).ClientURL())
		s, err := New(ctx, Config{JS: js})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.AddSite(ctx, proto.Site{Name: "lab", Networks: []proto.Network{{Subnet: "10.0.0.0/8"}}}); err != nil {
			b.Fatal(err)
		}
		if _, err := s.AddImage(ctx, testImage("deb")); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		for _, check := range []bool{true, false} {
			for from := 0; from < n; from += 1000 {
				rep, err := s.ImportHosts(ctx, proto.HostImportRequest{Check: check, Rows: importRows(min(1000, n-from), from)})
				if err != nil || len(rep.Refused) > 0 {
					b.Fatalf("import: %v %v", err, rep.Refused)
				}
			}
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "hosts/s")
}

func BenchmarkImport10k(b *testing.B)  { benchImport(b, 10_000) }
func BenchmarkImport100k(b *testing.B) { benchImport(b, 100_000) }

// BenchmarkPolicyEvaluation: 10 000 discovered machines, each offered to
// 100 policies (the pure evaluation a report or a policy add runs before
// any claim). Reports machines/s.
func BenchmarkPolicyEvaluation(b *testing.B) {
	var ps []proto.Policy
	for i := range 100 {
		ps = append(ps, proto.Policy{Name: fmt.Sprintf("p%03d", i), Priority: i % 7, Image: "deb",
			Match: fmt.Sprintf("labels.rack=r%d,facts.memory_gib>=%d,facts.dmi.vendor=QEMU,facts.disks[0].size_gib>10", i, 16*(i%8))})
	}
	cs := compile(ps)
	machines := make([]json.RawMessage, 10_000)
	for i := range machines {
		mac := fmt.Sprintf("02:00:00:00:%02x:%02x", byte(i>>8), byte(i))
		machines[i] = factsJSON(mac, float64(8*(i%32)))
	}
	labels := map[string]string{"rack": "r50"}
	for b.Loop() {
		for i, f := range machines {
			fs, _ := selector.DecodeFacts(f)
			vs := evaluate(cs, "lab", selector.Subject{Labels: labels, Facts: fs, Fields: map[string]string{"mac": fmt.Sprint(i), "site": "lab"}}, false)
			if len(vs) != 100 {
				b.Fatal(len(vs))
			}
		}
	}
	b.ReportMetric(float64(len(machines))*float64(b.N)/b.Elapsed().Seconds(), "machines/s")
}
