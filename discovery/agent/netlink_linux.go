package agent

import (
	"encoding/binary"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// Two rtnetlink requests are all the discovery system needs to configure
// its NIC (an address and a default route); they are written here rather
// than pulling in a netlink library.

func addAddr(ifindex int, ip net.IP, prefix int) error {
	ip4 := ip.To4()
	if ip4 == nil {
		return fmt.Errorf("agent: address %s is not IPv4", ip)
	}
	msg := make([]byte, unix.SizeofIfAddrmsg)
	msg[0] = unix.AF_INET
	msg[1] = byte(prefix)
	msg[3] = unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(msg[4:], uint32(ifindex))
	msg = appendAttr(msg, unix.IFA_LOCAL, ip4)
	msg = appendAttr(msg, unix.IFA_ADDRESS, ip4)
	if err := rtnl(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, msg); err != nil {
		return fmt.Errorf("agent: add address %s/%d: %w", ip, prefix, err)
	}
	return nil
}

func addDefaultRoute(ifindex int, gw net.IP) error {
	gw4 := gw.To4()
	if gw4 == nil {
		return fmt.Errorf("agent: router %s is not IPv4", gw)
	}
	msg := make([]byte, unix.SizeofRtMsg)
	msg[0] = unix.AF_INET
	msg[4] = unix.RT_TABLE_MAIN
	msg[5] = unix.RTPROT_BOOT
	msg[6] = unix.RT_SCOPE_UNIVERSE
	msg[7] = unix.RTN_UNICAST
	msg = appendAttr(msg, unix.RTA_GATEWAY, gw4)
	oif := make([]byte, 4)
	binary.NativeEndian.PutUint32(oif, uint32(ifindex))
	msg = appendAttr(msg, unix.RTA_OIF, oif)
	if err := rtnl(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, msg); err != nil {
		return fmt.Errorf("agent: default route via %s: %w", gw, err)
	}
	return nil
}

func appendAttr(b []byte, typ uint16, data []byte) []byte {
	l := unix.SizeofRtAttr + len(data)
	attr := make([]byte, (l+3)&^3)
	binary.NativeEndian.PutUint16(attr[0:], uint16(l))
	binary.NativeEndian.PutUint16(attr[2:], typ)
	copy(attr[unix.SizeofRtAttr:], data)
	return append(b, attr...)
}

// rtnl sends one request and waits for its acknowledgement.
func rtnl(typ uint16, flags int, body []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], uint16(unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags))
	binary.NativeEndian.PutUint32(msg[8:], 1) // sequence
	msg = append(msg, body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return fmt.Errorf("short netlink ack")
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
				return syscall.Errno(-code)
			}
			return nil
		}
	}
}
