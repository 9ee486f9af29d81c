package repo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
	"golang.org/x/crypto/ssh"
)

// sshServer is an in-process SSH server on loopback that lets any client
// in and runs serve for each exec request; its host key is pinned in
// KnownHosts, and Key is a client key for [Credentials].
type sshServer struct {
	Addr, KnownHosts, Key string
}

func newSSHServer(t *testing.T, serve func(cmd string, env []string, ch ssh.Channel)) *sshServer {
	dir := t.TempDir()
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	hostSigner, err := ssh.NewSignerFromKey(hostPriv)
	must(t, err)
	_, clientPriv, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	block, err := ssh.MarshalPrivateKey(clientPriv, "")
	must(t, err)
	s := &sshServer{KnownHosts: filepath.Join(dir, "known_hosts"), Key: filepath.Join(dir, "key")}
	must(t, os.WriteFile(s.Key, pem.EncodeToMemory(block), 0o600))
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	cfg.AddHostKey(hostSigner)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	t.Cleanup(func() { l.Close() })
	s.Addr = l.Addr().String()
	_, port, _ := net.SplitHostPort(s.Addr)
	must(t, os.WriteFile(s.KnownHosts, []byte("[127.0.0.1]:"+port+" "+string(ssh.MarshalAuthorizedKey(hostSigner.PublicKey()))), 0o644))
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
				if err != nil {
					return
				}
				defer sc.Close()
				go ssh.DiscardRequests(reqs)
				for nc := range chans {
					ch, creqs, err := nc.Accept()
					if err != nil {
						return
					}
					go func() {
						defer ch.Close()
						var env []string
						for req := range creqs {
							switch req.Type {
							case "env":
								var kv struct{ Name, Value string }
								ssh.Unmarshal(req.Payload, &kv)
								env = append(env, kv.Name+"="+kv.Value)
								req.Reply(true, nil)
							case "exec":
								var cmd struct{ Command string }
								ssh.Unmarshal(req.Payload, &cmd)
								req.Reply(true, nil)
								go func() {
									serve(cmd.Command, env, ch)
									ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
									ch.Close()
								}()
							default:
								req.Reply(false, nil)
							}
						}
					}()
				}
			}()
		}
	}()
	return s
}

func (s *sshServer) remote(t *testing.T, path string, opts Options) *Remote {
	url := "ssh://git@" + s.Addr + path
	o, err := Credentials{SSHKey: s.Key, KnownHosts: s.KnownHosts}.Options(url)
	must(t, err)
	o.StallTimeout, o.ConnectTimeout = opts.StallTimeout, opts.ConnectTimeout
	r, err := Open(context.Background(), url, o)
	must(t, err)
	return r
}

// TestStalledServer: a server that accepts the connection and then sends
// nothing (git://, ssh:// before the SSH handshake, ssh:// after it, and
// HTTP after the response headers) fails a poll and a fetch within the
// stall timeout, as a network error (ErrStalled; for the fetch also
// ErrConnectionCut), never by the caller's deadline.
func TestStalledServer(t *testing.T) {
	const stall = 300 * time.Millisecond
	opts := Options{StallTimeout: stall}

	silentSSH := newSSHServer(t, func(cmd string, env []string, ch ssh.Channel) {
		io.Copy(io.Discard, ch) // the service starts, and says nothing
	})
	httpURL := gittest.SilentHTTP(t)

	remotes := map[string]func() *Remote{
		"git://": func() *Remote {
			r, err := Open(context.Background(), "git://"+gittest.Silent(t)+"/r.git", opts)
			must(t, err)
			return r
		},
		"ssh:// handshake": func() *Remote {
			silent := &sshServer{Addr: gittest.Silent(t), KnownHosts: silentSSH.KnownHosts, Key: silentSSH.Key}
			return silent.remote(t, "/r.git", opts)
		},
		"ssh:// service": func() *Remote { return silentSSH.remote(t, "/r.git", opts) },
		"http:// after headers": func() *Remote {
			r, err := Open(context.Background(), httpURL+"/r.git", opts)
			must(t, err)
			return r
		},
	}
	for name, open := range remotes {
		t.Run(name, func(t *testing.T) {
			r := open()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, err := r.Refs(ctx)
			if !errors.Is(err, ErrStalled) || ctx.Err() != nil {
				t.Fatalf("refs: %v, want a stall", err)
			}
			st, err := Init(t.TempDir())
			must(t, err)
			_, err = r.Fetch(ctx, st, FetchRequest{Refs: []string{"refs/heads/releases"}})
			if !errors.Is(err, ErrStalled) || ctx.Err() != nil || !strings.Contains(err.Error(), r.String()) {
				t.Fatalf("fetch: %v, want a stall naming %s", err, r)
			}
			if got := r.Counters().Stalls; got != 2 {
				t.Errorf("stalls counted: %d, want 2", got)
			}
		})
	}
}

