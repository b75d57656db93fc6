package edge

import (
	"log/slog"

	"github.com/fleetboot/fleetboot/edge/events"
	"github.com/fleetboot/fleetboot/edge/httpboot"
	"github.com/fleetboot/fleetboot/edge/tftp"
)

// newTFTP binds the TFTP server (nil when disabled). Generated files such as
// per-MAC GRUB configs come from the HTTP boot handler; binaries from BootDir.
func newTFTP(cfg Config, boot *httpboot.Handler, rec *events.Recorder, log *slog.Logger) (*tftp.Server, error) {
	if cfg.TFTPListen == "" {
		return nil, nil
	}
	s, err := tftp.NewServer(tftp.Config{
		Listen:  cfg.TFTPListen,
		Root:    cfg.BootDir,
		Dynamic: tftp.DynamicFunc(boot.LookupTFTP),
		Events:  rec,
		Logger:  log,
	})
	if err != nil {
		return nil, err
	}
	if _, err := s.Listen(); err != nil {
		return nil, err
	}
	return s, nil
}
