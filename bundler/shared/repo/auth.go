package repo

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"
)

// Credentials say how to authenticate to one remote and which server to
// trust, by files (never by secrets held in a URL or on a command line).
// Every path is used as given; callers resolve relative ones first.
type Credentials struct {
	// SSHKey is a private key file (OpenSSH or PEM, no passphrase) for
	// ssh:// remotes. Without one an SSH agent (SSH_AUTH_SOCK) is used
	// when SSHAgent is set.
	SSHKey string
	// SSHAgent allows the SSH agent at SSH_AUTH_SOCK when SSHKey is empty.
	SSHAgent bool
	// KnownHosts is the OpenSSH known_hosts file the server's host key
	// must be in ("" is ~/.ssh/known_hosts). There is no trust on first use.
	KnownHosts string
	// Username is the HTTP basic-auth user (and the SSH user when the URL
	// names none).
	Username string
	// PasswordFile holds the HTTP password or token on its first line.
	PasswordFile string
	// CAFile holds PEM CA certificates trusted for https:// remotes,
	// besides the system's.
	CAFile string
}

// IsZero reports whether c asks for nothing beyond the defaults.
func (c Credentials) IsZero() bool { return c == Credentials{} }

// FileModeError reports a secret file that group or others may read.
type FileModeError struct {
	What string // "ssh key", "password file"
	Path string
	Mode os.FileMode
}

func (e *FileModeError) Error() string {
	return fmt.Sprintf("%s %s has mode %04o: readable by group or others, refused (chmod 600 %s)", e.What, e.Path, e.Mode.Perm(), e.Path)
}

// HostKeyError reports an SSH server whose host key is not pinned in
// known_hosts: unknown (Known empty) or changed (Known lists the pinned
// keys). Fingerprints are OpenSSH's SHA256 form.
type HostKeyError struct {
	Host        string // host:port as looked up in known_hosts
	KnownHosts  string
	KeyType     string
	Fingerprint string
	Known       []string // "type SHA256:..." of the keys pinned for Host
}

func (e *HostKeyError) Error() string {
	if len(e.Known) == 0 {
		return fmt.Sprintf("host key of %s refused: %s %s is not in %s (no trust on first use: add the server's key after checking its fingerprint)",
			e.Host, e.KeyType, e.Fingerprint, e.KnownHosts)
	}
	return fmt.Sprintf("host key of %s refused: it presented %s %s, but %s pins %s (the key changed, or someone is in between)",
		e.Host, e.KeyType, e.Fingerprint, e.KnownHosts, strings.Join(e.Known, ", "))
}

// CertificateError reports an HTTPS server whose certificate did not verify
// against the trusted CAs or for the host name.
type CertificateError struct {
	Host    string
	Subject string
	Issuer  string
	Err     error // the x509 reason
}

func (e *CertificateError) Error() string {
	return fmt.Sprintf("TLS certificate of %s refused: subject %q, issuer %q: %v", e.Host, e.Subject, e.Issuer, e.Err)
}

func (e *CertificateError) Unwrap() error { return e.Err }

// maxSecretFile bounds the key, password and CA files read.
const maxSecretFile = 1 << 20

// CheckSecretFile refuses a key or password file that is missing, not a
// regular file, or readable by group or others.
func CheckSecretFile(what, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s %s: not a regular file", what, path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return &FileModeError{What: what, Path: path, Mode: fi.Mode()}
	}
	return nil
}

func readSecretFile(what, path string) ([]byte, error) {
	if err := CheckSecretFile(what, path); err != nil {
		return nil, err
	}
	return readBounded(what, path)
}

func readBounded(what, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if len(data) > maxSecretFile {
		return nil, fmt.Errorf("%s %s: larger than %d bytes", what, path, maxSecretFile)
	}
	return data, nil
}

// Check refuses, without contacting anything, secret files that are
// missing or readable by group or others: what a program checks at start.
func (c Credentials) Check() error {
	if c.SSHKey != "" {
		if err := CheckSecretFile("ssh key", c.SSHKey); err != nil {
			return err
		}
	}
	if c.PasswordFile != "" {
		if err := CheckSecretFile("password file", c.PasswordFile); err != nil {
			return err
		}
	}
	return nil
}

// Options turns the credentials into the Options of the remote at rawURL:
// an auth method with pinned host keys for ssh://, basic auth and a client
// trusting CAFile for http(s)://. Files are read now; secrets stay out of
// every error.
func (c Credentials) Options(rawURL string) (Options, error) {
	var o Options
	if !strings.Contains(rawURL, "://") {
		return o, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return o, fmt.Errorf("remote %s: %w", redact(rawURL), URLParseError(err))
	}
	switch u.Scheme {
	case "ssh":
		auth, err := c.sshAuth(u)
		if err != nil {
			return o, fmt.Errorf("remote %s: %w", redact(rawURL), err)
		}
		o.Auth = auth
	case "http", "https":
		if c.PasswordFile != "" {
			data, err := readSecretFile("password file", c.PasswordFile)
			if err != nil {
				return o, fmt.Errorf("remote %s: %w", redact(rawURL), err)
			}
			pw, _, _ := bytes.Cut(data, []byte("\n"))
			pw = bytes.TrimSuffix(pw, []byte("\r"))
			if len(pw) == 0 {
				return o, fmt.Errorf("remote %s: password file %s: first line is empty", redact(rawURL), c.PasswordFile)
			}
			user := c.Username
			if user == "" {
				user = u.User.Username()
			}
			if user == "" {
				// GitHub, GitLab and Gitea take a token with any user name.
				user = "pullship"
			}
			o.Auth = &githttp.BasicAuth{Username: user, Password: string(pw)}
		}
		if c.CAFile != "" {
			pool, err := caPool(c.CAFile)
			if err != nil {
				return o, fmt.Errorf("remote %s: %w", redact(rawURL), err)
			}
			o.HTTPClient = newHTTPClient(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
		}
	}
	return o, nil
}

// caPool is the system's CAs plus those of file.
func caPool(file string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	data, err := readBounded("ca file", file)
	if err != nil {
		return nil, err
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("ca file %s: no PEM certificate in it", file)
	}
	return pool, nil
}

// DefaultKnownHosts is ~/.ssh/known_hosts.
func DefaultKnownHosts() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return ".ssh/known_hosts"
	}
	return filepath.Join(home, ".ssh", "known_hosts")
}