// TestCanceledDial: the caller's context ends a session that waits on a
// silent server, long before the stall timeout.
func TestCanceledDial(t *testing.T) {
	for _, url := range []string{"git://" + gittest.Silent(t) + "/r.git"} {
		r, err := Open(context.Background(), url, Options{StallTimeout: time.Hour})
		must(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := r.Refs(ctx)
			errc <- err
		}()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: %v, want canceled", url, err)
		}
	}
}

// floodAdvertisement writes an advertisement of n MiB of refs to w.
func floodAdvertisement(w io.Writer, mib int) {
	bw := bufio.NewWriterSize(w, 64<<10)
	defer bw.Flush()
	fmt.Fprint(bw, pktLine(strings.Repeat("1", 40)+" refs/heads/releases\x00ofs-delta side-band-64k\n"))
	for i, n := 0, 0; n < mib<<20; i++ {
		l := pktLine(fmt.Sprintf("%040x refs/heads/status/node-%d\n", i, i))
		if _, err := bw.WriteString(l); err != nil {
			return
		}
		n += len(l)
	}
	fmt.Fprint(bw, "0000")
}

// floodDaemon is a git:// server that answers every request with mib MiB
// of refs: a v0 advertisement, or with v2 its capabilities and then, to
// the first command, a ref list of that size.
func floodDaemon(t *testing.T, mib int, v2 bool) string {
	return fakeDaemon(t, func(c net.Conn) {
		if !v2 {
			floodAdvertisement(c, mib)
			return
		}
		fmt.Fprint(c, pktLine("version 2\n")+pktLine("ls-refs\n")+pktLine("fetch\n")+"0000")
		p := newPktReader(c)
		for {
			kind, _, err := p.next()
			if err != nil || kind == pktFlush {
				break
			}
		}
		bw := bufio.NewWriterSize(c, 64<<10)
		defer bw.Flush()
		for i, n := 0, 0; n < mib<<20; i++ {
			l := pktLine(fmt.Sprintf("%040x refs/heads/status/node-%d\n", i, i))
			if _, err := bw.WriteString(l); err != nil {
				return
			}
			n += len(l)
		}
	})
}

// fakeDaemon is a git:// server on loopback that reads each connection's
// request packet and hands the connection to serve.
func fakeDaemon(t *testing.T, serve func(c net.Conn)) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, _, err := newPktReader(c).next(); err != nil {
					return
				}
				serve(c)
			}()
		}
	}()
	return "git://" + l.Addr().String() + "/r.git"
}

