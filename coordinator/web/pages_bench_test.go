package web_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/fleetboot/fleetboot/test/waitfor"
)

// BenchmarkCataloguePages: the images and sites pages count hosts with one
// pass over the hosts index; at 100 and 100 000 hosts, as
// BenchmarkHostsPage.
func BenchmarkCataloguePages(b *testing.B) {
	for _, n := range []int{100, 100_000} {
		f := newFleet(b, nil, nil)
		seedHosts(b, f.nc, "lab", "deb", n)
		waitfor.True(b, "the index to hold every host", func() bool { return f.index.Len() >= n })
		br := f.browser()
		br.login("alice")
		for _, path := range []string{"/images", "/images/deb", "/sites/lab"} {
			b.Run(fmt.Sprintf("page=%s/hosts=%d", path, n), func(b *testing.B) {
				for b.Loop() {
					if p := br.get(path); p.code != http.StatusOK {
						b.Fatalf("HTTP %d", p.code)
					}
				}
			})
		}
	}
}
