package repo

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/pullship/pullship/bundler/shared/repo/gittest"
)

// TestSSHRemote runs the whole remote contract against OpenSSH's sshd with
// a git-shell deploy key and a pinned host key.
func TestSSHRemote(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	bare := newBare(t, base, "r.git")
	srv := gittest.SSHD(t, base)
	url := srv.RepoURL("r.git")
	opts, err := Credentials{SSHKey: srv.ClientKey, KnownHosts: srv.KnownHosts}.Options(url)
	must(t, err)
	testRemote(t, url, bare, opts)
}

// TestSSHRefusals: an unknown or changed host key, a key the server does not
// know, no key and a key others may read each fail with an error that says
// so, and nothing is trusted on first use.
func TestSSHRefusals(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	newBare(t, base, "r.git")
	srv := gittest.SSHD(t, base)
	url := srv.RepoURL("r.git")
	dir := t.TempDir()
	hostFP := gittest.Fingerprint(t, srv.KnownHosts)
	refs := func(c Credentials) error {
		t.Helper()
		opts, err := c.Options(url)
		if err != nil {
			return err
		}
		r, err := Open(context.Background(), url, opts)
		must(t, err)
		_, err = r.Refs(context.Background())
		if err == nil {
			t.Fatalf("refs with %+v succeeded", c)
		}
		if !strings.Contains(err.Error(), redact(url)) {
			t.Errorf("error does not name the remote %s: %v", url, err)
		}
		return err
	}

	t.Run("changed host key", func(t *testing.T) {
		other := filepath.Join(dir, "other")
		kh := filepath.Join(dir, "known_hosts.changed")
		srv.WriteKnownHosts(kh, gittest.KeyGen(t, other))
		err := refs(Credentials{SSHKey: srv.ClientKey, KnownHosts: kh})
		var he *HostKeyError
		if !errors.As(err, &he) || len(he.Known) != 1 || he.Fingerprint != hostFP || he.KeyType != "ssh-ed25519" {
			t.Fatalf("got %v, want a HostKeyError presenting ssh-ed25519 %s", err, hostFP)
		}
		if !strings.Contains(err.Error(), hostFP) || !strings.Contains(err.Error(), gittest.Fingerprint(t, other+".pub")) {
			t.Fatalf("error names neither the presented nor the pinned key: %v", err)
		}
	})
	t.Run("unknown host", func(t *testing.T) {
		kh := filepath.Join(dir, "known_hosts.empty")
		must(t, os.WriteFile(kh, nil, 0o644))
		err := refs(Credentials{SSHKey: srv.ClientKey, KnownHosts: kh})
		var he *HostKeyError
		if !errors.As(err, &he) || len(he.Known) != 0 || !strings.Contains(err.Error(), "ssh-ed25519 "+hostFP) {
			t.Fatalf("got %v, want an unknown-host HostKeyError naming ssh-ed25519 %s", err, hostFP)
		}
		if b, _ := os.ReadFile(kh); len(b) != 0 {
			t.Fatalf("known_hosts was written: %q", b)
		}
	})
	t.Run("no known_hosts", func(t *testing.T) {
		_, err := Credentials{SSHKey: srv.ClientKey, KnownHosts: filepath.Join(dir, "missing")}.Options(url)
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("got %v, want a missing known_hosts refused", err)
		}
	})
	t.Run("wrong client key", func(t *testing.T) {
		wrong := filepath.Join(dir, "wrong_key")
		gittest.KeyGen(t, wrong)
		err := refs(Credentials{SSHKey: wrong, KnownHosts: srv.KnownHosts})
		if !strings.Contains(err.Error(), "unable to authenticate") {
			t.Fatalf("got %v, want an authentication failure", err)
		}
	})
	t.Run("no key", func(t *testing.T) {
		t.Setenv("SSH_AUTH_SOCK", "")
		for _, c := range []Credentials{{KnownHosts: srv.KnownHosts}, {KnownHosts: srv.KnownHosts, SSHAgent: true}} {
			if _, err := c.Options(url); err == nil || !strings.Contains(err.Error(), "no ssh key") || !strings.Contains(err.Error(), redact(url)) {
				t.Fatalf("got %v, want no ssh key refused for %s", err, url)
			}
		}
	})
	t.Run("key readable by others", func(t *testing.T) {
		loose := filepath.Join(dir, "loose_key")
		gittest.KeyGen(t, loose)
		must(t, os.Chmod(loose, 0o640))
		_, err := Credentials{SSHKey: loose, KnownHosts: srv.KnownHosts}.Options(url)
		var fm *FileModeError
		if !errors.As(err, &fm) || fm.Path != loose || !strings.Contains(err.Error(), "0640") {
			t.Fatalf("got %v, want a FileModeError naming %s and 0640", err, loose)
		}
	})
}

