package bench

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/test/e2e"
)

// The default private network of a benchmark: a server host and a client
// host on one bridge inside namespaces the benchmark creates.
const (
	serverAddr   = "10.77.0.1"
	clientAddr   = "10.77.0.2"
	serverPrefix = "10.77.0.0/16"
)

// fleetbootName is the target whose figures are divided by each
// reference's.
const fleetbootName = "fleetboot"

// benchEnv is a private network with a server host and a client host.
type benchEnv struct {
	net    *e2e.Network
	srv    *e2e.Host
	cli    *e2e.Host
	dir    string
	addr   string // the server's address
	prefix string // the network's prefix
	// servers are the processes of the server under test whose CPU time
	// a benchmark reports (BenchmarkDHCP): all of fleetboot's, Kea's,
	// dnsmasq's.
	servers []*e2e.Proc
}

// newEnv builds a fresh network per target so servers never share ports
// or leftover state.
func newEnv(b *testing.B) *benchEnv { return newEnvOn(b, serverPrefix, serverAddr, clientAddr) }

func newEnvOn(b *testing.B, prefix, srv, cli string) *benchEnv {
	b.Helper()
	e2e.RequireRoot(b)
	env := &benchEnv{dir: b.TempDir(), addr: srv, prefix: prefix}
	env.net = e2e.NewNetwork(b, prefix)
	env.srv = env.net.AddHost(b, "srv", srv, "")
	env.cli = env.net.AddHost(b, "cli", cli, "")
	return env
}

// results collects one benchmark's figures per server so that fleetboot's
// can be printed as a ratio to each reference measured in the same run.
type results struct {
	area string
	vals map[string]map[string]float64 // metric -> server -> value
}

func newResults(area string) *results {
	return &results{area: area, vals: map[string]map[string]float64{}}
}

// add records a figure and prints it as a summary row. Rows of fleetboot
// carry its ratio to every reference server already measured for the same
// metric; higherBetter says which way the ratio reads.
func (r *results) add(b *testing.B, metric, server string, v float64, unit string, higherBetter bool) {
	b.Helper()
	m := r.vals[metric]
	if m == nil {
		m = map[string]float64{}
		r.vals[metric] = m
	}
	m[server] = v
	ratio := ""
	if server == fleetbootName {
		var refs []string
		for ref := range m {
			if ref != fleetbootName {
				refs = append(refs, ref)
			}
		}
		sort.Strings(refs)
		var parts []string
		for _, ref := range refs {
			if m[ref] == 0 {
				continue
			}
			parts = append(parts, fmt.Sprintf("%.2fx %s", v/m[ref], ref))
		}
		ratio = strings.Join(parts, ", ")
		if ratio != "" {
			if higherBetter {
				ratio += " (higher is better)"
			} else {
				ratio += " (lower is better)"
			}
		}
	}
	summary(b, r.area, metric, server, fmtValue(v, unit), ratio)
}

// summary prints one row of the table that `make bench` shows at the end
// (it collects the lines starting with "SUMMARY|" from the log).
func summary(b *testing.B, area, metric, server, value, ratio string) {
	b.Helper()
	b.Logf("SUMMARY| %-5s | %-34s | %-10s | %-16s | %s", area, metric, server, value, ratio)
}

func fmtValue(v float64, unit string) string {
	switch {
	case unit == "": // a count
		return fmt.Sprintf("%.0f", v)
	case v >= 1000:
		return fmt.Sprintf("%.0f %s", v, unit)
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	default:
		return fmt.Sprintf("%.3g %s", v, unit)
	}
}

// cpuSample is the machine's CPU time so far, in clock ticks, from the
// first line of /proc/stat. Every namespace's servers and clients share
// the same cores, so the busy share over a transfer says whether the
// cores, rather than one server, were its limit.
type cpuSample struct{ busy, total uint64 }

func readCPU(b *testing.B) cpuSample {
	b.Helper()
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatalf("cpu time: %v", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	// cpu user nice system idle iowait irq softirq steal (guest time is
	// already in user and nice).
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		b.Fatalf("cpu time: unexpected /proc/stat line %q", line)
	}
	var s cpuSample
	for i, v := range f[1:9] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			b.Fatalf("cpu time: /proc/stat field %d: %v", i+1, err)
		}
		s.total += n
		if i != 3 && i != 4 { // idle, iowait
			s.busy += n
		}
	}
	return s
}

// busyPercent is the share of all the machine's cores that was busy
// between two samples: 100 means every core was busy all along.
func busyPercent(from, to cpuSample) float64 {
	if to.total <= from.total {
		return 0
	}
	return 100 * float64(to.busy-from.busy) / float64(to.total-from.total)
}

// procCPU is the CPU time (user and system, seconds) the processes have
// used so far, from /proc/PID/stat.
func procCPU(b *testing.B, procs []*e2e.Proc) float64 {
	b.Helper()
	var ticks uint64
	for _, p := range procs {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID()))
		if err != nil {
			b.Fatalf("cpu time of %s: %v", p.Name, err)
		}
		// The command name, field 2, is in parentheses and may hold
		// spaces: count the fields after its closing one. utime and
		// stime are fields 14 and 15.
		rest := string(data)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) < 13 {
			b.Fatalf("cpu time of %s: short /proc stat %q", p.Name, data)
		}
		for _, v := range f[11:13] {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				b.Fatalf("cpu time of %s: %v", p.Name, err)
			}
			ticks += n
		}
	}
	return float64(ticks) / 100 // USER_HZ
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile of sorted durations (p in [0,100]).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

// writeFile writes size bytes of a non-zero pattern that depends on seed
// (not sparse: servers must really read it; different seeds give different
// contents, so a content-addressed cache stores them apart).
func writeFile(b *testing.B, path string, size int64, seed uint64) {
	b.Helper()
	f, err := os.Create(path + ".tmp")
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(rng.UintN(255) + 1)
	}
	for n := int64(0); n < size; n += int64(len(chunk)) {
		chunk[0], chunk[1] = byte(n>>20), byte(n>>28) // no two MiB alike
		if _, err := f.Write(chunk[:min(int64(len(chunk)), size-n)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		b.Fatal(err)
	}
}
