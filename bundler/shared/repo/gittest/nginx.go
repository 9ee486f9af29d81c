package gittest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// HTTPSServer is nginx on loopback with TLS and basic auth in front of git
// http-backend (through fcgiwrap), serving the repositories under Base.
type HTTPSServer struct {
	// URL is https://127.0.0.1:port; append "/<repo>.git".
	URL  string
	Addr string
	// CAFile is the PEM certificate of the test CA that signed the
	// server's certificate (valid for IP 127.0.0.1 only, so
	// https://localhost:port is a wrong host name).
	CAFile string
	// Username and PasswordFile (mode 0600, the password and a newline)
	// are the one account basic auth lets in; Password is its content.
	Username, Password, PasswordFile string

	t     testing.TB
	dir   string
	cmds  []*exec.Cmd
	where string
}

// NginxHTTPS starts fcgiwrap and nginx for base (bare repositories made
// with [InitBare]) and stops them with the test. nginx runs in the
// foreground as one process (master_process off), as the current user.
func NginxHTTPS(t testing.TB, base string) *HTTPSServer {
	t.Helper()
	Require(t, "/usr/sbin/nginx", "/usr/sbin/fcgiwrap")
	dir := t.TempDir()
	s := &HTTPSServer{t: t, dir: dir, Username: "pullship", Password: "tok-" + randHex(t, 16)}
	s.PasswordFile = filepath.Join(dir, "token")
	if err := os.WriteFile(s.PasswordFile, []byte(s.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.CAFile = filepath.Join(dir, "ca.pem")
	ca, caKey := NewCA(t, s.CAFile, "pullship test CA")
	ServerCert(t, ca, caKey, filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"))
	if err := os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(s.Username+":{PLAIN}"+s.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"tmp", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "fcgiwrap.sock")
	fcgi := exec.Command("/usr/sbin/fcgiwrap", "-c", "4", "-s", "unix:"+sock)
	s.start(fcgi)
	waitSocket(t, sock)

	port := freePort(t)
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.URL = "https://" + s.Addr
	backend := filepath.Join(execPath(t), "git-http-backend")
	conf := `daemon off;
master_process off;
worker_processes 1;
pid ` + dir + `/nginx.pid;
error_log ` + dir + `/logs/error.log info;
events { worker_connections 64; }
http {
  access_log ` + dir + `/logs/access.log;
  client_body_temp_path ` + dir + `/tmp/body;
  fastcgi_temp_path ` + dir + `/tmp/fastcgi;
  proxy_temp_path ` + dir + `/tmp/proxy;
  uwsgi_temp_path ` + dir + `/tmp/uwsgi;
  scgi_temp_path ` + dir + `/tmp/scgi;
  client_max_body_size 0;
  server {
    listen 127.0.0.1:` + strconv.Itoa(port) + ` ssl;
    ssl_certificate ` + dir + `/server.pem;
    ssl_certificate_key ` + dir + `/server.key;
    location / {
      auth_basic "git";
      auth_basic_user_file ` + dir + `/htpasswd;
      fastcgi_pass unix:` + sock + `;
      fastcgi_read_timeout 10m;
      fastcgi_param SCRIPT_FILENAME ` + backend + `;
      fastcgi_param GIT_PROJECT_ROOT ` + base + `;
      fastcgi_param GIT_HTTP_EXPORT_ALL 1;
      fastcgi_param GIT_CONFIG_NOSYSTEM 1;
      fastcgi_param HOME ` + base + `;
      fastcgi_param REMOTE_USER $remote_user;
      fastcgi_param PATH_INFO $uri;
      fastcgi_param QUERY_STRING $args;
      fastcgi_param REQUEST_METHOD $request_method;
      fastcgi_param CONTENT_TYPE $content_type;
      fastcgi_param CONTENT_LENGTH $content_length if_not_empty;
      fastcgi_param HTTP_GIT_PROTOCOL $http_git_protocol;
      fastcgi_param SERVER_PROTOCOL $server_protocol;
    }
  }
}
`
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s.where = filepath.Join(dir, "logs", "error.log")
	s.start(exec.Command("/usr/sbin/nginx", "-p", dir, "-e", s.where, "-c", confFile))
	waitListen(t, s.Addr, s.Log)
	return s
}

// RepoURL is the https:// URL of the bare repository base/name.
func (s *HTTPSServer) RepoURL(name string) string { return s.URL + "/" + name }

// Log is nginx's error log so far.
func (s *HTTPSServer) Log() string {
	b, _ := os.ReadFile(s.where)
	return string(b)
}

func (s *HTTPSServer) start(cmd *exec.Cmd) {
	s.t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmds = append(s.cmds, cmd)
	s.t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		cmd.Wait()
	})
}

func waitSocket(t testing.TB, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fcgiwrap did not listen on %s: %v", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// NewCA makes a self-signed test CA, writes its certificate to certFile
// (PEM) and returns it with its key.
func NewCA(t testing.TB, certFile, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, certFile, "CERTIFICATE", der, 0o644)
	return cert, key
}

// ServerCert writes a server certificate for IP 127.0.0.1 signed by ca, and
// its key.
func ServerCert(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "git.pullship.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, certFile, "CERTIFICATE", der, 0o644)
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, keyFile, "EC PRIVATE KEY", kder, 0o600)
}

func writePEM(t testing.TB, path, typ string, der []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		t.Fatal(err)
	}
}

func randHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