// TestStallMidPack: a server that sends part of a pack and then nothing
// ends the fetch within the stall timeout as a cut connection (a network
// error), and nothing is installed.
func TestStallMidPack(t *testing.T) {
	blob := []byte("hello pullship\n")
	pack := rawPack(rawEntry{3, int64(len(blob)), blob})
	head := strings.Repeat("1", 40)
	hang := make(chan struct{})
	defer close(hang)
	url := fakeDaemon(t, func(c net.Conn) {
		fmt.Fprint(c, pktLine(head+" refs/heads/releases\x00side-band-64k ofs-delta\n")+"0000")
		p := newPktReader(c)
		for {
			line, err := p.line()
			if err != nil || line == "done" {
				break
			}
		}
		fmt.Fprint(c, pktLine("NAK\n")+pktLine("\x01"+string(pack[:20])))
		<-hang
	})
	r, err := Open(context.Background(), url, Options{StallTimeout: 300 * time.Millisecond})
	must(t, err)
	st, err := Init(t.TempDir())
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = r.Fetch(ctx, st, FetchRequest{Refs: []string{"refs/heads/releases"}})
	if !errors.Is(err, ErrStalled) || !errors.Is(err, ErrConnectionCut) || errors.Is(err, ErrBadPack) || ctx.Err() != nil {
		t.Fatalf("fetch: %v, want a stall that cut the pack", err)
	}
	t.Logf("fetch: %v", err)
	if packs, _ := filepath.Glob(filepath.Join(st.dir, "objects", "pack", "*.pack")); len(packs) != 0 {
		t.Fatalf("packs installed: %v", packs)
	}
}

// TestSessionAdvertisementMemory: a git:// or ssh:// server advertising
// 100 MiB of refs (in v0, or as a v2 ref list) is read only up to a bound,
// and the host's heap stays under 64 MiB.
func TestSessionAdvertisementMemory(t *testing.T) {
	const env = "PULLSHIP_TEST_SESSION_ADVERTISEMENT"
	if which := os.Getenv(env); which != "" {
		childMemory(t, func() {
			var r *Remote
			if which == "git://" || which == "git:// v2" {
				var err error
				r, err = Open(context.Background(), floodDaemon(t, 100, which == "git:// v2"), Options{})
				must(t, err)
			} else {
				srv := newSSHServer(t, func(cmd string, env []string, ch ssh.Channel) { floodAdvertisement(ch, 100) })
				r = srv.remote(t, "/r.git", Options{})
			}
			st, err := Init(t.TempDir())
			must(t, err)
			_, err = r.Fetch(context.Background(), st, FetchRequest{Refs: []string{"refs/heads/releases"}})
			t.Logf("fetch: %v", err)
			if err == nil || !strings.Contains(err.Error(), "limit") {
				t.Errorf("fetch: %v, want a size limit", err)
			}
			_, err = r.Refs(context.Background())
			t.Logf("refs: %v", err)
			if err == nil || !strings.Contains(err.Error(), "limit") {
				t.Errorf("refs: %v, want a size limit", err)
			}
		})
		return
	}
	hostileMemory(t, "TestSessionAdvertisementMemory", env, map[string][]byte{"git://": nil, "git:// v2": nil, "ssh://": nil}, 64<<20)
}

// FuzzReply: a server's reply as pullship's client reads it (over a
// session; HTTP differs only in its first line) — the v0 ref advertisement
// or v2 capabilities, the v2 ref list, the ACK/NAK or v2 sections before a
// pack, the sideband stream — allocates within a budget and never panics.
func FuzzReply(f *testing.F) {
	adv := pktLine(strings.Repeat("1", 40)+" refs/heads/releases\x00ofs-delta side-band-64k agent=git/2\n") + pktLine(strings.Repeat("2", 40)+" refs/heads/status/a\n") + "0000"
	f.Add([]byte(adv + pktLine("NAK\n") + pktLine("\x01PACK") + pktLine("\x02progress\n") + "0000"))
	f.Add([]byte(adv + pktLine("ACK "+strings.Repeat("2", 40)+"\n") + pktLine("\x03fatal: no\n")))
	f.Add([]byte(pktLine("ERR access denied\n")))
	v2 := pktLine("version 2\n") + pktLine("agent=git/2.39\n") + pktLine("ls-refs=unborn\n") + pktLine("fetch=shallow\n") + pktLine("object-format=sha1\n") + "0000"
	f.Add([]byte(v2 + pktLine(strings.Repeat("1", 40)+" refs/heads/releases\n") + "0000" +
		pktLine("packfile\n") + pktLine("\x01PACK") + pktLine("\x02counting\n") + "0000"))
	f.Add([]byte(v2 + "0000" + pktLine("acknowledgments\n") + pktLine("ready\n") + "0001" + pktLine("packfile\n") + pktLine("\x03error\n")))
	f.Add([]byte("0000"))
	f.Fuzz(func(t *testing.T, data []byte) {
		defer replyAllocs(t, len(data))()
		p := newPktReader(bytes.NewReader(data))
		p.budget(maxAdvertisement, "ref advertisement", nil)
		h, err := readHello(p)
		switch {
		case err != nil:
		case h.v2 != nil:
			// ls-refs, then a fetch reply.
			if _, err := readRefListV2(p); err == nil {
				p.budget(1<<20, "upload-pack response", ErrPackTooLarge)
				if pack, err := packAfterSectionsV2(p); err == nil {
					io.Copy(io.Discard, pack)
				}
			}
		default:
			_ = h.refs()
			c := sessionConv{&session{pkt: p}}
			pack, err := packAfterAcksV0(c, p, h.caps().Supports("side-band-64k"), 1<<20)
			if err == nil {
				io.Copy(io.Discard, pack)
			}
		}
	})
}

