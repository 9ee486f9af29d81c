//go:build !linux

package engine

import "net"

// setSendBuffer asks for a send buffer of n bytes on c, as much of it as
// the system allows.
func setSendBuffer(c *net.UnixConn, n int) error { return c.SetWriteBuffer(n) }