// TestHTTPSRemote runs the whole remote contract against nginx with TLS
// from a test CA and basic auth, in front of git http-backend.
func TestHTTPSRemote(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	bare := newBare(t, base, "r.git")
	srv := gittest.NginxHTTPS(t, base)
	url := srv.RepoURL("r.git")
	opts, err := Credentials{Username: srv.Username, PasswordFile: srv.PasswordFile, CAFile: srv.CAFile}.Options(url)
	must(t, err)
	testRemote(t, url, bare, opts)
}

// TestHTTPSRefusals: a wrong password, a certificate from a CA not trusted
// and a certificate for another host name each fail cleanly, and no error
// carries the password.
func TestHTTPSRefusals(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	newBare(t, base, "r.git")
	srv := gittest.NginxHTTPS(t, base)
	dir := t.TempDir()
	good := Credentials{Username: srv.Username, PasswordFile: srv.PasswordFile, CAFile: srv.CAFile}
	refs := func(url string, c Credentials) error {
		t.Helper()
		opts, err := c.Options(url)
		must(t, err)
		r, err := Open(context.Background(), url, opts)
		must(t, err)
		_, err = r.Refs(context.Background())
		if err == nil {
			t.Fatalf("refs of %s with %+v succeeded", url, c)
		}
		if !strings.Contains(err.Error(), redact(url)) {
			t.Errorf("error does not name the remote %s: %v", url, err)
		}
		if strings.Contains(err.Error(), srv.Password) {
			t.Fatalf("error carries the password: %v", err)
		}
		return err
	}
	t.Run("wrong password", func(t *testing.T) {
		pw := filepath.Join(dir, "wrong")
		must(t, os.WriteFile(pw, []byte("not-the-token\n"), 0o600))
		c := good
		c.PasswordFile = pw
		err := refs(srv.RepoURL("r.git"), c)
		if !strings.Contains(err.Error(), "401") {
			t.Fatalf("got %v, want 401", err)
		}
		// And for the fetch and push paths, which go through go-git.
		opts, _ := c.Options(srv.RepoURL("r.git"))
		r, _ := Open(context.Background(), srv.RepoURL("r.git"), opts)
		local, err := Init(t.TempDir())
		must(t, err)
		if _, err := r.Fetch(context.Background(), local, FetchRequest{Refs: []string{"refs/heads/releases"}}); !errors.Is(err, transport.ErrAuthenticationRequired) {
			t.Fatalf("fetch with a wrong password: %v", err)
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		c := good
		c.CAFile = ""
		err := refs(srv.RepoURL("r.git"), c)
		var ce *CertificateError
		if !errors.As(err, &ce) || ce.Subject != "CN=git.pullship.test" || ce.Issuer != "CN=pullship test CA" {
			t.Fatalf("got %v, want a CertificateError naming the presented subject and issuer", err)
		}
		otherCA := filepath.Join(dir, "other-ca.pem")
		gittest.NewCA(t, otherCA, "another CA")
		c.CAFile = otherCA
		if err := refs(srv.RepoURL("r.git"), c); !errors.As(err, &ce) {
			t.Fatalf("with another CA: got %v, want a CertificateError", err)
		}
	})
	t.Run("wrong host name", func(t *testing.T) {
		url := strings.Replace(srv.RepoURL("r.git"), "127.0.0.1", "localhost", 1)
		err := refs(url, good)
		var ce *CertificateError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "localhost") {
			t.Fatalf("got %v, want a CertificateError for host localhost", err)
		}
	})
	t.Run("password file readable by others", func(t *testing.T) {
		pw := filepath.Join(dir, "loose")
		must(t, os.WriteFile(pw, []byte(srv.Password+"\n"), 0o644))
		c := good
		c.PasswordFile = pw
		_, err := c.Options(srv.RepoURL("r.git"))
		var fm *FileModeError
		if !errors.As(err, &fm) || fm.Path != pw || !strings.Contains(err.Error(), "0644") {
			t.Fatalf("got %v, want a FileModeError naming %s and 0644", err, pw)
		}
	})
}
