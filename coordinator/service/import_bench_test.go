package service

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/selector"
	"github.com/fleetboot/fleetboot/test/natstest"
)

// benchImport imports n hosts through ImportHosts as the CLI does: every
// chunk checked, then the rows the check did not find unchanged applied.
// With again, the same n hosts are imported once before the timer starts,
// so what is timed is the re-import of an unchanged file. It reports hosts/s.
func benchImport(b *testing.B, n int, again bool) {
	ctx := context.Background()
	importAll := func(s *Service) (unchanged int) {
		same := map[int]bool{}
		for from := 0; from < n; from += 1000 {
			rep, err := s.ImportHosts(ctx, proto.HostImportRequest{Check: true, Rows: importRows(min(1000, n-from), from)})
			if err != nil || len(rep.Refused) > 0 {
				b.Fatalf("check: %v %v", err, rep.Refused)
			}
			for _, l := range rep.UnchangedLines {
				same[l] = true
			}
		}
		for from := 0; from < n; from += 1000 {
			rows := slices.DeleteFunc(importRows(min(1000, n-from), from), func(r proto.ImportRow) bool { return same[r.Line] })
			if len(rows) == 0 {
				continue
			}
			rep, err := s.ImportHosts(ctx, proto.HostImportRequest{Rows: rows})
			if err != nil || len(rep.Refused) > 0 {
				b.Fatalf("import: %v %v", err, rep.Refused)
			}
		}
		return len(same)
	}
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
		if again {
			importAll(s)
		}
		b.StartTimer()
		if got, want := importAll(s), map[bool]int{true: n}[again]; got != want {
			b.Fatalf("%d rows unchanged, want %d", got, want)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "hosts/s")
}

func BenchmarkImport10k(b *testing.B)  { benchImport(b, 10_000, false) }
func BenchmarkImport100k(b *testing.B) { benchImport(b, 100_000, false) }

// BenchmarkReimport100k: the same 100 000 hosts imported again, unchanged;
// each row costs one read and no write.
func BenchmarkReimport100k(b *testing.B) { benchImport(b, 100_000, true) }

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

// BenchmarkKVPutReference is the reference the import benchmarks compare
// with, in the same run on the same kind of server: one host value written
// with one KV put at a time, as host set writes it (without its index
// reads and writes). Reports hosts/s.
func BenchmarkKVPutReference(b *testing.B) {
	ctx := context.Background()
	_, js := natstest.Connect(b, natstest.Start(b).ClientURL())
	s, err := New(ctx, Config{JS: js})
	if err != nil {
		b.Fatal(err)
	}
	rows := importRows(10_000, 0)
	for b.Loop() {
		for _, r := range rows {
			h := proto.Host{MAC: r.MAC, Site: r.Site, Image: r.Image, IP: r.IP, Hostname: r.Hostname, Labels: r.Labels, State: proto.StateBoot}
			key, _ := proto.HostKey(h.Site, h.MAC)
			if err := s.put(ctx, proto.BucketHosts, key, h); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(len(rows))*float64(b.N)/b.Elapsed().Seconds(), "hosts/s")
}
