package cache

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{name: "plain bytes", in: "1024", want: 1024},
		{name: "bytes unit", in: "512B", want: 512},
		{name: "GiB", in: "50GiB", want: 50 << 30},
		{name: "MB is SI", in: "500MB", want: 500_000_000},
		{name: "lower case", in: "2gib", want: 2 << 30},
		{name: "space before unit", in: "3 MiB", want: 3 << 20},
		{name: "fraction", in: "1.5TiB", want: 3 << 39},
		{name: "short unit", in: "10k", want: 10_000},
		{name: "empty", in: "", wantErr: true},
		{name: "no number", in: "GiB", wantErr: true},
		{name: "unknown unit", in: "5 parsecs", wantErr: true},
		{name: "zero", in: "0", wantErr: true},
		{name: "negative", in: "-5GiB", wantErr: true},
		{name: "two dots", in: "1.2.3MB", wantErr: true},
		{name: "overflow", in: "99999999TiB", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseSize(%q) = %d, want an error", tt.in, got)
				}
				if want := `"` + tt.in + `"`; !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not quote the input %s", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSize(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseSize(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}
