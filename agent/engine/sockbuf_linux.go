package engine

import (
	"net"
	"syscall"
)

// setSendBuffer asks for a send buffer of n bytes on c: past the system's
// limit (net.core.wmem_max, 208 KiB unless raised) when the agent may
// (CAP_NET_ADMIN, which root has), else as much of it as the limit allows.
// Linux allocates twice what is asked, for its bookkeeping.
func setSendBuffer(c *net.UnixConn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, n)
		if serr != nil {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, n)
		}
	}); err != nil {
		return err
	}
	return serr
}
