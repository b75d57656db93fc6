package edge

import (
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetboot/fleetboot/edge/events"
	"github.com/fleetboot/fleetboot/edge/httpboot"
	"github.com/fleetboot/fleetboot/edge/tftp"
)

// newTFTP binds the TFTP server (nil when disabled). Generated files such as
// per-client iPXE scripts and GRUB configs come from the HTTP boot handler;
// binaries from BootDir; image artifacts (artifacts/<image>/<file>) from the
// cache, with the HTTP handler deciding which ones the site serves.
func newTFTP(cfg Config, boot *httpboot.Handler, files tftp.VerifiedFiles, rec *events.Recorder, rep tftp.Repeats, macForIP func(net.IP) string, reg prometheus.Registerer, log *slog.Logger) (*tftp.Server, error) {
	if cfg.TFTPListen == "" {
		return nil, nil
	}
	s, err := tftp.NewServer(tftp.Config{
		Listen:  cfg.TFTPListen,
		Root:    cfg.BootDir,
		Dynamic: tftp.DynamicFunc(boot.LookupTFTP),
		Images:  boot,
		Cache:   files,
		Events:  rec,
		Logger:  log,
		// Name the machine in TFTP events from its DHCP lease.
		MACForIP: macForIP,
		// Refusals counted per address and window, over a per-address rate.
		RateLimit: tftp.RateLimit{Repeats: rep, Rate: cfg.TFTPSourceRate},
		Metrics:   reg,
	})
	if err != nil {
		return nil, err
	}
	if _, err := s.Listen(); err != nil {
		s.Close() // the root directory NewServer opened
		return nil, err
	}
	return s, nil
}
