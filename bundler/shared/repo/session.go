package repo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
)

// Sessions over git:// and ssh:// are pullship's own (not go-git's): they
// dial with the caller's context and a connect timeout, abandon a server
// that sends nothing for the stall timeout, read every reply through a
// budget, and speak protocol v2 where the server does (go-git v5 has no
// v2 client).

const (
	// DefaultConnectTimeout bounds a TCP connect (and an SSH handshake's
	// first reply, through the stall timeout).
	DefaultConnectTimeout = 30 * time.Second
	// DefaultStallTimeout is how long a server may send nothing before
	// the operation is abandoned: git servers send keep-alives every 5 s
	// while they prepare a pack.
	DefaultStallTimeout = 60 * time.Second
)

// ErrStalled marks an operation abandoned because the server sent nothing
// (or took nothing) for the stall timeout. It is a network failure, never
// a refusal; a fetch it ends is also an [ErrConnectionCut].
var ErrStalled = errors.New("server stalled")

// stallError is a stall with its timeout.
type stallError struct{ d time.Duration }

func (e stallError) Error() string {
	return fmt.Sprintf("%v: nothing received for %s", ErrStalled, e.d)
}
func (e stallError) Is(target error) bool { return target == ErrStalled }

// Counters are what a remote moved over the network since it was opened.
type Counters struct {
	BytesRead    int64 // bytes received (the network's, before decompression)
	BytesWritten int64 // bytes sent
	Stalls       int64 // operations abandoned by the stall timeout
	// Requests counts the connections made over git:// and ssh:// (one
	// per operation) and the HTTP requests.
	Requests int64
}

type counters struct {
	read, written, stalls, requests atomic.Int64
}

func (c *counters) snapshot() Counters {
	return Counters{BytesRead: c.read.Load(), BytesWritten: c.written.Load(), Stalls: c.stalls.Load(), Requests: c.requests.Load()}
}

// stallConn is a connection whose every read and write must make progress
// within stall: each sets a deadline. A deadline that passes marks the
// connection stalled, whatever layer (the SSH library) saw the error.
//
// Reads wait without a deadline while the connection rests (no reply is
// awaited: a session kept open between two fetches by id): the
// SSH library reads the connection all the time, so a read deadline there
// would cut a session that is merely idle.
type stallConn struct {
	net.Conn
	stall   time.Duration
	stalled atomic.Bool
	c       *counters

	mu      sync.Mutex // orders the deadline a read sets with rest and await
	resting bool
}

func (s *stallConn) Read(b []byte) (int, error) {
	s.readDeadline()
	n, err := s.Conn.Read(b)
	s.c.read.Add(int64(n))
	return n, s.check(err)
}

// readDeadline starts the stall timeout of the next read (none while
// resting). Setting it takes effect on a read already waiting.
func (s *stallConn) readDeadline() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.resting {
		s.Conn.SetReadDeadline(time.Time{})
	} else {
		s.Conn.SetReadDeadline(time.Now().Add(s.stall))
	}
}

// rest stops the stall timeout of reads: no reply is awaited until await.
func (s *stallConn) rest() {
	s.mu.Lock()
	s.resting = true
	s.mu.Unlock()
	s.readDeadline()
}

// await starts it again: a request went out, its reply is awaited.
func (s *stallConn) await() {
	s.mu.Lock()
	s.resting = false
	s.mu.Unlock()
	s.readDeadline()
}

func (s *stallConn) Write(b []byte) (int, error) {
	s.Conn.SetWriteDeadline(time.Now().Add(s.stall))
	n, err := s.Conn.Write(b)
	s.c.written.Add(int64(n))
	return n, s.check(err)
}

func (s *stallConn) check(err error) error {
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		if s.stalled.CompareAndSwap(false, true) {
			s.c.stalls.Add(1)
		}
		return stallError{s.stall}
	}
	return err
}

// session is one exchange with git-upload-pack or git-receive-pack over a
// connection of its own.
type session struct {
	pkt    *pktReader
	br     *bufio.Reader // under pkt: a raw pack (no sideband) is read from it
	w      io.Writer
	conn   *stallConn
	stderr *firstBytes // ssh: what the server wrote on stderr
	ctx    context.Context
	stop   func() bool // unregisters the context's close
	closer func() error
	// closeWrite ends what the client sends (git-upload-pack v0 then
	// sends its reply and exits).
	closeWrite func() error
}

func (s *session) Close() error {
	s.stop()
	return s.closer()
}

// send writes a request; its reply is awaited from then on.
func (s *session) send(w *pktWriter) error {
	s.conn.await()
	if _, err := s.w.Write(w.b); err != nil {
		return s.fail(err)
	}
	return nil
}

// fail explains an error of the session: the context's end, a stall, or
// what the server wrote on stderr before it closed.
func (s *session) fail(err error) error {
	if err == nil {
		return nil
	}
	if cerr := s.ctx.Err(); cerr != nil {
		return cerr
	}
	if s.conn.stalled.Load() && !errors.Is(err, ErrStalled) {
		return fmt.Errorf("%w (%v)", stallError{s.conn.stall}, err)
	}
	if s.stderr != nil {
		if msg := s.stderr.String(); msg != "" && !errors.As(err, new(*RemoteError)) {
			return fmt.Errorf("%w: server said: %s", err, msg)
		}
	}
	return err
}

// sessionReader turns the errors of reads into the session's.
type sessionReader struct {
	r io.Reader
	s *session
}

func (r sessionReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if err != nil && err != io.EOF {
		err = r.s.fail(err)
	}
	if err == io.EOF && (r.s.conn.stalled.Load() || r.s.ctx.Err() != nil) {
		err = r.s.fail(err)
	}
	return n, err
}

