package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCommandArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		pid  int
		argv []string
		want []string
	}{
		{"the discovery initramfs's /init", 1, []string{"/init"}, []string{"discover"}},
		{"its /init with stray kernel words", 1, []string{"/init", "quiet", "splash"}, []string{"discover"}},
		{"a container's entrypoint", 1, []string{"/fleetboot", "coordinator", "--auth"}, []string{"coordinator", "--auth"}},
		{"a container's entrypoint on PATH", 1, []string{"fleetboot", "edge"}, []string{"edge"}},
		{"a shell", 4242, []string{"fleetboot", "host", "ls"}, []string{"host", "ls"}},
		{"not PID 1, named init", 4242, []string{"/init", "version"}, []string{"version"}},
	} {
		if got := commandArgs(tc.pid, tc.argv); !cmp.Equal(tc.want, got) {
			t.Errorf("%s: commandArgs(%d, %q) = %q, want %q", tc.name, tc.pid, tc.argv, got, tc.want)
		}
	}
}
