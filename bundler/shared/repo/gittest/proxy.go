package gittest

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Proxy is a proxy (TCP on loopback, unless [NewProxyOn] says otherwise)
// in front of one server, the counting
// core of gittest's proxies ([CutProxy], [Link]) and a plain counting
// proxy of its own ([NewProxy]). It dials the server for each connection it
// accepts, and counts the connections and the bytes it passes each way. A
// byte is counted just before it is written on: once a client has what it
// asked for, the count holds it, without waiting for the connection to
// close (HTTP clients keep theirs open).
type Proxy struct {
	Addr string // the proxy's host:port (or socket path)

	l  net.Listener
	wg sync.WaitGroup

	up, down, conns atomic.Int64 // client→server, server→client bytes

	mu   sync.Mutex
	open map[net.Conn]bool
}

// Traffic is what a proxy carried: connections accepted, bytes to the
// server (Up) and to the client (Down).
type Traffic struct {
	Conns, Up, Down int64
}

// NewProxy proxies the TCP address target (host:port), passing the bytes
// each way as they come and a half-close each way on.
func NewProxy(target string) (*Proxy, error) { return NewProxyOn("tcp", "127.0.0.1:0", "tcp", target) }

// NewProxyOn is [NewProxy] listening on address of network (a unix socket's
// path, say) for a server at target on targetNetwork.
func NewProxyOn(network, address, targetNetwork, target string) (*Proxy, error) {
	return listenProxy(network, address, targetNetwork, target, func(p *Proxy, c, s net.Conn) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.copy(s, c, &p.up)
			closeWrite(s)
		}()
		p.copy(c, s, &p.down)
		closeWrite(c)
		<-done
	})
}

// newProxy starts a proxy on loopback to the TCP address target whose
// connections serve handles: c the client's, s the server's. Both are
// closed when serve returns.
func newProxy(target string, serve func(p *Proxy, c, s net.Conn)) (*Proxy, error) {
	return listenProxy("tcp", "127.0.0.1:0", "tcp", target, serve)
}

func listenProxy(network, address, targetNetwork, target string, serve func(p *Proxy, c, s net.Conn)) (*Proxy, error) {
	l, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: l.Addr().String(), l: l, open: map[net.Conn]bool{}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				s, err := net.Dial(targetNetwork, target)
				if err != nil {
					c.Close()
					return
				}
				p.track(c, true)
				p.track(s, true)
				defer func() {
					c.Close()
					s.Close()
					p.track(c, false)
					p.track(s, false)
				}()
				serve(p, c, s)
			}()
		}
	}()
	return p, nil
}

// Bytes returns the bytes passed to the server (up) and to the client
// (down) so far.
func (p *Proxy) Bytes() (up, down int64) { return p.up.Load(), p.down.Load() }

// Conns is the number of connections accepted so far.
func (p *Proxy) Conns() int64 { return p.conns.Load() }

// Mark returns a function that reports what passed since Mark was called.
func (p *Proxy) Mark() func() Traffic {
	c0, u0, d0 := p.conns.Load(), p.up.Load(), p.down.Load()
	return func() Traffic {
		return Traffic{Conns: p.conns.Load() - c0, Up: p.up.Load() - u0, Down: p.down.Load() - d0}
	}
}

// Close stops the proxy, closes its connections and waits for them.
func (p *Proxy) Close() {
	p.l.Close()
	p.mu.Lock()
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.open[c] = true
	} else {
		delete(p.open, c)
	}
}

// copy copies src to dst until either fails, adding each read's bytes to n
// before it writes them.
func (p *Proxy) copy(dst io.Writer, src io.Reader, n *atomic.Int64) {
	buf := make([]byte, 64<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if !p.pass(dst, buf[:k], n) {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// pass counts b in n and writes it to dst; it reports whether the write
// went through.
func (p *Proxy) pass(dst io.Writer, b []byte, n *atomic.Int64) bool {
	n.Add(int64(len(b)))
	_, err := dst.Write(b)
	return err == nil
}

// closeWrite half-closes c, if it can: the side that wrote to it is done.
func closeWrite(c net.Conn) {
	if tc, ok := c.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	}
}