// replyAllocs starts counting what reading a reply of n bytes allocates;
// the function it returns fails t if that passes 64 bytes a byte read
// plus 1 MiB.
func replyAllocs(t *testing.T, n int) func() {
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	return func() {
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > uint64(64*n)+1<<20 {
			t.Fatalf("reading %d bytes allocated %d", n, got)
		}
	}
}

// FuzzShallowReply: the reply to a request to a depth (protocol v0), its
// shallow update and then its ACKs and pack, as a hostile server may send
// it, is read within the same memory budget as any reply
// (TestShallowUpdateRefusals has the updates refused).
func FuzzShallowReply(f *testing.F) {
	named := plumbing.NewHash(strings.Repeat("3", 40))
	f.Add([]byte(pktLine("shallow "+strings.Repeat("1", 40)+"\n") + pktLine("unshallow "+named.String()+"\n") + "0000" +
		pktLine("NAK\n") + pktLine("\x01PACK") + "0000"))
	f.Add([]byte(pktLine("unshallow "+strings.Repeat("4", 40)+"\n") + "0000"))
	f.Add([]byte(pktLine("shallow zz\n") + "0000"))
	f.Add([]byte("0000" + pktLine("ACK "+named.String()+" common\n") + pktLine("ACK "+named.String()+" common\n") + pktLine("NAK\n")))
	f.Fuzz(func(t *testing.T, data []byte) {
		defer replyAllocs(t, len(data))()
		p := newPktReader(bytes.NewReader(data))
		p.budget(1<<20, "upload-pack response", ErrPackTooLarge)
		if readShallowUpdate(p, []plumbing.Hash{named}) == nil {
			c := sessionConv{&session{pkt: p}}
			if pack, err := packAfterAcksV0(c, p, true, 1<<20); err == nil {
				io.Copy(io.Discard, pack)
			}
		}
	})
}

// TestShallowUpdateRefusals: a shallow update is read to its flush; one
// that unshallows a commit the client did not name, names no commit, or
// holds another line is refused.
func TestShallowUpdateRefusals(t *testing.T) {
	named := plumbing.NewHash(strings.Repeat("3", 40))
	for name, tc := range map[string]struct {
		reply string
		ok    bool
	}{
		"shallow and unshallow":  {pktLine("shallow "+strings.Repeat("1", 40)+"\n") + pktLine("unshallow "+named.String()+"\n") + "0000", true},
		"empty":                  {"0000", true},
		"unshallow of another":   {pktLine("unshallow "+strings.Repeat("4", 40)+"\n") + "0000", false},
		"no commit":              {pktLine("shallow zz\n") + "0000", false},
		"another line":           {pktLine("ACK "+named.String()+"\n") + "0000", false},
		"cut before the flush":   {pktLine("shallow " + strings.Repeat("1", 40) + "\n"), false},
		"too many shallow lines": {strings.Repeat(pktLine("shallow "+strings.Repeat("1", 40)+"\n"), maxShallowLines+1) + "0000", false},
	} {
		err := readShallowUpdate(newPktReader(strings.NewReader(tc.reply)), []plumbing.Hash{named})
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok %v", name, err, tc.ok)
		}
	}
}
