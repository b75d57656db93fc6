package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name     string
		path     string
		opts     Options
		fill     func(io.Writer) error
		existing string // content before the write, "" for none
		want     string // content after
		wantMode os.FileMode
		wantErr  bool
	}{
		{name: "new file", path: "a", fill: text("one"), want: "one", wantMode: 0o644},
		{name: "replaces", path: "b", existing: "old", fill: text("new"), want: "new", wantMode: 0o644},
		{name: "secret mode", path: "c", opts: Options{Perm: 0o600}, fill: text("s"), want: "s", wantMode: 0o600},
		{name: "failed fill keeps old", path: "d", existing: "old", fill: func(io.Writer) error { return errors.New("boom") }, want: "old", wantErr: true, wantMode: 0o644},
		{name: "mkdir", path: "sub/dir/e", opts: Options{MkdirAll: true, ModTime: mtime}, fill: text("x"), want: "x", wantMode: 0o644},
		{name: "missing dir", path: "nodir/f", fill: text("x"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.path)
			if tt.existing != "" {
				if err := os.WriteFile(p, []byte(tt.existing), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := Write(p, tt.opts, tt.fill)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if tt.want == "" {
				return
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("content %q, want %q", got, tt.want)
			}
			st, _ := os.Stat(p)
			if st.Mode().Perm() != tt.wantMode {
				t.Errorf("mode %v, want %v", st.Mode().Perm(), tt.wantMode)
			}
			if !tt.opts.ModTime.IsZero() && !st.ModTime().Equal(tt.opts.ModTime) {
				t.Errorf("mtime %v, want %v", st.ModTime(), tt.opts.ModTime)
			}
			// No temporary file is left behind, whatever happened.
			ents, _ := os.ReadDir(filepath.Dir(p))
			for _, e := range ents {
				if len(e.Name()) > 0 && e.Name()[0] == '.' {
					t.Errorf("left behind %s", e.Name())
				}
			}
		})
	}
}

func text(s string) func(io.Writer) error {
	return func(w io.Writer) error { _, err := io.WriteString(w, s); return err }
}
