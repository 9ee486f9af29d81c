package gittest

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Require fails the test when a program a test server needs is missing
// under CI=true (where .ci/run installs it) and skips it elsewhere.
func Require(t testing.TB, programs ...string) {
	t.Helper()
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (CI=true: install it, as .ci/run does): %v", p, err)
			}
			t.Skipf("%s is missing: %v", p, err)
		}
	}
}

// SSHServer is an OpenSSH sshd on loopback serving the repositories under
// Base through git-shell to one deploy key.
//
// sshd runs as the current user (root in CI) and logs in only that user:
// an unprivileged sshd can serve nobody else, and it spares the tests a
// system account. The deploy key's authorized_keys line forces git-shell
// (`restrict,command="git-shell -c \"$SSH_ORIGINAL_COMMAND\""`), so the key
// runs git-upload-pack and git-receive-pack and nothing else, as a
// git-shell account would.
type SSHServer struct {
	// URL is the base of the repositories' URLs: append the bare
	// repository's path under Base ("/r.git").
	URL  string
	Base string
	// User is the login user (the current user).
	User string
	// Addr is 127.0.0.1:port.
	Addr string
	// ClientKey is the deploy key (private, mode 0600, no passphrase),
	// authorized on the server; ClientPub its public key line.
	ClientKey, ClientPub string
	// KnownHosts pins the server's host key (OpenSSH format, mode 0644);
	// HostPub is that key's public line.
	KnownHosts, HostPub string

	t   testing.TB
	dir string
	cmd *exec.Cmd
	log string
}

// SSHD starts sshd for base (bare repositories made with [InitBare]) and
// stops it with the test. It accepts the GIT_PROTOCOL environment variable
// ("AcceptEnv GIT_PROTOCOL"), so clients can ask for protocol v2.
func SSHD(t testing.TB, base string) *SSHServer {
	t.Helper()
	return sshd(t, base, true)
}

// SSHDv0 is [SSHD] without "AcceptEnv GIT_PROTOCOL", as OpenSSH ships: the
// git programs it runs speak protocol v0 only.
func SSHDv0(t testing.TB, base string) *SSHServer {
	t.Helper()
	return sshd(t, base, false)
}

func sshd(t testing.TB, base string, acceptEnv bool) *SSHServer {
	t.Helper()
	Require(t, "/usr/sbin/sshd", "ssh-keygen", "git-shell")
	cur, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &SSHServer{Base: base, User: cur.Username, t: t, dir: dir, log: filepath.Join(dir, "sshd.log")}
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	s.HostPub = KeyGen(t, hostKey)
	s.ClientKey = filepath.Join(dir, "deploy_key")
	s.ClientPub = KeyGen(t, s.ClientKey)
	authorized := `restrict,command="git-shell -c \"$SSH_ORIGINAL_COMMAND\"" ` + s.ClientPub + "\n"
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), []byte(authorized), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.URL = "ssh://" + s.User + "@" + s.Addr + base
	s.KnownHosts = filepath.Join(dir, "known_hosts")
	s.WriteKnownHosts(s.KnownHosts, s.HostPub)
	conf := strings.Join([]string{
		"Port " + strconv.Itoa(port),
		"ListenAddress 127.0.0.1",
		"HostKey " + hostKey,
		"PidFile " + filepath.Join(dir, "sshd.pid"),
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
		"AllowUsers " + s.User,
		// The temporary directory is not the user's home: its modes are
		// the test's, not sshd's business.
		"StrictModes no",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"UsePAM no",
		"LogLevel VERBOSE",
	}, "\n") + "\n"
	if acceptEnv {
		conf += "AcceptEnv GIT_PROTOCOL\n"
	}
	confFile := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// sshd started by root insists on its privilege separation
		// directory, which the service unit creates on a real host.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.cmd = exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", confFile, "-E", s.log)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	waitListen(t, s.Addr, s.Log)
	return s
}

// RepoURL is the ssh:// URL of the bare repository base/name.
func (s *SSHServer) RepoURL(name string) string { return s.URL + "/" + name }

// WriteKnownHosts writes a known_hosts file pinning pub (a public key line)
// for this server's address.
func (s *SSHServer) WriteKnownHosts(path, pub string) {
	s.t.Helper()
	line := "[127.0.0.1]:" + strings.TrimPrefix(s.Addr, "127.0.0.1:") + " " + pub + "\n"
	if err := os.WriteFile(path, []byte(line), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// Log is what sshd logged so far.
func (s *SSHServer) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

func (s *SSHServer) stop() {
	if s.cmd == nil {
		return
	}
	// sshd forks a process per connection: end the whole group.
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	s.cmd.Wait()
	if s.t.Failed() {
		s.t.Logf("sshd log:\n%s", s.Log())
	}
	s.cmd = nil
}

// KeyGen writes a new ed25519 key pair without passphrase at path (and
// path.pub) with ssh-keygen and returns the public key line.
func KeyGen(t testing.TB, path string) string {
	t.Helper()
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pullship-test", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return string(bytes.TrimSpace(pub))
}

// Fingerprint is ssh-keygen's SHA256 fingerprint of the public key file.
func Fingerprint(t testing.TB, pubFile string) string {
	t.Helper()
	out, err := exec.Command("ssh-keygen", "-l", "-E", "sha256", "-f", pubFile).Output()
	if err != nil {
		t.Fatalf("ssh-keygen -l %s: %v", pubFile, err)
	}
	f := strings.Fields(string(out))
	if len(f) < 2 {
		t.Fatalf("ssh-keygen -l %s: %q", pubFile, out)
	}
	return f[1]
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitListen waits until addr accepts connections; log says why not.
func waitListen(t testing.TB, addr string, log func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v\n%s", addr, err, log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
