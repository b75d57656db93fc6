package bytesize

import (
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr string // part of the error, after the quoted input
	}{
		{name: "plain bytes", in: "1024", want: 1024},
		{name: "bytes unit", in: "512B", want: 512},
		{name: "GiB", in: "50GiB", want: 50 << 30},
		{name: "MB is SI", in: "500MB", want: 500_000_000},
		{name: "lower case", in: "2gib", want: 2 << 30},
		{name: "space before unit", in: "3 MiB", want: 3 << 20},
		{name: "surrounding space", in: " 3MiB ", want: 3 << 20},
		{name: "fraction of GiB", in: "1.5GiB", want: 1610612736},
		{name: "fraction of TiB", in: "1.5TiB", want: 3 << 39},
		{name: "fraction exact in decimal", in: "8.2MB", want: 8_200_000}, // a float gives 8199999
		{name: "leading dot", in: ".5KiB", want: 512},
		{name: "fraction of a byte dropped", in: "1.3KiB", want: 1331},
		{name: "short unit", in: "10k", want: 10_000},
		{name: "PiB", in: "2PiB", want: 2 << 50},
		{name: "largest", in: "9223372036854775807", want: math.MaxInt64},
		{name: "largest in units", in: "8191.99PiB", want: 9223360777855707381},
		{name: "empty", in: "", wantErr: "want a number"},
		{name: "only a dot", in: ".GiB", wantErr: "want a number"},
		{name: "no number", in: "GiB", wantErr: "want a number"},
		{name: "unknown unit", in: "5 parsecs", wantErr: "want a number"},
		{name: "garbage before the unit", in: "10xGiB", wantErr: "want a number"},
		{name: "garbage after the unit", in: "10GiBs", wantErr: "want a number"},
		{name: "two units", in: "10GiB5", wantErr: "want a number"},
		{name: "zero", in: "0", wantErr: "at least one byte"},
		{name: "less than a byte", in: "0.0001KB", wantErr: "at least one byte"},
		{name: "fraction of a byte count", in: "1.5", wantErr: "whole number"},
		{name: "negative", in: "-5GiB", wantErr: "want a number"},
		{name: "plus sign", in: "+5GiB", wantErr: "want a number"},
		{name: "exponent", in: "1e9", wantErr: "want a number"},
		{name: "two dots", in: "1.2.3MB", wantErr: "want a number"},
		{name: "overflow by the unit", in: "99999999TiB", wantErr: "too large"},
		{name: "overflow of int64", in: "9223372036854775808", wantErr: "too large"},
		{name: "overflow of a huge number", in: "99999999999999999999999999GiB", wantErr: "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Parse(%q) = %d, want an error", tt.in, got)
				}
				if want := `invalid size "` + tt.in + `": `; !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q, want %q…%q", err, want, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1610612736, "1.5 GiB"},
		{500_000_000, "476.8 MiB"},
		{3 << 39, "1.5 TiB"},
		{math.MaxInt64, "8.0 EiB"},
	}
	for _, tt := range tests {
		if got := Format(tt.in); got != tt.want {
			t.Errorf("Format(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// A formatted size parses back to within the rounding of its one decimal.
func TestFormatParses(t *testing.T) {
	for _, n := range []int64{1024, 1610612736, 50 << 30, 3 << 39} {
		back, err := Parse(strings.ReplaceAll(Format(n), " ", ""))
		if err != nil {
			t.Fatalf("Parse(Format(%d)): %v", n, err)
		}
		if d := math.Abs(float64(back-n)) / float64(n); d > 0.05 {
			t.Errorf("Parse(Format(%d)) = %d", n, back)
		}
	}
}