// firstBytes keeps the first bytes written to it (a server's error
// message), up to a bound, and drops the rest.
type firstBytes struct {
	mu  sync.Mutex
	buf []byte
}

func (t *firstBytes) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if room := maxServerText - len(t.buf); room > 0 {
		t.buf = append(t.buf, b[:min(room, len(b))]...)
	}
	return len(b), nil
}

func (t *firstBytes) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return serverText(t.buf)
}

// dial connects to the host of r's URL with the connect timeout and wraps
// the connection in the stall timeout. The context's end closes it.
func (r *Remote) dial(ctx context.Context, defaultPort string) (*stallConn, error) {
	host := r.u.Hostname()
	port := r.u.Port()
	if port == "" {
		port = defaultPort
	}
	d := net.Dialer{Timeout: r.connectTimeout, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, err
	}
	return &stallConn{Conn: c, stall: r.stallTimeout, c: &r.counters}, nil
}

// service is "git-upload-pack" or "git-receive-pack"; v2 asks the server
// for protocol version 2 (it may answer in v0). Each session is a
// connection of its own, counted as a request.
func (r *Remote) openSession(ctx context.Context, service string, v2 bool) (*session, error) {
	r.counters.requests.Add(1)
	switch r.u.Scheme {
	case "git":
		return r.gitSession(ctx, service, v2)
	case "ssh":
		return r.sshSession(ctx, service, v2)
	}
	return nil, fmt.Errorf("no session for %s", r.u.Scheme)
}

// gitSession speaks to git daemon: one request packet naming the service,
// the path and the host (and "version=2" as an extra parameter).
func (r *Remote) gitSession(ctx context.Context, service string, v2 bool) (*session, error) {
	conn, err := r.dial(ctx, "9418")
	if err != nil {
		return nil, err
	}
	s := r.newSession(ctx, conn, conn, conn, conn.Close)
	s.closeWrite = func() error {
		if tc, ok := conn.Conn.(*net.TCPConn); ok {
			return tc.CloseWrite()
		}
		return nil
	}
	req := service + " " + r.u.Path + "\x00host=" + r.u.Host + "\x00"
	if v2 {
		req += "\x00version=2\x00"
	}
	if len(req)+4 > pktMaxLen {
		s.Close()
		return nil, errors.New("repository path too long")
	}
	w := &pktWriter{b: fmt.Appendf(nil, "%04x%s", len(req)+4, req)}
	if err := s.send(w); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (r *Remote) newSession(ctx context.Context, conn *stallConn, rd io.Reader, w io.Writer, closer func() error) *session {
	s := &session{conn: conn, w: w, ctx: ctx, closer: closer}
	s.br = bufio.NewReaderSize(sessionReader{rd, s}, responseBuffer)
	s.pkt = newPktReader(s.br)
	s.stop = context.AfterFunc(ctx, func() { conn.Close() })
	return s
}

// sshSession runs the service over SSH with the remote's auth method
// (known_hosts pinning, key or agent: see [Credentials]). GIT_PROTOCOL asks
// for version 2; OpenSSH's sshd passes it on only with "AcceptEnv
// GIT_PROTOCOL", and a server that drops it answers in v0.
func (r *Remote) sshSession(ctx context.Context, service string, v2 bool) (*session, error) {
	cfg, err := r.sshConfig()
	if err != nil {
		return nil, err
	}
	conn, err := r.dial(ctx, "22")
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(r.u.Hostname(), portOr(r.u.Port(), "22"))
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	cc, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	stop()
	if err != nil {
		conn.Close()
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		if conn.stalled.Load() {
			return nil, fmt.Errorf("ssh handshake: %w", stallError{conn.stall})
		}
		return nil, err
	}
	client := ssh.NewClient(cc, chans, reqs)
	sess, err := client.NewSession()
	if err != nil {
		client.Close()
		return nil, err
	}
	if v2 {
		// Refused unless the server accepts the variable: then v0.
		_ = sess.Setenv("GIT_PROTOCOL", "version=2")
	}
	stdin, err := sess.StdinPipe()
	if err != nil {
		client.Close()
		return nil, err
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		client.Close()
		return nil, err
	}
	stderr := &firstBytes{}
	sess.Stderr = stderr
	if err := sess.Start(service + " " + shellQuote(r.u.Path)); err != nil {
		client.Close()
		return nil, err
	}
	s := r.newSession(ctx, conn, stdout, stdin, func() error {
		sess.Close()
		return client.Close()
	})
	s.stderr = stderr
	s.closeWrite = stdin.Close
	return s, nil
}

func portOr(p, def string) string {
	if p == "" {
		return def
	}
	return p
}

// sshConfig is the client config of the remote's auth method; without one,
// the SSH agent with the host key pinned in ~/.ssh/known_hosts.
func (r *Remote) sshConfig() (*ssh.ClientConfig, error) {
	auth := r.auth
	if auth == nil {
		a, err := Credentials{SSHAgent: true}.sshAuth(r.u)
		if err != nil {
			return nil, err
		}
		auth = a
	}
	a, ok := auth.(gitssh.AuthMethod)
	if !ok {
		return nil, fmt.Errorf("auth method %s is not for ssh", auth.Name())
	}
	cfg, err := a.ClientConfig()
	if err != nil {
		return nil, err
	}
	if cfg.HostKeyCallback == nil {
		return nil, errors.New("no host key check configured")
	}
	c := *cfg
	c.Timeout = r.connectTimeout
	return &c, nil
}

// shellQuote quotes a path for the remote shell (git-shell accepts this
// form only).
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