// sshTimeout bounds the TCP connect to an SSH server.
const sshTimeout = 30 * time.Second

func (c Credentials) sshAuth(u *url.URL) (gitssh.AuthMethod, error) {
	name := u.User.Username()
	if name == "" {
		name = c.Username
	}
	if name == "" {
		cur, err := user.Current()
		if err != nil {
			return nil, fmt.Errorf("no user in the URL: %w", err)
		}
		name = cur.Username
	}
	khFile := c.KnownHosts
	if khFile == "" {
		khFile = DefaultKnownHosts()
	}
	if _, err := os.Stat(khFile); err != nil {
		return nil, fmt.Errorf("known_hosts: %w (pin the server's host key there: no trust on first use)", err)
	}
	db, err := knownhosts.NewDB(khFile)
	if err != nil {
		return nil, fmt.Errorf("known_hosts %s: %w", khFile, err)
	}
	port := 22
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("port %q: %w", p, err)
		}
	}
	hostPort := net.JoinHostPort(u.Hostname(), strconv.Itoa(port))
	helper := gitssh.HostKeyCallbackHelper{
		HostKeyCallback:   pinnedHostKey(db, khFile),
		HostKeyAlgorithms: db.HostKeyAlgorithms(hostPort),
	}
	var auth gitssh.AuthMethod
	switch {
	case c.SSHKey != "":
		pem, err := readSecretFile("ssh key", c.SSHKey)
		if err != nil {
			return nil, err
		}
		signer, err := ssh.ParsePrivateKey(pem)
		if err != nil {
			var pp *ssh.PassphraseMissingError
			if errors.As(err, &pp) {
				return nil, fmt.Errorf("ssh key %s has a passphrase: give pullship a key without one (readable only by its user)", c.SSHKey)
			}
			// The parser's words never quote the key.
			return nil, fmt.Errorf("ssh key %s: %w", c.SSHKey, err)
		}
		auth = &gitssh.PublicKeys{User: name, Signer: signer, HostKeyCallbackHelper: helper}
	case c.SSHAgent && os.Getenv("SSH_AUTH_SOCK") != "":
		a, err := gitssh.NewSSHAgentAuth(name)
		if err != nil {
			return nil, err
		}
		a.HostKeyCallbackHelper = helper
		auth = a
	case c.SSHAgent:
		return nil, errors.New("no ssh key given and no SSH agent (SSH_AUTH_SOCK is unset)")
	default:
		return nil, errors.New("no ssh key given (ssh_key)")
	}
	return timeoutAuth{auth}, nil
}

// pinnedHostKey accepts only keys known_hosts pins for the host, and says
// what the server presented when it refuses.
func pinnedHostKey(db *knownhosts.HostKeyDB, file string) ssh.HostKeyCallback {
	cb := db.HostKeyCallback()
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := cb(hostname, remote, key)
		if err == nil {
			return nil
		}
		var ke *xknownhosts.KeyError
		if !errors.As(err, &ke) {
			return fmt.Errorf("known_hosts %s: %w", file, err)
		}
		he := &HostKeyError{Host: hostname, KnownHosts: file, KeyType: key.Type(), Fingerprint: ssh.FingerprintSHA256(key)}
		for _, k := range ke.Want {
			he.Known = append(he.Known, k.Key.Type()+" "+ssh.FingerprintSHA256(k.Key))
		}
		return he
	}
}

// timeoutAuth bounds the connect: go-git's ssh transport takes the timeout
// only from the auth method's client config (a client config of its own
// replaces every field, auth included).
type timeoutAuth struct{ gitssh.AuthMethod }

func (a timeoutAuth) ClientConfig() (*ssh.ClientConfig, error) {
	c, err := a.AuthMethod.ClientConfig()
	if err == nil {
		c.Timeout = sshTimeout
	}
	return c, err
}

// newHTTPClient is a keep-alive client like [DefaultHTTPClient] with its
// own TLS configuration; certificate failures name what was presented.
func newHTTPClient(tc *tls.Config) *http.Client {
	t := baseTransport()
	t.TLSClientConfig = tc
	return &http.Client{Transport: certErrors{t}}
}

func baseTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       5 * time.Minute,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
	}
}

// certErrors turns a failed certificate verification into a
// *CertificateError naming the presented certificate.
type certErrors struct{ http.RoundTripper }

func (c certErrors) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := c.RoundTripper.RoundTrip(req)
	var cv *tls.CertificateVerificationError
	if err != nil && errors.As(err, &cv) && len(cv.UnverifiedCertificates) > 0 {
		leaf := cv.UnverifiedCertificates[0]
		return nil, &CertificateError{Host: req.URL.Host, Subject: leaf.Subject.String(), Issuer: leaf.Issuer.String(), Err: cv.Err}
	}
	return res, err
}

// CloseIdleConnections closes the idle connections of the transport under c.
func (c certErrors) CloseIdleConnections() { closeIdle(c.RoundTripper) }
