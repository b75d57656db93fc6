package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Client architectures of option 93 (RFC 4578, IANA "Processor Architecture
// Types") that the boot-file table knows.
const (
	ArchBIOS         uint16 = 0
	ArchEFIx64       uint16 = 7
	ArchEFIBC        uint16 = 9 // firmware that says "EFI byte code" is in practice x86-64
	ArchEFIarm64     uint16 = 11
	ArchEFIx64HTTP   uint16 = 16
	optIPXEEncap            = 175 // iPXE's encapsulated options; present means "I am iPXE"
	optIPXENoPXEDHCP        = 176 // sub-option of 175: do not wait for ProxyDHCP offers
)

// ErrNotRequest is returned by ParseMachine for packets that are not a
// client's DHCP request (BOOTREPLYs, other hardware types, no message type).
var ErrNotRequest = errors.New("dhcp: not a DHCP client request")

// Refusals of ParseMachine for requests that are well-formed DHCP but that
// the edge will not act on.
var (
	// ErrOptionOverload: option 52 says more options hide in the sname and
	// file fields. The parser never reads them (so an overload loop cannot
	// happen), which means the options seen would be incomplete: the
	// architecture or vendor class could be missing and the wrong boot file
	// chosen. No PXE, HTTP boot or iPXE client sends it.
	ErrOptionOverload = errors.New("dhcp: option overload (52) is not supported")
	// ErrOptionTooLong: an option, after RFC 3396 concatenation of its
	// instances, is longer than MaxOptionLen. No boot client needs that
	// much, and the handler echoes some options (client id, relay info)
	// into replies, which must stay small.
	ErrOptionTooLong = errors.New("dhcp: option too long")
)

// MaxOptionLen bounds one option's value after concatenation: the length a
// single instance can have.
const MaxOptionLen = 255

// Machine is what a request says about the machine that sent it.
type Machine struct {
	MAC          string // canonical colon form
	Type         dhcpv4.MessageType
	XID          string
	Arch         uint16 // option 93, or the Arch field of a PXEClient/HTTPClient vendor class
	HasArch      bool
	VendorClass  string   // option 60
	UserClass    []string // option 77
	IsPXE        bool     // vendor class PXEClient…
	IsHTTPClient bool     // vendor class HTTPClient… (UEFI HTTP boot)
	IsIPXE       bool     // user class "iPXE" or option 175 present
	GIAddr       netip.Addr
	CIAddr       netip.Addr
	RequestedIP  netip.Addr // option 50
	ServerID     netip.Addr // option 54
	GUID         []byte     // option 97, echoed in proxy replies as the PXE spec asks
}

// Relayed reports whether a relay agent forwarded the request.
func (m Machine) Relayed() bool { return m.GIAddr.IsValid() }

// ArchString is the architecture for logs and events ("" when absent).
func (m Machine) ArchString() string {
	if !m.HasArch {
		return ""
	}
	return strconv.Itoa(int(m.Arch))
}

// ParseMachine reads the fields the decision needs from a request. It never
// trusts lengths: every option is checked before use.
func ParseMachine(req *dhcpv4.DHCPv4) (Machine, error) {
	if req == nil || req.OpCode != dhcpv4.OpcodeBootRequest {
		return Machine{}, ErrNotRequest
	}
	if req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		return Machine{}, fmt.Errorf("dhcp: unsupported hardware address %q (type %d): %w", req.ClientHWAddr, req.HWType, ErrNotRequest)
	}
	if req.Options.Has(dhcpv4.OptionOptionOverload) {
		return Machine{}, ErrOptionOverload
	}
	for code, v := range req.Options {
		if len(v) > MaxOptionLen {
			return Machine{}, fmt.Errorf("%w: option %d is %d bytes, at most %d", ErrOptionTooLong, code, len(v), MaxOptionLen)
		}
	}
	mt := req.MessageType()
	if mt == dhcpv4.MessageTypeNone {
		return Machine{}, fmt.Errorf("dhcp: no message type (BOOTP is not served): %w", ErrNotRequest)
	}
	m := Machine{
		MAC:         req.ClientHWAddr.String(),
		Type:        mt,
		XID:         req.TransactionID.String(),
		VendorClass: req.ClassIdentifier(),
		UserClass:   req.UserClass(),
		GIAddr:      addr4(req.GatewayIPAddr),
		CIAddr:      addr4(req.ClientIPAddr),
		RequestedIP: addr4(req.Options.Get(dhcpv4.OptionRequestedIPAddress)),
		ServerID:    addr4(req.Options.Get(dhcpv4.OptionServerIdentifier)),
	}
	m.IsPXE = strings.HasPrefix(m.VendorClass, "PXEClient")
	m.IsHTTPClient = strings.HasPrefix(m.VendorClass, "HTTPClient")
	// Option 93 is a list of 16-bit types; firmware sends one. A malformed
	// (odd-length) option is ignored rather than fatal: the vendor class may
	// still carry the architecture.
	if a := req.Options.Get(dhcpv4.OptionClientSystemArchitectureType); len(a) >= 2 && len(a)%2 == 0 {
		m.Arch, m.HasArch = binary.BigEndian.Uint16(a), true
	} else if a, ok := archFromVendorClass(m.VendorClass); ok {
		m.Arch, m.HasArch = a, true
	}
	for _, uc := range m.UserClass {
		if uc == "iPXE" {
			m.IsIPXE = true
		}
	}
	if req.Options.Has(dhcpv4.GenericOptionCode(optIPXEEncap)) {
		m.IsIPXE = true
	}
	if g := req.Options.Get(dhcpv4.OptionClientMachineIdentifier); len(g) == 17 {
		m.GUID = append([]byte(nil), g...)
	}
	return m, nil
}

// archFromVendorClass reads "PXEClient:Arch:00007:UNDI:003016".
func archFromVendorClass(vc string) (uint16, bool) {
	parts := strings.Split(vc, ":")
	if len(parts) < 3 || parts[1] != "Arch" {
		return 0, false
	}
	n, err := strconv.ParseUint(parts[2], 10, 16)
	if err != nil {
		return 0, false
	}
	return uint16(n), true
}

// addr4 turns a 4-byte field into an address; anything else is invalid.
func addr4(b []byte) netip.Addr {
	if ip := net.IP(b).To4(); ip != nil && (len(b) == 4 || len(b) == 16) {
		a, _ := netip.AddrFromSlice(ip)
		if a.IsUnspecified() {
			return netip.Addr{} // 0.0.0.0 means "not set" in every field we read
		}
		return a
	}
	return netip.Addr{}
}
