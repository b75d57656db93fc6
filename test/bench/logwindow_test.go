package bench

import (
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/test/e2e"
)

// TestLogWindow reads the kernel's TFTP window from each server's log as
// they print it (dnsmasq's tftp lines, the edge's slog lines): lines from
// before power-on and other files are skipped; a log without the pair is
// an error, not a zero.
func TestLogWindow(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	at := func(ms int, text string) e2e.Line {
		return e2e.Line{At: t0.Add(time.Duration(ms) * time.Millisecond), Text: text}
	}
	dnsmasq := []e2e.Line{
		at(-5000, "dnsmasq-tftp[7]: sent /d/tftp/grub/grub.cfg to 10.77.0.150"), // an earlier boot
		at(-4000, "dnsmasq-tftp[7]: sent /d/tftp/vmlinuz to 10.77.0.150"),
		at(100, "dnsmasq-tftp[7]: sent /d/tftp/bootx64.efi to 10.77.0.151"),
		at(900, "dnsmasq-tftp[7]: file /d/tftp/grub/x86_64-efi/fs.lst not found for 10.77.0.151"),
		at(1000, "dnsmasq-tftp[7]: sent /d/tftp/grub/grub.cfg to 10.77.0.151"),
		at(6250, "dnsmasq-tftp[7]: sent /d/tftp/vmlinuz to 10.77.0.151"),
		at(6400, "dnsmasq-tftp[7]: sent /d/tftp/initrd.gz to 10.77.0.151"),
	}
	edge := []e2e.Line{
		at(1000, `time=2026-11-27T14:00:01Z level=INFO msg=sent component=tftp ip=10.77.0.101 file=grub/grub.cfg bytes=612 duration_ms=3`),
		at(1200, `time=2026-11-27T14:00:01Z level=INFO msg="tftp: request refused" reason="not found" file=vmlinuz`),
		at(5000, `time=2026-11-27T14:00:05Z level=INFO msg=sent component=tftp ip=10.77.0.101 file=artifacts/boot/vmlinuz sha256=ab bytes=8000000 duration_ms=3990`),
	}
	tests := []struct {
		name   string
		lines  []e2e.Line
		since  time.Time
		sent   string // which server's lines
		second string
		want   time.Duration // 0: an error
	}{
		{"dnsmasq", dnsmasq, t0, "dnsmasq", "vmlinuz", 5250 * time.Millisecond},
		{"dnsmasq, no kernel after power-on", dnsmasq[:5], t0, "dnsmasq", "vmlinuz", 0},
		{"edge", edge, t0, "edge", "/vmlinuz", 4 * time.Second},
		{"edge, power-on after grub.cfg", edge, t0.Add(2 * time.Second), "edge", "/vmlinuz", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			re := dnsmasqSentRE
			if tc.sent == "edge" {
				re = edgeSentRE
			}
			got, err := logWindow(tc.lines, tc.since, re, "grub/grub.cfg", tc.second)
			if tc.want == 0 {
				if err == nil {
					t.Fatalf("window %v, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("window %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
