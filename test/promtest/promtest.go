// Package promtest reads a Prometheus registry the way a test wants to
// compare it: one map from series to value.
package promtest

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Values gathers reg into series → value. A series is written
// name{label=value,...} with labels in the registry's (sorted) order, or
// name alone; a histogram gives name_count and name_sum; counters and
// gauges their value.
func Values(reg prometheus.Gatherer) (map[string]float64, error) {
	fams, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			name := f.GetName()
			if len(labels) > 0 {
				name += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.GetCounter() != nil:
				out[name] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[name] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				out[f.GetName()+"_count"] = float64(m.GetHistogram().GetSampleCount())
				out[f.GetName()+"_sum"] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out, nil
}
